"""The protocol core in-process: ipymini's Kernel with fake sockets and a fake bridge.

Fast checks of what the hub itself decides (busy → outputs → reply → idle, refusals, aborts after an
error, control requests, unknown subshells, handler failures), with no subprocess, ZMQ or IPython
execution. The real-kernel tests (every other module) stay the proof that the whole kernel behaves;
these pin the hub's own logic and run in well under a second.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from ipymini import bridge
from ipymini.kernel import Kernel
from ipymini.protocol.wire import Wire
from ipymini.protocol.messages import Request
from ipymini.shell.history import IPythonCells

KEY = "in-process-key"


class FakeSockets:
    """Stands in for KernelSockets: records every message the kernel sends, decoded, in order."""

    def __init__(self):
        self.io_lock = threading.Lock()
        self.wire = Wire(KEY)
        self.sent: list[tuple[str, dict]] = []
        self.iopub = None

    def attach(self, output):
        """Stand in for the IO thread as `output`'s sender (an IOPubSource)."""
        self.iopub = output
        output.attach(self)

    def kick(self):
        self.drain_iopub()

    def wake(self):
        pass

    def is_sender(self):
        return True

    def drain_iopub(self):
        while True:
            frames, _ = self.iopub.take(math.inf)  # every chunk is due: nothing waits for a timer
            if frames is None:
                return
            self.record("iopub", frames)

    def record(self, channel, frames):
        idents, rest = self.wire.split_identities(frames)
        self.sent.append((channel, self.wire.deserialize(rest)))

    def send(self, channel, frames):
        self.drain_iopub()
        self.record(channel, frames)

    def send_after_iopub(self, channel, frames, wake=True):  # replies go out after iopub before them
        self.send(channel, frames)

    def receive_waiting(self):
        return True  # nothing waits in a socket here: every request was handed over already

    def share_shell_reading(self):
        pass


class FakeBridge:
    """Stands in for the IPython bridge: `fail` fails, `raise` makes the bridge itself raise."""

    def __init__(self):
        self.executed: list[str] = []
        self.execution_count = 1

    async def execute(self, code, silent, store_history, tracker, cell, cell_id=None, cell_meta=None):
        if code == "raise":
            raise RuntimeError("bridge bug")
        self.executed.append(code)
        if store_history:
            self.execution_count += 1
        if code == "fail":
            return {"status": "error", "ename": "ValueError", "evalue": "no", "traceback": ["tb"]}
        return {"status": "ok"}

    def user_expressions(self, expressions):
        return {}

    def take_payloads(self):
        return []

    def is_complete(self, code):
        return {"status": "complete"}

    def after_request(self):
        pass


@pytest.fixture
def kernel():
    sockets = FakeSockets()
    k = Kernel({"key": KEY, "signature_scheme": "hmac-sha256"}, app=None, sockets=sockets)
    sockets.attach(k.output)
    k.bridge = FakeBridge()
    k.parent_worker.cells = IPythonCells(k.bridge)  # (counts as IPython's shell does)
    loop = asyncio.new_event_loop()
    k.loop = loop
    k.parent_worker.attach(loop)
    serving = loop.create_task(k.parent_worker.serve())
    yield k, sockets, loop
    serving.cancel()
    loop.run_until_complete(asyncio.gather(serving, return_exceptions=True))
    loop.close()


def request(msg_type, content, **header):
    msg = Wire(KEY).msg(msg_type, content)
    msg["header"].update(header)
    return msg


def send_shell(k, msg):
    with k.sockets.io_lock:
        k._on_io_message("shell", [b"client"], msg, None)


def answered(sockets, loop, msg_ids, timeout=5.0):
    """Run the kernel's loop until every request in msg_ids saw its idle; returns messages per id."""
    deadline = time.monotonic() + timeout

    def idle(msg_id):
        return any(ch == "iopub" and m["header"]["msg_type"] == "status" and
                   m["content"]["execution_state"] == "idle" and m["parent_header"].get("msg_id") == msg_id
                   for ch, m in sockets.sent)

    async def wait():
        while not all(idle(i) for i in msg_ids):
            assert time.monotonic() < deadline, f"no idle within {timeout}s: {sockets.sent}"
            await asyncio.sleep(0.001)

    loop.run_until_complete(wait())
    return {i: [(ch, m["header"]["msg_type"], m["content"]) for ch, m in sockets.sent
                if m["parent_header"].get("msg_id") == i] for i in msg_ids}


