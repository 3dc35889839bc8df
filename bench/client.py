"""The benchmark's client: lean on purpose, so the kernel, not the client, is what is measured.

Raw zmq sockets (a shell DEALER, an iopub SUB) and jupyter_client's Session for signing; messages
pre-serialized where a burst is sent, incoming messages parsed only as far as needed.
"""

from __future__ import annotations

import json
import time

import zmq
from jupyter_client.manager import KernelManager

DELIM = b"<IDS|MSG>"


def execute_content(code: str) -> dict:
    """An execute_request's content as a notebook sends it."""
    return {"code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True}


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
