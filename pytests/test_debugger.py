"""The debugger (debug_request / debug_reply / debug_event over debugpy), driven like JupyterLab does.

Each test module shares one kernel; the tests here attach and detach the debugger themselves, and every
wait is bounded (a debugger that never answers fails the test instead of hanging the suite).
"""

from __future__ import annotations

import queue
import time

import pytest

from kernel_harness import KernelHarness, stream_text

TIMEOUT = 20


class DebugClient:
    """Sends DAP requests as debug_request on control; collects debug_event from iopub."""

    def __init__(self, kernel: KernelHarness):
        self.kernel = kernel
        self.seq = 0
        self.events: list[dict] = []
        self.other_iopub: list[dict] = []

    def request(self, command: str, arguments: dict | None = None, timeout: float = TIMEOUT) -> dict:
        self.seq += 1
        content = {"type": "request", "seq": self.seq, "command": command}
        if arguments is not None:
            content["arguments"] = arguments
        kc = self.kernel.kc
        msg = kc.session.msg("debug_request", content)
        kc.control_channel.send(msg)
        reply = self.kernel.shell_reply(msg["header"]["msg_id"], timeout=timeout, channel="control")
        assert reply["msg_type"] == "debug_reply"
        assert reply["content"]["request_seq"] == self.seq
        assert reply["content"]["command"] == command
        return reply["content"]

    def ok(self, command: str, arguments: dict | None = None, timeout: float = TIMEOUT) -> dict:
        rep = self.request(command, arguments, timeout)
        assert rep["success"], rep
        return rep

    def pump(self, timeout: float = 0.05) -> None:
        """Move what iopub has received into events / other_iopub."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kernel.kc.get_iopub_msg(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if msg["msg_type"] == "debug_event":
                self.events.append(msg["content"])
            else:
                self.other_iopub.append(msg)

    def wait_event(self, name: str, timeout: float = TIMEOUT, **body) -> dict:
        """The first not yet consumed debug_event `name` whose body has `body`'s items."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name and all(ev.get("body", {}).get(k) == v for k, v in body.items()):
                    del self.events[: i + 1]
                    return ev
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} event; got {[e.get('event') for e in self.events]}")
            self.pump(0.1)

    def start(self, **attach) -> dict:
        """initialize + attach + debugInfo, as JupyterLab does when the debugger is switched on."""
        init = self.ok("initialize", {"clientID": "test", "clientName": "pytest", "adapterID": "python",
                                      "pathFormat": "path", "linesStartAt1": True,
                                      "columnsStartAt1": True, "supportsVariableType": True,
                                      "supportsVariablePaging": True, "supportsRunInTerminalRequest": True,
                                      "locale": "en-us"})
        assert init["body"]["supportsConfigurationDoneRequest"]
        self.ok("attach", attach)
        info = self.ok("debugInfo")["body"]
        assert info["isStarted"]
        return info

    def stop(self) -> None:
        self.ok("disconnect", {"restart": False, "terminateDebuggee": False})
        assert self.ok("debugInfo")["body"]["isStarted"] is False
        self.events.clear()

    def execute(self, code: str) -> str:
        return self.kernel.kc.execute(code)

    def finish(self, msg_id: str, timeout: float = TIMEOUT) -> dict:
        """The execute reply of `msg_id` (iopub up to its idle is moved into events / other_iopub)."""
        reply = self.kernel.shell_reply(msg_id, timeout)
        deadline = time.monotonic() + timeout
        while not any(m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                      and m["content"]["execution_state"] == "idle" for m in self.other_iopub):
            assert time.monotonic() < deadline, "no idle"
            self.pump(0.1)
        return reply

    def top_frame(self, thread_id: int) -> dict:
        frames = self.ok("stackTrace", {"threadId": thread_id})["body"]["stackFrames"]
        assert frames
        return frames[0]

    def locals_of(self, frame_id: int) -> dict:
        scopes = self.ok("scopes", {"frameId": frame_id})["body"]["scopes"]
        ref = next(s for s in scopes if s["name"] == "Locals")["variablesReference"]
        return {v["name"]: v for v in self.ok("variables", {"variablesReference": ref})["body"]["variables"]}


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