def test_execute_goes_busy_input_reply_idle_in_that_order(kernel):
    k, sockets, loop = kernel
    msg = request("execute_request", {"code": "1 + 1", "silent": False})
    send_shell(k, msg)
    seen = answered(sockets, loop, [msg["header"]["msg_id"]])[msg["header"]["msg_id"]]
    assert [(ch, t) for ch, t, _ in seen] == [("iopub", "status"), ("iopub", "execute_input"),
                                              ("shell", "execute_reply"), ("iopub", "status")]
    assert [c["execution_state"] for ch, t, c in seen if t == "status"] == ["busy", "idle"]
    reply = seen[2][2]
    assert reply["status"] == "ok" and reply["execution_count"] == 1 and reply["payload"] == []
    assert k.bridge.executed == ["1 + 1"]


def test_a_malformed_request_is_refused_and_runs_nothing(kernel):
    k, sockets, loop = kernel
    msg = request("execute_request", {"silent": False})  # no code
    send_shell(k, msg)
    seen = answered(sockets, loop, [msg["header"]["msg_id"]])[msg["header"]["msg_id"]]
    reply = [c for ch, t, c in seen if t == "execute_reply"][0]
    assert reply["status"] == "error" and reply["ename"] == "BadRequest"
    assert "missing the required field 'code'" in reply["evalue"]
    assert k.bridge.executed == []


def test_an_unknown_request_type_gets_an_error_reply(kernel):
    k, sockets, loop = kernel
    msg = request("frobnicate_request", {})
    send_shell(k, msg)
    seen = answered(sockets, loop, [msg["header"]["msg_id"]])[msg["header"]["msg_id"]]
    assert [(t, c["status"], c["evalue"]) for ch, t, c in seen if ch == "shell"] == [
        ("frobnicate_reply", "error", "unknown message type 'frobnicate_request'")]


def test_an_error_aborts_the_executes_queued_behind_it_and_not_other_requests(kernel):
    k, sockets, loop = kernel
    fail = request("execute_request", {"code": "fail", "silent": False})
    queued = request("execute_request", {"code": "never", "silent": False})
    check = request("is_complete_request", {"code": "x"})
    after = request("execute_request", {"code": "later", "silent": False})
    for msg in (fail, queued, check):
        send_shell(k, msg)
    ids = [m["header"]["msg_id"] for m in (fail, queued, check)]
    seen = answered(sockets, loop, ids)
    assert [c["status"] for ch, t, c in seen[ids[0]] if ch == "shell"] == ["error"]
    assert [c["status"] for ch, t, c in seen[ids[1]] if ch == "shell"] == ["aborted"]
    assert [c["status"] for ch, t, c in seen[ids[2]] if ch == "shell"] == ["complete"]
    send_shell(k, after)  # sent after the error was answered: runs
    answered(sockets, loop, [after["header"]["msg_id"]])
    assert k.bridge.executed == ["fail", "later"]


def test_a_bridge_failure_still_gets_one_reply_and_idle(kernel):
    k, sockets, loop = kernel
    msg, then = request("execute_request", {"code": "raise"}), request("execute_request", {"code": "ok"})
    send_shell(k, msg)
    send_shell(k, then)
    seen = answered(sockets, loop, [msg["header"]["msg_id"], then["header"]["msg_id"]])
    (reply,) = [c for ch, t, c in seen[msg["header"]["msg_id"]] if ch == "shell"]
    assert reply["status"] == "error" and reply["ename"] == "RuntimeError" and reply["evalue"] == "bridge bug"
    assert [c["status"] for ch, t, c in seen[then["header"]["msg_id"]] if ch == "shell"] == ["ok"]


