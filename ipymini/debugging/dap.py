"""A Debug Adapter Protocol client over TCP: the kernel's side of its connection to debugpy.

Messages are JSON bodies behind a `Content-Length: N\\r\\n\\r\\n` header (N counts bytes). A reader thread
takes everything debugpy sends: a response wakes the request waiting for it (matched by its sequence
number), an event goes to the `on_event` callback. `request` waits at most `timeout` seconds, so the
thread asking (the control thread) is never stuck on a debugger that stopped answering.

`import_debugpy` imports debugpy as the kernel needs it, for the debugger and the variable explorer alike.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import queue
import socket
import sys
import threading

from ipymini import patches

log = logging.getLogger("ipymini")

HEADER = b"Content-Length: "
SEPARATOR = b"\r\n\r\n"


def import_debugpy():
    """Import debugpy with the environment it needs in a kernel (see debugger.py's docstring)."""
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    os.environ.setdefault("PYDEVD_USE_SYS_MONITORING", "1" if sys.version_info >= (3, 12) else "0")
    hook = sys.breakpointhook
    import debugpy

    # pydevd installs its own hook at import: undone, ours (debugger.install_breakpointhook) decides
    patches.assign(sys, "breakpointhook", hook)
    return debugpy


def hide_thread(thread: threading.Thread) -> threading.Thread:
    """Keep a kernel thread out of the debugger: pydevd neither traces it nor lists it."""
    thread.pydev_do_not_trace = True
    thread.is_pydev_daemon_thread = True
    return thread


class DAPError(Exception):
    """The connection to the debug adapter failed or a request timed out."""


def encode(msg: dict) -> bytes:
    body = json.dumps(msg, ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")
    return HEADER + str(len(body)).encode("ascii") + SEPARATOR + body


class FrameReader:
    """Splits a byte stream into DAP messages."""

    def __init__(self):
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        """Add received bytes; returns the messages now complete."""
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(SEPARATOR)
            if end < 0:
                return out
            length = None
            for line in bytes(self.buffer[:end]).split(b"\r\n"):
                if line.startswith(HEADER):
                    length = int(line[len(HEADER):].strip())
            if length is None:
                raise DAPError("a DAP message without Content-Length")
            start = end + len(SEPARATOR)
            if len(self.buffer) - start < length:
                return out
            body = bytes(self.buffer[start:start + length])
            del self.buffer[:start + length]
            out.append(json.loads(body))


class DAPClient:
    """One connection to a DAP server (debugpy); `request` from any thread, events on the reader."""

    def __init__(self, host: str, port: int, on_event, timeout: float = 15.0):
        self.on_event = on_event
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.settimeout(None)
        self._send_lock = threading.Lock()
        self._seq = itertools.count(1)
        self._waiting: dict[int, queue.SimpleQueue] = {}
        self.closed = threading.Event()
        self.reader = hide_thread(threading.Thread(target=self._read, name="ipymini-debugpy-reader",
                                                   daemon=True))
        # an empty context: events are parented like output from outside any request
        contextvars.Context().run(self.reader.start)

    def send(self, command: str, arguments: dict | None = None) -> int:
        """Send a request without waiting; returns its sequence number."""
        seq = next(self._seq)
        msg = {"seq": seq, "type": "request", "command": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self._write(msg)
        return seq

    def request(self, command: str, arguments: dict | None = None, timeout: float | None = None) -> dict:
        """Send a request and return debugpy's response (raises DAPError on timeout or disconnect)."""
        if self.closed.is_set():
            raise DAPError("the debugger connection is closed")
        seq = next(self._seq)
        waiter: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting[seq] = waiter
        try:
            msg = {"seq": seq, "type": "request", "command": command}
            if arguments is not None:
                msg["arguments"] = arguments
            self._write(msg)
            try:
                response = waiter.get(timeout=self.timeout if timeout is None else timeout)
            except queue.Empty:
                raise DAPError(f"debugpy did not answer {command!r} within "
                               f"{self.timeout if timeout is None else timeout:g} s") from None
        finally:
            self._waiting.pop(seq, None)
        if response is None:
            raise DAPError("the debugger connection closed")
        return response

    def _write(self, msg: dict) -> None:
        data = encode(msg)
        try:
            with self._send_lock:
                self.sock.sendall(data)
        except OSError as e:
            raise DAPError(f"could not send to debugpy: {e}") from e

    def _read(self) -> None:
        frames = FrameReader()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for msg in frames.feed(data):
                    self._dispatch(msg)
        except (OSError, ValueError, DAPError) as e:
            if not self.closed.is_set():
                log.warning("debugger connection lost: %s", e)
        finally:
            self.closed.set()
            for waiter in list(self._waiting.values()):
                waiter.put(None)

    def _dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "response":
            waiter = self._waiting.get(msg.get("request_seq"))
            if waiter is not None:
                waiter.put(msg)
        elif kind == "event":
            try:
                self.on_event(msg)
            except Exception:
                log.exception("error handling a debugger event")

    def close(self) -> None:
        """Close the connection (the reader thread ends)."""
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


_debugpy_found: list = []


def debugger_available() -> bool:
    """Whether debugpy can be imported (looked up once, without importing it)."""
    if not _debugpy_found:
        import importlib.util

        _debugpy_found.append(importlib.util.find_spec("debugpy") is not None)
    return _debugpy_found[0]


def response(request: dict, success: bool = True, body: dict | None = None, message: str | None = None):
    """A DAP response to `request`."""
    reply = {"type": "response", "request_seq": request.get("seq", 0), "success": success,
             "command": request.get("command", ""), "body": body if body is not None else {}}
    if message is not None:
        reply["message"] = message
    return reply
