"""Stress the memory guard: cells that run out of memory, in fresh kernels in a 1 GiB memory cgroup,
optionally with both cores kept busy, counting how each cell ended (MemoryError, ok, another error, no
reply, OOM kill) and whether the cell after it then ran `ok`; an exception in the guard's own thread
(from the kernel's log) is printed too. A kernel that does not reply within
--wait seconds has its threads' stacks printed (IPYMINI_STACKS_SIGNAL) and its log kept, so a wedge
shows where every thread waits.

    python bench/guard_stress.py ROUNDS [PATTERN ...] [--load] [--sequence] [--wait SECONDS]

PATTERN names come from pytests/test_memory_guard.py's PATTERNS plus EXTRA below (default: all).
Each round runs every pattern in its own fresh kernel, or with --sequence all of them in one kernel
in order (what the test module does: later cells meet a heap earlier ones fragmented). Needs root (a
memory cgroup); what it measured is in DEVLOG.md (session 10).
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "pytests"))

from harness import cgroup  # noqa: E402
from test_memory_guard import CGROUP_LIMIT, GUARD_FAILED, PATTERNS, RAW_THREADS, SETUP  # noqa: E402

EXTRA = {
    # a C loop in each of four threads
    "c_in_threads": "import threading\n"
                    "def run():\n"
                    "    threads = [threading.Thread(target=lambda: list(map(str, range(5 * 10**7))))\n"
                    "               for _ in range(4)]\n"
                    "    for t in threads:\n"
                    "        t.start()\n"
                    "    for t in threads:\n"
                    "        t.join()\n"
                    "run()",
    # threads building many small objects (pymalloc, not big bytearrays)
    "raw_threads_objects": RAW_THREADS.format(threads=4, size="10**6").replace(
        "parts.append(bytearray(10**6))", "parts.append([str(i) for i in range(10**5)])"),
    # a 200 MB result shown (kept by Out and _), then the comprehension
    "shown_result": "get_ipython().ast_node_interactivity = 'all'\nnp.ones(25 * 10**6)\n"
                    + PATTERNS["list_comprehension"],
}
ALL = {**PATTERNS, **EXTRA}


def _run_cell(k, code: str, wait: float) -> str:
    """How the cell ended: its error's name, `ok`, or `no reply`."""
    try:
        reply, _ = k.execute(code, timeout=wait)
    except Exception:
        return "no reply"
    content = reply["content"]
    ename = content.get("ename", content["status"])
    if ename not in ("MemoryError", "ok"):  # an unexpected error: show where it came from
        plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(content.get("traceback", [])[-4:]))
        print(plain, file=sys.stderr)
    return ename


def _dump(pid: int, log: str) -> None:
    """The kernel's threads' stacks into its log, then the log's tail here (and the log kept)."""
    try:
        os.kill(pid, signal.SIGUSR2)
    except OSError:
        return
    time.sleep(3)
    kept = os.path.join(tempfile.gettempdir(), f"guard-stress-{pid}.log")
    shutil.copy(log, kept)
    with open(log) as f:
        print(f.read()[-12000:])
    print(f"(log kept in {kept})")


def _report_guard_failures(log: str) -> None:
    """The guard's own failures (an exception in its thread, logged by the kernel; a fatal error) from a
    kernel's log: a cell can end as expected while the guard's thread failed beside it."""
    try:
        with open(log) as f:
            text = f.read()
    except OSError:
        return
    at = min((i for i in (text.find(GUARD_FAILED), text.find("Fatal Python error")) if i >= 0),
             default=-1)
    if at >= 0:
        print("the guard failed in this kernel:\n" + text[at:at + 3000], flush=True)
        shutil.copy(log, os.path.join(tempfile.gettempdir(), f"guard-stress-failed-{time.time():.0f}.log"))


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    wait = float(argv[argv.index("--wait") + 1]) if "--wait" in argv else 60.0
    if "--wait" in argv:
        args.remove(argv[argv.index("--wait") + 1])
    rounds = int(args[0]) if args else 3
    names = args[1:] or list(ALL)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        print("unknown patterns:", ", ".join(unknown), "- known:", ", ".join(ALL))
        return 2
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)] \
        if "--load" in argv else []
    groups = [names] if "--sequence" in argv else [[n] for n in names]
    outcomes: dict[str, collections.Counter] = {n: collections.Counter() for n in names}
    try:
        for r in range(rounds):
            for group in groups:
                cg, why = cgroup.make(CGROUP_LIMIT, "stress")
                if cg is None:
                    print("no memory cgroup:", why)
                    return 2
                log = os.path.join(tempfile.gettempdir(), f"guard-stress-{os.getpid()}.log")
                k = cg.kernel(env={"IPYMINI_STACKS_SIGNAL": "SIGUSR2"}, stderr=open(log, "w"))
                pid = k.km.provisioner.process.pid
                try:
                    k.run_ok(SETUP, timeout=60)
                    for name in group:
                        kills = cg.oom_kills()
                        outcome = _run_cell(k, ALL[name], wait)
                        if outcome == "no reply" and cg.oom_kills() > kills:
                            outcome = "OOM kill"
                        if outcome not in ("no reply", "OOM kill"):  # the next cell is untouched
                            after = _run_cell(k, "keep", wait)
                            if after != "ok":
                                outcome += f", then the next cell: {after}"
                        outcomes[name][outcome] += 1
                        print(r, name, outcome, flush=True)
                        if outcome == "no reply":
                            _dump(pid, log)
                        if outcome in ("no reply", "OOM kill"):
                            break
                finally:
                    try:
                        k.stop()
                    except Exception:
                        pass
                    cg.remove()
                    _report_guard_failures(log)
    finally:
        for h in hogs:
            h.kill()
    for name, counts in outcomes.items():
        print(f"{name}: " + ", ".join(f"{n} {what}" for what, n in counts.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
