"""The debugger (debug_request / debug_reply / debug_event over debugpy), driven like JupyterLab does.

Each test module shares one kernel; the tests here attach and detach the debugger themselves, and every
wait is bounded (a debugger that never answers fails the test instead of hanging the suite).
"""

from __future__ import annotations

import sys
import time

import pytest

from harness import TIMEOUT, KernelHarness, stream_text
from harness.debug import DebugClient


@pytest.fixture
def dbg(kernel):
    client = DebugClient(kernel)
    kernel.drain_iopub()
    yield client
    try:
        if client.request("debugInfo")["body"]["isStarted"]:
            client.request("disconnect", {"restart": False, "terminateDebuggee": False})
    finally:
        kernel.drain_iopub()


def test_kernel_info_and_lazy_import():
    k = KernelHarness()
    try:
        reply = k.kc.kernel_info(reply=True, timeout=TIMEOUT)["content"]
        assert reply["debugger"] is True
        assert "debugger" in reply["supported_features"]
        msgs = k.run_ok("import sys; print('debugpy' in sys.modules, 'pydevd' in sys.modules)")
        assert stream_text(msgs) == "False False\n"
        # a request that needs a started debugger is answered at once, without importing debugpy
        client = DebugClient(k)
        t0 = time.monotonic()
        rep = client.request("evaluate", {"expression": "1+1", "context": "repl"}, timeout=5)
        assert rep["success"] is False and time.monotonic() - t0 < 2
        info = client.ok("debugInfo")["body"]
        assert info["isStarted"] is False and info["hashMethod"] == "Murmur2"
        msgs = k.run_ok("print('debugpy' in sys.modules)")
        assert stream_text(msgs) == "False\n"
    finally:
        k.stop()


def test_full_jupyterlab_flow(kernel, dbg):
    info = dbg.start()
    assert info["hashSeed"] == 0xC70F6907 and info["tmpFileSuffix"] == ".py"
    code = "def double(v):\n    w = v * 2\n    return w\n\nx = 5\ny = double(x)\nz = y + 1\n"
    path = dbg.ok("dumpCell", {"code": code})["body"]["sourcePath"]
    assert path.startswith(info["tmpFilePrefix"]) and path.endswith(".py")
    assert dbg.ok("source", {"source": {"path": path}})["body"]["content"] == code
    bps = dbg.ok("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 5}],
                                    "sourceModified": False})["body"]["breakpoints"]
    assert bps[0]["verified"] and bps[0]["line"] == 5
    dbg.ok("configurationDone")
    assert dbg.ok("debugInfo")["body"]["breakpoints"] == [{"source": path, "breakpoints": [{"line": 5}]}]

    msg_id = dbg.execute(code)
    stopped = dbg.wait_event("stopped")
    tid = stopped["body"]["threadId"]
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == [tid]
    frame = dbg.top_frame(tid)
    assert frame["line"] == 5 and frame["source"]["path"] == path

    dbg.ok("next", {"threadId": tid})
    dbg.wait_event("stopped", threadId=tid)
    frame = dbg.top_frame(tid)
    assert frame["line"] == 6
    assert dbg.locals_of(frame["id"])["x"]["value"] == "5"
    ev = dbg.ok("evaluate", {"expression": "x * 10", "frameId": frame["id"], "context": "repl"})
    assert ev["body"]["result"] == "50"

    dbg.ok("stepIn", {"threadId": tid})
    dbg.wait_event("stopped", threadId=tid)
    frame = dbg.top_frame(tid)
    assert frame["line"] == 2 and frame["name"] == "double"
    assert dbg.locals_of(frame["id"])["v"]["value"] == "5"
    dbg.ok("next", {"threadId": tid})
    dbg.wait_event("stopped", threadId=tid)
    frame = dbg.top_frame(tid)
    assert frame["line"] == 3 and dbg.locals_of(frame["id"])["w"]["value"] == "10"
    rich = dbg.ok("richInspectVariables", {"variableName": "w", "frameId": frame["id"]})["body"]
    assert rich["data"]["text/plain"] == "10"
    dbg.ok("copyToGlobals", {"srcVariableName": "w", "dstVariableName": "w_copy",
                             "srcFrameId": frame["id"]})
    dbg.ok("stepOut", {"threadId": tid})
    dbg.wait_event("stopped", threadId=tid)
    frame = dbg.top_frame(tid)
    assert frame["line"] in (6, 7) and frame["source"]["path"] == path

    dbg.ok("continue", {"threadId": tid})
    reply = dbg.finish(msg_id)
    assert reply["content"]["status"] == "ok"
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == []

    # not stopped: the variables view and rich inspection read the user namespace
    variables = {v["name"]: v for v in dbg.ok("inspectVariables")["body"]["variables"]}
    assert variables["z"]["value"] == "11" and variables["w_copy"]["value"] == "10"
    assert "In" not in variables and "_i1" not in variables
    rich = dbg.ok("richInspectVariables", {"variableName": "z"})["body"]
    assert rich["data"]["text/plain"] == "11"
    assert dbg.ok("modules")["body"]["totalModules"] > 0

    dbg.stop()
    # detached: the breakpoint no longer stops the cell, and the kernel works as before
    msgs = kernel.run_ok(code + "print(z)", timeout=10)
    assert stream_text(msgs) == "11\n"


