"""What the benchmark measures: one function per metric, each given a started client.

A metric function takes (client, config, record) and returns its figure; it may add extra facts to the
record (`*_lossless`: did every byte arrive, in order). `FRESH` metrics need a kernel of their own that
has run nothing yet (the first traceback of a process pays for imports and caches).
"""

from __future__ import annotations

import json
import statistics
import time

import zmq
from client import Client, execute_content


class Metric:
    """A row of the table. targets: (reference, op, value) checks for ipymini, where reference is a
    kernel (the value is a ratio to it), "kernel.metric" (a ratio to another metric of that kernel) or
    None (the value is absolute); lead: ipymini should beat every other real kernel in the run."""

    def __init__(self, name, label, unit, higher_better, floor, targets=(), lead=True):
        self.name, self.label, self.unit = name, label, unit
        self.higher_better = higher_better
        self.floor = floor  # applies to the floor kernels
        self.targets = targets
        self.lead = lead


METRICS = [
    Metric("startup", "startup (start → kernel_info reply)", "s", False, True,
           (("ipykernel", "<=", 0.8), ("xeus-python", "<=", 1.0))),
    Metric("memory", "memory (RSS after startup)", "MiB", False, True,
           (("ipykernel", "<=", 1.0), ("xeus-python", "<=", 1.0))),
    Metric("execute_rtt", "execute `pass` round trip (reply + idle)", "ms", False, True,
           (("floor", "<=", 1.5), ("ipykernel", "<=", 0.4))),
    Metric("pipelined", "pipelined `pass` executes", "exec/s", True, True, (("floor", ">=", 0.5),)),
    Metric("stream_lines", "print flood, 100-byte lines", "MB/s", True, False, (("ipykernel", ">=", 5.0),)),
    Metric("big_write", "one large sys.stdout.write", "MB/s", True, False, (("ipykernel", ">=", 1.0),)),
    Metric("display", "display() calls", "msg/s", True, False, (("ipykernel", ">=", 1.0),)),
    Metric("late_reader", "print flood, iopub read only after the reply", "MB/s", True, False,
           (("ipykernel", ">=", 1.0),)),
    Metric("complete_import", "complete `import o`", "ms", False, False,
           (("ipykernel", "<=", 1.0), ("floor.execute_rtt", "<=", 2.0))),
    Metric("complete_attr", "complete `big.` (10k attributes)", "ms", False, False,
           (("ipykernel", "<=", 1.0),)),
    Metric("interrupt", "interrupt a busy loop → error reply", "ms", False, False, ((None, "<=", 50.0),)),
    Metric("fresh_interrupt", "interrupt a busy loop in a fresh kernel → reply", "ms", False, False,
           ((None, "<=", 20.0),)),
    Metric("first_error", "first error in a fresh kernel → reply", "ms", False, False,
           ((None, "<=", 20.0),)),
]
METRIC_NAMES = [m.name for m in METRICS]

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


def interrupt_busy_loop(c: Client) -> float:
    """Seconds from SIGINT to the KeyboardInterrupt error reply of a running `while True: pass`."""
    msg_id = c.execute("while True: pass")
    pending = {msg_id: 2}
    deadline = time.monotonic() + 30
    started = False
    while not started:  # execute_input: the loop is about to run
        if time.monotonic() > deadline:
            raise TimeoutError("busy loop never started")
        fr = c.iopub.recv_multipart() if c.iopub.poll(1000) else None
        if fr is not None:
            mtype, pid, _, _ = c.parse(fr)
            started = pid == msg_id and mtype == "execute_input"
    time.sleep(0.1)
    reply = {}
    t0 = time.perf_counter()
    c.km.interrupt_kernel()

    def on_reply(_id, content):
        reply.update(content, _t=time.perf_counter())

    c.wait(pending, on_reply=on_reply, timeout=30)
    if reply.get("status") != "error" or reply.get("ename") != "KeyboardInterrupt":
        raise RuntimeError(f"interrupt gave {reply.get('status')} {reply.get('ename')}")
    return reply["_t"] - t0


def m_interrupt(c: Client, cfg, rec) -> float:
    return statistics.median(interrupt_busy_loop(c) for _ in range(cfg["interrupts"])) * 1000


def m_fresh_interrupt(c: Client, cfg, rec) -> float:
    return interrupt_busy_loop(c) * 1000


def m_first_error(c: Client, cfg, rec) -> float:
    reply = {}
    t0 = time.perf_counter()
    msg_id = c.execute("1/0")
    c.wait({msg_id: 2}, on_reply=lambda _id, content: reply.update(content, _t=time.perf_counter()),
           timeout=30)
    if "ZeroDivisionError" not in str(reply.get("ename")):  # xeus-python names the class
        raise RuntimeError(f"1/0 gave {reply.get('status')} {reply.get('ename')}")
    return (reply["_t"] - t0) * 1000


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
FRESH = {"fresh_interrupt": m_fresh_interrupt, "first_error": m_first_error}
