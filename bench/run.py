"""Benchmark: ipymini against ipykernel and a do-nothing protocol floor, measured interleaved in one run.

    python bench/run.py [--quick] [--rounds N] [--only m1,m2] [--kernels ipymini,ipykernel,floor]
                        [--json PATH] [--ipython-arg=--Class.trait=value ...]

Each round starts every kernel in turn (the order rotates between rounds), runs every metric on it and
shuts it down; the figure reported is the median over rounds (round trips: median within a round, then
over rounds). The client is deliberately lean: raw zmq sockets and jupyter_client's Session for signing,
messages pre-serialized where a burst is sent, and incoming messages parsed only as far as needed, so
the kernel, not the client, is what is measured.

Kernels are launched by jupyter_client's KernelManager from kernelspecs written to a temporary directory
(ipymini from this repository, ipykernel from the environment, bench/floor_kernel.py). Both IPython
kernels get the same fresh IPYTHONDIR. The floor runs no code, so only startup, memory, round trip and
pipelined figures apply to it.

Results are printed as a markdown table and written to bench/results.json (see --json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import zmq
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERNELS = ("ipymini", "ipykernel", "floor")
DELIM = b"<IDS|MSG>"


class Metric:
    def __init__(self, name, label, unit, higher_better, floor, target=None):
        self.name, self.label, self.unit = name, label, unit
        self.higher_better = higher_better
        self.floor = floor  # applies to the floor kernel
        self.target = target  # (reference kernel or None for absolute, op, value)


METRICS = [
    Metric("startup", "startup (start → kernel_info reply)", "s", False, True, ("ipykernel", "<=", 0.8)),
    Metric("memory", "memory (RSS after startup)", "MiB", False, True, ("ipykernel", "<=", 1.0)),
    Metric("execute_rtt", "execute `pass` round trip (reply + idle)", "ms", False, True,
           ("floor", "<=", 1.5)),
    Metric("pipelined", "pipelined `pass` executes", "exec/s", True, True, ("floor", ">=", 0.5)),
    Metric("stream_lines", "print flood, 100-byte lines", "MB/s", True, False, ("ipykernel", ">=", 3.0)),
    Metric("big_write", "one large sys.stdout.write", "MB/s", True, False, ("ipykernel", ">=", 1.0)),
    Metric("display", "display() calls", "msg/s", True, False, ("ipykernel", ">=", 1.0)),
    Metric("late_reader", "print flood, iopub read only after the reply", "MB/s", True, False,
           ("ipykernel", ">=", 1.0)),
    Metric("complete_import", "complete `import o`", "ms", False, False, ("ipykernel", "<=", 1.0)),
    Metric("complete_attr", "complete `big.` (10k attributes)", "ms", False, False,
           ("ipykernel", "<=", 1.0)),
    Metric("interrupt", "interrupt a busy loop → error reply", "ms", False, False, (None, "<=", 50.0)),
]
METRIC_NAMES = [m.name for m in METRICS]
# a second target for the round trip, checked against ipykernel
EXTRA_TARGETS = {"execute_rtt": ("ipykernel", "<=", 0.4)}

FULL = dict(rounds=5, rtt_n=500, rtt_warmup=30, pipelined_n=1000, lines_n=100_000, big_bytes=50_000_000,
            displays=2000, completions=20, interrupts=3)
# --flood: the output pipeline's own sizes (issue 4): 100 MB as 1,000,000 lines, one 50 MB write,
# 10,000 displays, and the 100 MB flood again for a client that reads iopub only after the reply
FLOOD = dict(FULL, rounds=3, lines_n=1_000_000, displays=10_000)
FLOOD_METRICS = ["stream_lines", "big_write", "display", "late_reader"]
QUICK = dict(rounds=1, rtt_n=20, rtt_warmup=3, pipelined_n=50, lines_n=1000, big_bytes=1_000_000,
             displays=50, completions=2, interrupts=1)


# ---------------------------------------------------------------------------------------------- kernels

def write_kernelspecs(root: Path, ipython_args: tuple = ()) -> KernelSpecManager:
    """Kernelspecs for the three kernels, all run by this Python, in a private directory.

    ipython_args go to both IPython kernels (e.g. `--HistoryManager.hist_file=:memory:`, as nbclient)."""
    argvs = {
        "ipymini": [sys.executable, "-m", "ipymini", "-f", "{connection_file}", *ipython_args],
        "ipykernel": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                      *ipython_args],
        "floor": [sys.executable, str(HERE / "floor_kernel.py"), "-f", "{connection_file}"],
    }
    for name, argv in argvs.items():
        d = root / "kernels" / f"bench-{name}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "kernel.json").write_text(json.dumps({
            "argv": argv, "display_name": f"bench {name}", "language": "python",
            "interrupt_mode": "signal"}))
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


def kernel_env(ipython_dir: str) -> dict:
    env = dict(os.environ)
    pp = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + pp if pp else "")
    env["IPYTHONDIR"] = ipython_dir
    env.pop("MPLBACKEND", None)
    return env


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------------------------------------- client

class Client:
    """A minimal client: shell DEALER + iopub SUB on raw zmq, signing with the manager's Session."""

    def __init__(self, km: KernelManager):
        self.km = km
        self.session = km.session
        ctx = zmq.Context.instance()
        self.shell = ctx.socket(zmq.DEALER)
        self.iopub = ctx.socket(zmq.SUB)
        for sock in (self.shell, self.iopub):
            sock.linger = 0
            sock.reconnect_ivl = 5  # the kernel binds a moment after we connect: retry fast
            sock.rcvhwm = 0
            sock.sndhwm = 0
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.shell.connect(km._make_url("shell"))
        self.iopub.connect(km._make_url("iopub"))
        self.poller = zmq.Poller()
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(self.iopub, zmq.POLLIN)

    def close(self) -> None:
        self.shell.close()
        self.iopub.close()

    def frames(self, msg_type: str, content: dict) -> tuple[str, list]:
        msg = self.session.msg(msg_type, content)
        return msg["header"]["msg_id"], self.session.serialize(msg)

    def send(self, msg_type: str, content: dict) -> str:
        msg_id, frames = self.frames(msg_type, content)
        self.shell.send_multipart(frames)
        return msg_id

    def execute(self, code: str) -> str:
        return self.send("execute_request", execute_content(code))

    @staticmethod
    def parse(frames: list) -> tuple[str, str | None, list, int]:
        """msg_type, parent msg_id, frames, index of the delimiter (content is frames[i + 5])."""
        i = frames.index(DELIM)
        header = json.loads(frames[i + 2])
        parent = json.loads(frames[i + 3])
        return header["msg_type"], parent.get("msg_id"), frames, i

    def received(self, sock):
        """Every message already waiting on `sock`, parsed (see `parse`)."""
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            yield self.parse(frames)

    def wait(self, pending: dict, on_iopub=None, on_reply=None, timeout: float = 60.0) -> None:
        """Receive until every msg_id in `pending` has its reply and its idle.

        pending: msg_id -> number of outstanding events (2: reply and idle). on_iopub(msg_type, msg_id,
        content_frame) sees every iopub message parented to a pending request; on_reply(msg_id, content).
        """
        deadline = time.monotonic() + timeout
        shell, iopub = self.shell, self.iopub
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} requests still pending")
            events = dict(self.poller.poll(left * 1000))
            if shell in events:
                for _, pid, fr, i in self.received(shell):
                    if pid in pending:
                        if on_reply is not None:
                            on_reply(pid, json.loads(fr[i + 5]))
                        self._done(pending, pid)
            if iopub in events:
                for mtype, pid, fr, i in self.received(iopub):
                    if pid not in pending:
                        continue
                    if mtype == "status":
                        if json.loads(fr[i + 5])["execution_state"] == "idle":
                            self._done(pending, pid)
                    elif on_iopub is not None:
                        on_iopub(mtype, pid, fr[i + 5])

    @staticmethod
    def _done(pending: dict, msg_id: str) -> None:
        left = pending[msg_id] - 1
        if left:
            pending[msg_id] = left
        else:
            del pending[msg_id]

    def request(self, msg_type: str, content: dict, timeout: float = 60.0, on_iopub=None) -> dict:
        """Send a request; returns its reply content once reply and idle have arrived."""
        msg_id = self.send(msg_type, content)
        out = {}
        self.wait({msg_id: 2}, on_iopub, lambda _id, c: out.update(c), timeout)
        return out

    def run(self, code: str, timeout: float = 60.0) -> dict:
        reply = self.request("execute_request", execute_content(code), timeout)
        if reply.get("status") != "ok":
            raise RuntimeError(f"setup code failed: {reply.get('ename')}: {reply.get('evalue')}")
        return reply

    def start(self, timeout: float = 60.0) -> None:
        """Wait for the first kernel_info reply (resending it now and then), then until iopub is live."""
        deadline = time.monotonic() + timeout
        got_reply = False
        next_send = 0.0
        while not got_reply:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError("no kernel_info reply")
            if now >= next_send:
                self.send("kernel_info_request", {})
                next_send = now + 1.0
            if self.shell.poll(min(100, (next_send - now) * 1000)):
                mtype, _, _, _ = self.parse(self.shell.recv_multipart())
                got_reply = mtype == "kernel_info_reply"
        self.startup_done = time.perf_counter()
        # iopub: the subscription may not be in place yet; poke the kernel until something arrives
        while not self.iopub.poll(100):
            if time.monotonic() > deadline:
                raise TimeoutError("iopub never delivered a message")
            self.send("kernel_info_request", {})
        time.sleep(0.2)
        self.drain()

    def drain(self) -> None:
        for sock in (self.shell, self.iopub):
            while sock.poll(0):
                sock.recv_multipart()