def test_exception_breakpoints(kernel, dbg):
    dbg.start()
    dbg.ok("setExceptionBreakpoints", {"filters": ["raised"]})
    dbg.ok("configurationDone")
    code = "try:\n    raise ValueError('caught')\nexcept ValueError:\n    handled = True\n"
    msg_id = dbg.execute(code)
    stopped = dbg.wait_event("stopped")
    assert stopped["body"]["reason"] == "exception"
    tid = stopped["body"]["threadId"]
    assert dbg.top_frame(tid)["line"] == 2
    dbg.ok("continue", {"threadId": tid})
    assert dbg.finish(msg_id)["content"]["status"] == "ok"

    # "uncaught": what escapes the cell (IPython catches it; the kernel reports it to pydevd)
    dbg.ok("setExceptionBreakpoints", {"filters": ["uncaught"]})
    msg_id = dbg.execute(code)  # caught inside the cell: no stop
    assert dbg.finish(msg_id)["content"]["status"] == "ok"
    assert not [e for e in dbg.events if e.get("event") == "stopped"]
    msg_id = dbg.execute("a = 1\nraise KeyError('boom')\n")
    stopped = dbg.wait_event("stopped")
    assert stopped["body"]["reason"] == "exception"
    tid = stopped["body"]["threadId"]
    assert dbg.top_frame(tid)["line"] == 2
    dbg.ok("continue", {"threadId": tid})
    reply = dbg.finish(msg_id)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyError"
    dbg.ok("setExceptionBreakpoints", {"filters": []})


