"""Profile a kernel's hot path with py-spy (not a dependency: `pip install py-spy` first).

    python bench/profile.py [--kernel ipymini] [--workload rtt|lines] [--seconds 10] [--rate 1000]
                            [--out DIR] [--top 25] [--ipython-arg=--Class.trait=value ...]

Starts the kernel exactly as bench/run.py does, attaches `py-spy record --threads --nonblocking` to it,
drives the workload (rtt: `pass` round trips one after another; lines: repeated 10 MB print floods of
100-byte lines) and prints, per kernel thread, the functions with the most samples (self and inclusive),
converted to microseconds per request. The raw collapsed stacks are kept in DIR (default: a temp dir)
for flame graphs (e.g. `py-spy`'s own --format speedscope, or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from client import execute_content  # noqa: E402
from kernels import builtin_kernels  # noqa: E402
from run import Run, stop  # noqa: E402


def drive(c, workload: str, seconds: float) -> int:
    """Run the workload for about `seconds`; returns the number of requests (rtt) or lines (lines)."""
    deadline = time.monotonic() + seconds
    n = 0
    if workload == "rtt":
        while time.monotonic() < deadline:
            for _ in range(100):
                c.request("execute_request", execute_content("pass"))
            n += 100
    else:
        code = 'for _i in range(100_000): print(f"{_i:099d}")'
        while time.monotonic() < deadline:
            c.request("execute_request", execute_content(code), timeout=300,
                      on_iopub=lambda *a: None)
            n += 100_000
    return n


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:]*)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "lib/python3", "ipymini/"):
        if marker in file:
            file = file[file.index(marker) + (0 if marker == "ipymini/" else len(marker)):]
            break
    return f"{m['func']} ({file})"


def report(raw: Path, rate: int, count: int, workload: str, top: int) -> None:
    per_thread = collections.Counter()
    self_t: dict = collections.defaultdict(collections.Counter)
    incl_t: dict = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        n = int(n)
        frames = stack.split(";")
        thread = frames[0]
        frames = [short(f) for f in frames[1:]]
        per_thread[thread] += n
        if frames:
            self_t[thread][frames[-1]] += n
        for f in set(frames):
            incl_t[thread][f] += n
    unit = "request" if workload == "rtt" else "100-byte line"
    us = 1e6 / rate / count  # µs per request for one sample
    print(f"\n{count} {unit}s; sample period {1e6 / rate:.0f} µs; figures are µs per {unit} "
          "(on-CPU only: idle waits are not sampled)")
    for thread, total in per_thread.most_common():
        print(f"\n== {thread}: {total * us:.1f} µs per {unit}")
        print("   self:")
        for f, n in self_t[thread].most_common(top):
            print(f"   {n * us:8.2f}  {f}")
        print("   inclusive:")
        for f, n in incl_t[thread].most_common(top):
            print(f"   {n * us:8.2f}  {f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", default="ipymini", choices=sorted(builtin_kernels()))
    p.add_argument("--workload", default="rtt", choices=("rtt", "lines"))
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--out", help="directory for the raw profile (default: a temp dir)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--ipython-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for an IPython kernel (as in run.py)")
    args = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        p.error("py-spy is not installed (pip install py-spy)")
    out = Path(args.out or tempfile.mkdtemp(prefix="ipymini-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="ipymini-bench-")
    root = Path(tmp.name)
    kernel = builtin_kernels()[args.kernel]
    km, c, _ = Run(root, [kernel], tuple(args.ipython_arg)).start(kernel)
    try:
        drive(c, args.workload, 1.0)  # warm up
        raw = out / f"{args.kernel}-{args.workload}.txt"
        spy = subprocess.Popen([pyspy, "record", "--pid", str(km.provisioner.pid), "--rate", str(args.rate),
                                "--threads", "--nonblocking", "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let py-spy attach
        t0 = time.perf_counter()
        count = drive(c, args.workload, args.seconds)
        dt = time.perf_counter() - t0
        spy.send_signal(signal.SIGINT)
        err = spy.communicate(timeout=60)[1]
        if not raw.exists():
            print(err.decode(errors="replace"), file=sys.stderr)
            return 1
        unit = "request" if args.workload == "rtt" else "line"
        print(f"{args.kernel} {args.workload}: {count} {unit}s in {dt:.2f} s = {dt / count * 1e6:.1f} µs "
              f"wall per {unit} (with py-spy attached); raw stacks: {raw}")
        report(raw, args.rate, count, args.workload, args.top)
    finally:
        stop(km, c)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