def test_an_unknown_subshell_gets_the_error_ipykernel_gives(kernel):
    k, sockets, loop = kernel
    msg = request("execute_request", {"code": "x"}, subshell_id="nope")
    send_shell(k, msg)
    seen = answered(sockets, loop, [msg["header"]["msg_id"]])[msg["header"]["msg_id"]]
    (reply,) = [c for ch, t, c in seen if ch == "shell"]
    assert reply["ename"] == "UnknownSubshellError" and "nope" in reply["evalue"]
    assert k.bridge.executed == []


def test_control_requests_are_answered_on_control_from_the_calling_thread(kernel):
    k, sockets, loop = kernel
    msg = request("kernel_info_request", {})
    k._on_control_message("control", [b"client"], msg, None)  # no loop needed: answered right here
    seen = [(ch, m["header"]["msg_type"], m["content"]) for ch, m in sockets.sent
            if m["parent_header"].get("msg_id") == msg["header"]["msg_id"]]
    assert [(ch, t) for ch, t, _ in seen] == [("iopub", "status"), ("control", "kernel_info_reply"),
                                              ("iopub", "status")]
    info = seen[1][2]
    assert info["status"] == "ok" and info["implementation"] == "ipymini"
    assert info["protocol_version"] == __import__("ipymini").PROTOCOL_VERSION


def test_a_debug_request_without_debugpy_or_a_bad_one_never_wedges_control(kernel, monkeypatch):
    k, sockets, loop = kernel
    import ipymini.kernel as kernel_module

    monkeypatch.setattr(kernel_module, "debugger_available", lambda: False)
    msg = request("debug_request", {"seq": 7, "type": "request", "command": "evaluate"})
    k._on_control_message("control", [b"client"], msg, None)
    (reply,) = [m for ch, m in sockets.sent if ch == "control"]
    assert reply["content"] == {"type": "response", "request_seq": 7, "success": False,
                                "command": "evaluate", "body": {}, "message": "debugpy is not installed"}


def test_a_comm_message_gets_busy_and_idle_but_no_reply(kernel):
    k, sockets, loop = kernel
    msg = request("comm_msg", {"comm_id": "unknown", "data": {}})
    send_shell(k, msg)
    seen = answered(sockets, loop, [msg["header"]["msg_id"]])[msg["header"]["msg_id"]]
    assert [(ch, t) for ch, t, _ in seen] == [("iopub", "status"), ("iopub", "status")]


def test_the_parent_shells_count_is_ipythons(kernel):
    k, sockets, loop = kernel
    ids = []
    for code, store in (("1", True), ("2", False), ("3", True)):
        msg = request("execute_request", {"code": code, "silent": False, "store_history": store})
        send_shell(k, msg)
        ids.append(msg["header"]["msg_id"])
    seen = answered(sockets, loop, ids)
    counts = [[c["execution_count"] for ch, t, c in seen[i] if t == "execute_reply"][0] for i in ids]
    assert counts == [1, 1, 2] and k.bridge.execution_count == 3 and not k.parent_worker.cells.own


def test_user_code_sees_ipykernels_api_composed_over_the_kernel(kernel):
    """`get_ipython().kernel` (and `comm.kernel`) is the IPyKernelAPI object: what libraries use of
    ipykernel's Kernel, over the parts it needs; the kernel's own state is out of reach."""
    k, sockets, loop = kernel
    api = k.ipykernel_api
    assert k.comm_manager.kernel is api and api.comm_manager is k.comm_manager
    assert api.ident == k.wire.session_id and api.int_id == -1
    k.bridge.shell = shell = object()
    assert api.shell is shell
    assert api.get_parent("control") == {} and api._parent_ident["control"] == b""
    k._control_request = control = Request("control", [b"c"], request("kernel_info_request", {}))
    assert api.get_parent("control")["header"]["msg_id"] == control.header["msg_id"]
    assert api._parent_ident["control"] == [b"c"]
    with pytest.warns(DeprecationWarning, match="_parent_header is deprecated"):
        assert api._parent_header == api.get_parent()  # ipykernel 5's name, as ipykernel 7 keeps it
    assert api.language_info == bridge.kernel_info(debugger=False)["language_info"]
    assert api.language_info["name"] == "python"
    for internal in ("sockets", "shell_handlers", "bridge", "wire", "parent_worker", "execute_request"):
        assert not hasattr(api, internal), internal