def test_breakpoint_builtin_and_interrupt_while_stopped(kernel, dbg):
    # with no debugger attached, breakpoint() falls back to pdb (here: PYTHONBREAKPOINT=0 turns it off)
    dbg.start()
    dbg.ok("configurationDone")
    msg_id = dbg.execute("before = 1\nbreakpoint()\nafter = 2\n")
    stopped = dbg.wait_event("stopped")
    tid = stopped["body"]["threadId"]
    frame = dbg.top_frame(tid)
    assert frame["line"] == 3 and "before" in dbg.locals_of(frame["id"])
    dbg.ok("continue", {"threadId": tid})
    assert dbg.finish(msg_id)["content"]["status"] == "ok"

    # an interrupt while stopped ends the cell with KeyboardInterrupt and leaves the kernel usable
    code = "import time\nfor i in range(3):\n    time.sleep(0.01)\nloop_done = True\n"
    path = dbg.ok("dumpCell", {"code": code})["body"]["sourcePath"]
    dbg.ok("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 3}]})
    msg_id = dbg.execute(code)
    tid = dbg.wait_event("stopped")["body"]["threadId"]
    kernel.km.interrupt_kernel()
    reply = dbg.finish(msg_id)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert dbg.ok("debugInfo")["body"]["stoppedThreads"] == []
    # still debugging: the breakpoint stops the next run again
    msg_id = dbg.execute(code)
    tid = dbg.wait_event("stopped")["body"]["threadId"]
    assert dbg.top_frame(tid)["line"] == 3
    dbg.ok("setBreakpoints", {"source": {"path": path}, "breakpoints": []})
    dbg.ok("continue", {"threadId": tid})
    assert dbg.finish(msg_id)["content"]["status"] == "ok"
    dbg.stop()
    msgs = kernel.run_ok("print(loop_done, i)")
    assert stream_text(msgs) == "True 2\n"


def test_just_my_code_off_steps_into_library(kernel, dbg):
    dbg.start(justMyCode=False)
    code = "import json\nout = json.dumps([1])\n"
    path = dbg.ok("dumpCell", {"code": code})["body"]["sourcePath"]
    dbg.ok("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 2}]})
    dbg.ok("configurationDone")
    msg_id = dbg.execute(code)
    tid = dbg.wait_event("stopped")["body"]["threadId"]
    dbg.ok("stepIn", {"threadId": tid})
    dbg.wait_event("stopped", threadId=tid)
    frame = dbg.top_frame(tid)
    assert frame["source"]["path"].endswith("json/__init__.py"), frame
    dbg.ok("continue", {"threadId": tid})
    assert dbg.finish(msg_id)["content"]["status"] == "ok"


def test_reattach_and_threads(kernel, dbg):
    dbg.start()
    dbg.ok("configurationDone")
    threads = dbg.ok("threads")["body"]["threads"]
    assert [t["name"] for t in threads] == ["MainThread"]  # the kernel's threads are hidden
    dbg.stop()
    info = dbg.start()  # a second session on the same kernel
    code = "q = 1\nq += 1\n"
    path = dbg.ok("dumpCell", {"code": code})["body"]["sourcePath"]
    dbg.ok("setBreakpoints", {"source": {"path": path}, "breakpoints": [{"line": 2}]})
    dbg.ok("configurationDone")
    msg_id = dbg.execute(code)
    tid = dbg.wait_event("stopped")["body"]["threadId"]
    # the control channel answers while the main thread is stopped
    reply, _ = kernel.request("kernel_info_request", {}, channel="control", timeout=5)
    assert reply["content"]["status"] == "ok"
    dbg.ok("continue", {"threadId": tid})
    reply = dbg.finish(msg_id)
    assert reply["content"]["status"] == "ok"
    # no debugger chatter (e.g. pydevd's frozen-modules warning) in any cell's output
    assert not [m for m in dbg.other_iopub if m["msg_type"] == "stream"]
    assert info["tmpFilePrefix"]


def test_bad_debug_requests(kernel, dbg):
    assert dbg.request("stackTrace", {"threadId": 1})["success"] is False  # not started
    assert dbg.request("dumpCell", {})["success"] is False
    assert dbg.request("copyToGlobals", {"srcVariableName": "1x", "dstVariableName": "y",
                                         "srcFrameId": 1})["success"] is False
    reply = kernel.control("debug_request", {"seq": 1, "command": 5}, timeout=5)
    assert reply["content"]["success"] is False
    kernel.run_ok("pass")



def test_dummy_threads_of_ended_threads_are_forgotten_and_live_ones_kept():
    """In-process: what `threads` prunes before pydevd lists them (the "Dummy-N" of a thread that
    ended, which 3.12 keeps for good; a foreign thread still running stays listed)."""
    import _thread
    import threading

    from ipymini.debugging.debugger import forget_ended_dummy_threads

    ended, release, running = threading.Event(), threading.Event(), threading.Event()
    idents = {}

    def foreign(key, done, wait=None):
        idents[key] = threading.current_thread().ident  # registers a _DummyThread
        done.set()
        if wait is not None:
            wait.wait(10)

    _thread.start_new_thread(foreign, ("ended", ended))
    _thread.start_new_thread(foreign, ("running", running, release))
    assert ended.wait(10) and running.wait(10)
    deadline = time.monotonic() + 10
    while idents["ended"] in sys._current_frames() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        # (3.13+ may drop an ended thread's dummy itself; either way it must be gone after)
        forget_ended_dummy_threads()
        listed = {t.ident for t in threading.enumerate()}
        assert idents["ended"] not in listed
        assert idents["running"] in listed
    finally:
        release.set()
