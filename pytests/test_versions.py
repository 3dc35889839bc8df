"""The paths that differ between Python versions, pinned for the version running the suite (CI runs
it on 3.11, 3.13 and 3.14), so a regression on one version fails there: the debugger's tracing backend
and how an interrupt reaches a cell on the main thread and on a subshell's thread."""

from __future__ import annotations

import re
import sys
import time

from kernel_harness import stream_text
from test_debugger import DebugClient
from test_subshells import control, create, execute, wait_all

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
    sub = create(kernel)
    spin = "def spin():\n    n = 0\n    while True:\n        n += 1\nspin()\n"
    on_sub = execute(kernel, spin, sub)
    on_main = execute(kernel, spin)
    time.sleep(1.0)
    t0 = time.monotonic()
    control(kernel, "interrupt_request")
    replies, iopub = wait_all(kernel, [on_sub, on_main], timeout=20)
    assert time.monotonic() - t0 < 5
    for msg_id in (on_sub, on_main):
        content = replies[msg_id]["content"]
        assert (content["status"], content["ename"]) == ("error", "KeyboardInterrupt")
        frames = ANSI.sub("", "\n".join(content["traceback"]))
        assert "spin()" in frames and "n += 1" in frames.split("spin()")[-1]  # raised inside the loop
        assert "ipymini" not in frames
    assert stream_text(kernel.run_ok("print('main ok')")) == "main ok\n"
    done = execute(kernel, "print('sub ok')", sub)
    replies, iopub = wait_all(kernel, [done])
    assert replies[done]["content"]["status"] == "ok"
    assert control(kernel, "delete_subshell_request", {"subshell_id": sub})["status"] == "ok"