def execute_content(code: str) -> dict:
    return {"code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}


# ---------------------------------------------------------------------------------------------- metrics

SETUP = """\
import sys
from IPython.display import display
class _BenchBig: pass
big = _BenchBig()
for _i in range(10_000):
    setattr(big, f"attr_{_i}", _i)
del _i
"""


def m_execute_rtt(c: Client, cfg, rec) -> float:
    for _ in range(cfg["rtt_warmup"]):
        c.request("execute_request", execute_content("pass"))
    times = []
    for _ in range(cfg["rtt_n"]):
        t0 = time.perf_counter()
        c.request("execute_request", execute_content("pass"))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def m_pipelined(c: Client, cfg, rec) -> float:
    n = cfg["pipelined_n"]
    batch = [c.frames("execute_request", execute_content("pass")) for _ in range(n)]
    pending = {msg_id: 2 for msg_id, _ in batch}
    t0 = time.perf_counter()
    for _, frames in batch:
        c.shell.send_multipart(frames)
    c.wait(pending, timeout=120)
    return n / (time.perf_counter() - t0)


def stream_collector(parts: list, name: str = "stdout"):
    def on_iopub(mtype, _pid, content):
        if mtype == "stream":
            msg = json.loads(content)
            if msg["name"] == name:
                parts.append(msg["text"])
    return on_iopub


def m_stream_lines(c: Client, cfg, rec) -> float:
    n = cfg["lines_n"]
    expected = "".join(f"{i:099d}\n" for i in range(n))
    parts: list = []
    t0 = time.perf_counter()
    c.request("execute_request", execute_content(f'for _i in range({n}): print(f"{{_i:099d}}")'),
              timeout=300, on_iopub=stream_collector(parts))
    dt = time.perf_counter() - t0
    got = "".join(parts)
    rec["stream_lines_lossless"] = got == expected
    rec["stream_lines_messages"] = len(parts)
    return len(expected) / dt / 1e6


def m_big_write(c: Client, cfg, rec) -> float:
    n = cfg["big_bytes"]
    c.run(f"_bench_s = 'x' * {n}")
    parts: list = []
    t0 = time.perf_counter()
    c.request("execute_request", execute_content("_bench_n = sys.stdout.write(_bench_s)"), timeout=300,
              on_iopub=stream_collector(parts))
    dt = time.perf_counter() - t0
    got = "".join(parts)
    rec["big_write_lossless"] = len(got) == n and got.count("x") == n
    c.run("del _bench_s")
    return n / dt / 1e6


def m_display(c: Client, cfg, rec) -> float:
    n = cfg["displays"]
    count = [0]

    def on_iopub(mtype, _pid, _content):
        if mtype == "display_data":
            count[0] += 1

    t0 = time.perf_counter()
    c.request("execute_request", execute_content(f"for _i in range({n}): display(_i)"), timeout=300,
              on_iopub=on_iopub)
    dt = time.perf_counter() - t0
    if count[0] != n:
        raise RuntimeError(f"{count[0]} display_data messages for {n} display() calls")
    return n / dt


def completion(code: str):
    def measure(c: Client, cfg, rec) -> float:
        content = {"code": code, "cursor_pos": len(code)}
        reply = c.request("complete_request", content)  # warm-up (IPython caches the module list)
        if not reply.get("matches"):
            raise RuntimeError(f"no completions for {code!r}")
        times = []
        for _ in range(cfg["completions"]):
            t0 = time.perf_counter()
            c.request("complete_request", content)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000
    return measure


def m_late_reader(c: Client, cfg, rec) -> float:
    """The print flood for a client that, as simple scripts do, waits for the shell reply before it
    reads iopub at all, on a SUB socket with ZMQ's default receive high-water mark (1000 messages, as
    jupyter_client's). Lossless only if the kernel coalesces and never drops."""
    n = cfg["lines_n"]
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(c.km._make_url("iopub"))
    try:
        deadline = time.monotonic() + 30
        while not sub.poll(100):  # until the new subscription delivers something
            if time.monotonic() > deadline:
                raise TimeoutError("the new iopub subscription never delivered a message")
            c.request("kernel_info_request", {})
        while sub.poll(50):
            sub.recv_multipart()
        expected = "".join(f"{i:099d}\n" for i in range(n))
        t0 = time.perf_counter()
        msg_id = c.execute(f'for _i in range({n}): print(f"{{_i:099d}}")')
        got_reply = False
        while not got_reply:  # the shell reply first; iopub is not touched meanwhile
            if not c.shell.poll(300_000):
                raise TimeoutError("no execute_reply")
            _, pid, _, _ = c.parse(c.shell.recv_multipart())
            got_reply = pid == msg_id
        parts: list = []
        collect = stream_collector(parts)
        idle = False
        while not idle:
            if not sub.poll(60_000):
                raise TimeoutError("iopub ended without idle (messages were lost)")
            mtype, pid, fr, i = c.parse(sub.recv_multipart())
            if pid != msg_id:
                continue
            if mtype == "status":
                idle = json.loads(fr[i + 5])["execution_state"] == "idle"
            else:
                collect(mtype, pid, fr[i + 5])
        dt = time.perf_counter() - t0
    finally:
        sub.close()
    rec["late_reader_lossless"] = "".join(parts) == expected
    c.drain()
    return len(expected) / dt / 1e6


def m_interrupt(c: Client, cfg, rec) -> float:
    times = []
    for _ in range(cfg["interrupts"]):
        started = [False]
        msg_id = c.execute("while True: pass")
        pending = {msg_id: 2}
        deadline = time.monotonic() + 30
        # wait for execute_input: the loop is about to run
        while not started[0]:
            if time.monotonic() > deadline:
                raise TimeoutError("busy loop never started")
            fr = c.iopub.recv_multipart() if c.iopub.poll(1000) else None
            if fr is not None:
                mtype, pid, _, _ = c.parse(fr)
                started[0] = pid == msg_id and mtype == "execute_input"
        time.sleep(0.1)
        reply = {}
        t0 = time.perf_counter()
        c.km.interrupt_kernel()

        def on_reply(_id, content):
            reply.update(content, _t=time.perf_counter())

        c.wait(pending, on_reply=on_reply, timeout=30)
        if reply.get("status") != "error" or reply.get("ename") != "KeyboardInterrupt":
            raise RuntimeError(f"interrupt gave {reply.get('status')} {reply.get('ename')}")
        times.append(reply["_t"] - t0)
    return statistics.median(times) * 1000


MEASURES = {
    "execute_rtt": m_execute_rtt,
    "pipelined": m_pipelined,
    "complete_import": completion("import o"),
    "complete_attr": completion("big."),
    "stream_lines": m_stream_lines,
    "big_write": m_big_write,
    "display": m_display,
    "late_reader": m_late_reader,
    "interrupt": m_interrupt,  # last: it leaves the kernel freshly interrupted
}


def session(kernel: str, ksm: KernelSpecManager, env: dict, cfg: dict, metrics: list) -> dict:
    """Start one kernel, measure everything that applies to it, shut it down. Returns {metric: value}."""
    rec: dict = {}
    km = KernelManager(kernel_name=f"bench-{kernel}", kernel_spec_manager=ksm)
    t0 = time.perf_counter()
    km.start_kernel(env=env)
    c = Client(km)
    try:
        c.start()
        rec["startup"] = c.startup_done - t0
        rec["memory"] = rss_mib(km.provisioner.pid)
        applies = [m for m in METRICS if m.name in metrics and m.name in MEASURES
                   and (kernel != "floor" or m.floor)]
        if kernel != "floor":
            c.run(SETUP)
        for name in MEASURES:
            if name not in {m.name for m in applies}:
                continue
            try:
                rec[name] = MEASURES[name](c, cfg, rec)
            except Exception as e:
                rec.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
                traceback.print_exc()
                c.drain()
    finally:
        c.close()
        try:
            km.shutdown_kernel(now=False)
        except Exception:
            km.shutdown_kernel(now=True)
    return rec


# ---------------------------------------------------------------------------------------------- report

def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("s",):
        return f"{v:.2f}"
    if unit in ("ms",):
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    if unit in ("MiB",):
        return f"{v:.0f}"
    if unit == "MB/s":
        return f"{v:.1f}"
    return f"{v:,.0f}"


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def target_text(m: Metric, res: dict) -> str:
    checks = [m.target] + ([EXTRA_TARGETS[m.name]] if m.name in EXTRA_TARGETS else [])
    out = []
    for ref, op, value in checks:
        mine = res.get("ipymini", {}).get(m.name)
        if ref is None:
            got, label = mine, f"{value:g} {m.unit}"
        else:
            got, label = ratio(mine, res.get(ref, {}).get(m.name)), f"{value:g}× {ref}"
        if got is None:
            out.append(f"{op} {label}")
            continue
        ok = got <= value if op == "<=" else got >= value
        out.append(f"{op} {label} {'✓' if ok else '✗'}")
    return "; ".join(out)


def table(res: dict, kernels: list, metrics: list) -> str:
    head = ["metric", "unit", *kernels]
    if "ipymini" in kernels:
        head += ["ipymini / ipykernel", "ipymini / floor", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in METRICS:
        if m.name not in metrics:
            continue
        row = [m.label, m.unit] + [fmt(res.get(k, {}).get(m.name), m.unit) for k in kernels]
        if "ipymini" in kernels:
            mine = res.get("ipymini", {}).get(m.name)
            for ref in ("ipykernel", "floor"):
                r = ratio(mine, res.get(ref, {}).get(m.name))
                row.append("-" if r is None else f"{r:.2f}×")
            row.append(target_text(m, res))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine() -> dict:
    import IPython
    import jupyter_client

    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "ipython": IPython.__version__, "jupyter_client": jupyter_client.__version__,
            "pyzmq": zmq.__version__}
    try:
        import ipykernel
        info["ipykernel"] = ipykernel.__version__
    except ImportError:
        pass
    sys.path.insert(0, str(REPO))
    try:
        import ipymini
        info["ipymini"] = ipymini.__version__
    except ImportError:
        pass
    finally:
        sys.path.pop(0)
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny workloads and one round (for tests)")
    p.add_argument("--flood", action="store_true",
                   help="the output pipeline at issue 4's sizes: 100 MB of lines, 10,000 displays, "
                        "a late reader (default metrics: " + ",".join(FLOOD_METRICS) + ")")
    p.add_argument("--rounds", type=int, help="rounds (default 5, or 1 with --quick)")
    p.add_argument("--only", help=f"comma-separated metrics: {','.join(METRIC_NAMES)}")
    p.add_argument("--kernels", default=",".join(KERNELS), help="comma-separated: ipymini,ipykernel,floor")
    p.add_argument("--json", default=str(HERE / "results.json"), help="where to write the results")
    p.add_argument("--ipython-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for both IPython kernels, e.g. "
                        "--ipython-arg=--HistoryManager.hist_file=:memory: (repeatable)")
    args = p.parse_args(argv)

    cfg = dict(QUICK if args.quick else FLOOD if args.flood else FULL)
    if args.rounds:
        cfg["rounds"] = args.rounds
    default = FLOOD_METRICS if args.flood else METRIC_NAMES
    metrics = default if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    kernels = [s.strip() for s in args.kernels.split(",") if s.strip()]
    bad = [m for m in metrics if m not in METRIC_NAMES] + [k for k in kernels if k not in KERNELS]
    if bad:
        p.error(f"unknown metric or kernel: {', '.join(bad)}")

    tmp = tempfile.TemporaryDirectory(prefix="ipymini-bench-")
    root = Path(tmp.name)
    ksm = write_kernelspecs(root, tuple(args.ipython_arg))
    env = kernel_env(str(root / "ipython"))
    samples: dict = {k: {} for k in kernels}
    extras: dict = {k: {} for k in kernels}
    errors: dict = {}
    started = time.time()
    try:
        for r in range(cfg["rounds"]):
            order = kernels[r % len(kernels):] + kernels[:r % len(kernels)]
            for k in order:
                print(f"round {r + 1}/{cfg['rounds']}: {k} ...", file=sys.stderr, flush=True)
                rec = session(k, ksm, env, cfg, metrics)
                for name, err in rec.pop("errors", {}).items():
                    errors.setdefault(k, {}).setdefault(name, []).append(err)
                for name, v in rec.items():
                    target = samples[k] if name in METRIC_NAMES else extras[k]
                    target.setdefault(name, []).append(v)
    finally:
        tmp.cleanup()

    results = {k: {m: (statistics.median(samples[k][m]) if samples[k].get(m) else None)
                   for m in metrics} for k in kernels}
    checks = ("stream_lines_lossless", "big_write_lossless", "late_reader_lossless")
    lossless = {k: ({c: all(extras[k][c]) for c in checks if c in extras[k]} or None) for k in kernels}
    info = machine()
    date = datetime.date.today().isoformat()
    md = table(results, kernels, metrics)
    print()
    print(f"Benchmark {date}, {info['cpus']} cores ({info.get('cpu', platform.machine())}), Python "
          f"{info['python']}, IPython {info['ipython']}, ipykernel {info.get('ipykernel', '-')}; "
          f"{cfg['rounds']} interleaved round(s), medians{' (--quick)' if args.quick else ''}"
          f"{'; IPython kernels run with ' + ' '.join(args.ipython_arg) if args.ipython_arg else ''}.")
    print()
    print(md)
    print()
    print("output arrived complete and in order: " + "; ".join(
        f"{k}: " + ("-" if not v else ", ".join(f"{c.removesuffix('_lossless')} {'yes' if ok else 'NO'}"
                                               for c, ok in v.items()))
        for k, v in lossless.items()))
    if errors:
        print(f"errors: {json.dumps(errors, indent=1)}")
    out = {"date": date, "machine": info, "config": cfg, "quick": args.quick,
           "ipython_args": args.ipython_arg, "kernels": kernels,
           "metrics": {m.name: {"label": m.label, "unit": m.unit, "higher_is_better": m.higher_better,
                                "applies_to_floor": m.floor} for m in METRICS if m.name in metrics},
           "results": results, "samples": samples, "extras": extras, "lossless": lossless,
           "errors": errors, "elapsed_s": round(time.time() - started, 1), "table": md}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"results written to {path}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
