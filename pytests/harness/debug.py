"""The debugger's client side: DAP requests as debug_request on control, debug_event from iopub,
driven like JupyterLab's debugger (test_debugger.py, test_versions.py)."""

from __future__ import annotations

import queue
import time

from harness.kernel import TIMEOUT, KernelHarness


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
        reply = self.kernel.control("debug_request", content, timeout)
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
