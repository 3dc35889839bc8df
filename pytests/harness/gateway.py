"""Helpers for the gateway tests: servers in subprocesses, a REST client, a kernel websocket.

Everything listens on and connects to 127.0.0.1 only. Every wait has a deadline. A `Server` is started
on a free port and restarted on another one if it exits before answering (the port was taken between
choosing and binding it). A `KernelSocket` is used by the test's thread only (one owner per websocket).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from harness.messages import result_text, stream_text  # noqa: F401  (what the gateway tests read)
from harness.processes import kill_leftovers, pid_alive, process_environ, processes_matching  # noqa: F401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Call `predicate` until it returns something truthy (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Server:
    """A server process on a free 127.0.0.1 port; `make_cmd(port)` builds its command line."""

    def __init__(self, name: str, make_cmd: Callable[[int], list[str]], log_path: Path, env: dict | None = None,
                 ready: Callable[[int], bool] = port_open, timeout: float = 90, attempts: int = 3):
        self.name, self.log_path = name, log_path
        for attempt in range(attempts):
            self.port = free_port()
            with open(log_path, "a") as log:
                self.proc = subprocess.Popen(make_cmd(self.port), env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                if ready(self.port):
                    return
                time.sleep(0.2)
            if self.proc.poll() is None:
                self.stop()
                raise AssertionError(f"{name} did not answer within {timeout:.0f}s:\n{self.log_tail()}")
            # exited early: most likely the port was taken meanwhile; try another one
        raise AssertionError(f"{name} exited ({self.proc.returncode}) {attempts} times:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the server's process group (it may have helpers), SIGKILL it if it is still there."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                return
            try:  # the leader is not reaped yet, so the group id is still ours
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass


class Rest:
    """A tiny JSON REST client with token auth."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def __call__(self, method: str, path: str, body: dict | None = None, timeout: float = 90):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)


class KernelSocket:
    """A kernel's websocket (`/api/kernels/ID/channels`), JSON messages, jupyter_server's default protocol."""

    def __init__(self, base: str, token: str, kernel_id: str, timeout: float = 30):
        import websocket  # websocket-client (a jupyter_server dependency)

        url = base.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {token}"], timeout=timeout)
        self.session = uuid.uuid4().hex
        self._pending: list[dict] = []  # read by wait_for_iopub, not yet handed out by recv

    def close(self) -> None:
        self.ws.close()

    def send(self, msg_type: str, content: dict, channel: str = "shell") -> str:
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "test",
                       "version": "5.3", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel, "buffers": []}))
        return msg_id

    def recv(self, timeout: float) -> dict | None:
        import websocket

        if self._pending:
            return self._pending.pop(0)
        self.ws.settimeout(max(timeout, 0.01))
        try:
            text = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        return json.loads(text) if isinstance(text, str) else None  # binary frames: buffers, unused here

    def wait_for_iopub(self, msg_id: str, msg_type: str, timeout: float = 30) -> None:
        """Wait for an iopub `msg_type` parented to `msg_id`; what is read stays for recv/collect."""
        deadline = time.monotonic() + timeout
        read: list[dict] = []
        try:
            while True:
                left = deadline - time.monotonic()
                msg = self.recv(left) if left > 0 else None
                if msg is None:
                    raise AssertionError(f"no {msg_type} for {msg_id} within {timeout:.0f}s")
                read.append(msg)
                if msg.get("msg_type") == msg_type and msg.get("parent_header", {}).get("msg_id") == msg_id:
                    return
        finally:
            self._pending[:0] = read

    def collect(self, msg_id: str, timeout: float = 30) -> tuple[dict, list[dict]]:
        """The shell reply to `msg_id` and its iopub messages through `status: idle`."""
        deadline = time.monotonic() + timeout
        reply, iopub, idle = None, [], False
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no complete answer to {msg_id} within {timeout:.0f}s; got {iopub}")
            msg = self.recv(left)
            if msg is None or msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell":
                reply = msg
            elif msg["channel"] == "iopub":
                iopub.append(msg)
                idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
        return reply, iopub

    def execute(self, code: str, timeout: float = 30) -> tuple[dict, list[dict]]:
        return self.collect(self.send("execute_request", {"code": code, "silent": False}), timeout)

    def wait_ready(self, timeout: float = 60) -> dict:
        """kernel_info until it is answered (the kernel may still be starting)."""
        deadline = time.monotonic() + timeout
        while True:
            msg_id = self.send("kernel_info_request", {})
            try:
                reply, _ = self.collect(msg_id, timeout=min(5, max(deadline - time.monotonic(), 0.1)))
                return reply
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
