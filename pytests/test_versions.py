"""The paths that differ between Python versions, pinned for the version running the suite (CI runs
it on 3.11 to 3.15 and free-threaded 3.13t), so a regression on one version fails there: the debugger's
tracing backend, how an interrupt reaches a cell on the main thread and on a subshell's thread, whether
threads inherit the context (3.14+) and whether the GIL is on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import time

from harness import stream_text
from harness.debug import DebugClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_debugger_backend_matches_the_python(kernel):
    """pydevd traces with sys.monitoring (PEP 669) on 3.12+, with settrace before; either way a
    breakpoint stops, stepping moves on and evaluate answers in the stopped frame."""
    dbg = DebugClient(kernel)
    kernel.drain_iopub()
    dbg.start()
    try:
        dbg.ok("configurationDone")
        msgs = kernel.run_ok("import sys\nmon = getattr(sys, 'monitoring', None)\n"
                             "print(sys.gettrace() is not None, mon and mon.get_tool(mon.DEBUGGER_ID))")
        expected = "False pydevd\n" if sys.version_info >= (3, 12) else "True None\n"
        assert stream_text(msgs) == expected
        code = "def tri(n):\n    s = n * (n + 1) // 2\n    return s\n\nt = tri(4)\nu = t + 1\n"
        path = dbg.ok("dumpCell", {"code": code})["body"]["sourcePath"]
        dbg.ok("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 3}]})
        msg_id = dbg.execute(code)
        tid = dbg.wait_event("stopped")["body"]["threadId"]
        frame = dbg.top_frame(tid)
        assert (frame["line"], frame["name"]) == (3, "tri")
        assert dbg.ok("evaluate", {"expression": "s * 2", "frameId": frame["id"],
                                   "context": "repl"})["body"]["result"] == "20"
        dbg.ok("stepOut", {"threadId": tid})
        dbg.wait_event("stopped", threadId=tid)
        assert dbg.top_frame(tid)["line"] in (5, 6)
        dbg.ok("setBreakpoints", {"source": {"path": path}, "breakpoints": []})
        dbg.ok("continue", {"threadId": tid})
        assert dbg.finish(msg_id)["content"]["status"] == "ok"
    finally:
        dbg.stop()
        kernel.drain_iopub()


def test_interrupt_reaches_pure_python_loops_on_every_thread(kernel):
    """Main thread: the SIGINT handler raises KeyboardInterrupt; a subshell's thread: the kernel
    raises it with PyThreadState_SetAsyncExc once the thread runs user code. Both land in the cell's
    own loop, never in the kernel's code, and both shells serve on."""
    sub = kernel.create_subshell()
    spin = "def spin():\n    n = 0\n    while True:\n        n += 1\nprint('go', flush=True)\nspin()\n"
    on_sub = kernel.submit(spin, sub)
    on_main = kernel.submit(spin)
    wait_for_output(kernel, [on_sub, on_main])
    t0 = time.monotonic()
    kernel.control("interrupt_request")
    replies, iopub = kernel.wait_all([on_sub, on_main], timeout=20)
    assert time.monotonic() - t0 < 5
    for msg_id in (on_sub, on_main):
        content = replies[msg_id]["content"]
        assert (content["status"], content["ename"]) == ("error", "KeyboardInterrupt")
        frames = ANSI.sub("", "\n".join(content["traceback"]))
        assert "spin()" in frames and "n += 1" in frames.split("spin()")[-1]  # raised inside the loop
        assert "ipymini" not in frames
    assert stream_text(kernel.run_ok("print('main ok')")) == "main ok\n"
    done = kernel.submit("print('sub ok')", sub)
    replies, iopub = kernel.wait_all([done])
    assert replies[done]["content"]["status"] == "ok"
    assert kernel.control("delete_subshell_request", {"subshell_id": sub})["content"]["status"] == "ok"


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
FLAGS = ("import json, sys\nprint(json.dumps([getattr(sys.flags, 'thread_inherit_context', None), "
         "getattr(sys, '_is_gil_enabled', lambda: True)()]))")


def test_thread_context_and_gil_as_plain_python_has_them(kernel):
    """`sys.flags.thread_inherit_context` (3.14+: 1 on free-threaded builds, 0 otherwise; absent
    before) and the GIL inside the kernel are what plain `python` reports for the same interpreter:
    the kernel neither sets the flag nor imports an extension that turns the GIL back on."""
    in_kernel = json.loads(stream_text(kernel.run_ok(FLAGS)))
    plain = json.loads(subprocess.run([sys.executable, "-c", FLAGS], capture_output=True, text=True,
                                      timeout=60, check=True).stdout)
    expected_flag = None if sys.version_info < (3, 14) else int(FREE_THREADED)
    assert in_kernel == plain == [expected_flag, not FREE_THREADED]


def test_a_subshell_interrupt_leaves_no_instrumentation(kernel):
    """Without the GIL a subshell's interrupt is raised by its own thread from a sys.monitoring
    callback (thread_interrupt.py); the tool is given back once delivered, so later code runs
    uninstrumented. With the GIL the tool is never taken."""
    sub = kernel.create_subshell()
    spin = "def spin2():\n    n = 0\n    while True:\n        n += 1\nprint('go', flush=True)\nspin2()\n"
    on_sub = kernel.submit(spin, sub)
    wait_for_output(kernel, [on_sub])
    kernel.control("interrupt_request")
    replies, _ = kernel.wait_all([on_sub], timeout=20)
    assert replies[on_sub]["content"]["ename"] == "KeyboardInterrupt"
    tools = stream_text(kernel.run_ok(
        "import sys\nmon = getattr(sys, 'monitoring', None)\n"
        "print([mon.get_tool(i) for i in (3, 4)] if mon else [None, None])"))
    assert tools == "[None, None]\n"
    assert kernel.control("delete_subshell_request", {"subshell_id": sub})["content"]["status"] == "ok"


def test_subshell_interrupts_land_in_user_code_while_it_prints(kernel):
    """A subshell interrupted while it prints is mostly inside the kernel's stream code: the interrupt
    waits for the user's own next line (without the GIL the subshell's thread decides that itself, see
    thread_interrupt.py), so the traceback never shows the kernel, and the shell serves on."""
    subs = [kernel.create_subshell(), kernel.create_subshell()]
    cells = ["i = 0\nwhile True:\n    print('x' * (i % 50)); i += 1\n",
             "def step(n):\n    return n + 1\nprint('go', flush=True)\nm = 0\nwhile True:\n    m = step(m)\n"]
    for _ in range(5):
        ids = [kernel.submit(code, sub) for code, sub in zip(cells, subs)]
        wait_for_output(kernel, ids)  # both cells run (an interrupt before that would miss one)
        kernel.control("interrupt_request")
        replies, _ = kernel.wait_all(ids, timeout=30)
        for msg_id in ids:
            content = replies[msg_id]["content"]
            assert (content["status"], content["ename"]) == ("error", "KeyboardInterrupt")
            assert "ipymini" not in ANSI.sub("", "\n".join(content["traceback"]))
    for sub in subs:
        assert kernel.control("delete_subshell_request", {"subshell_id": sub})["content"]["status"] == "ok"


def wait_for_output(kernel, msg_ids, timeout=30) -> None:
    """Read iopub until each request has printed something."""
    waiting, deadline = set(msg_ids), time.monotonic() + timeout
    while waiting:
        assert time.monotonic() < deadline, f"no output from {waiting}"
        msg = kernel.kc.get_iopub_msg(timeout=deadline - time.monotonic())
        if msg["msg_type"] == "stream":
            waiting.discard(msg["parent_header"].get("msg_id"))
