"""The launcher's communication port: Enterprise Gateway's signal and shutdown requests.

EG connects, writes one JSON object and closes (or half-closes) the connection:
`{"signum": n}` asks for signal n to be sent to the kernel (0 is EG's liveness poll: a listener that
accepts means "alive"), `{"shutdown": 1}` asks the launcher to stop listening and end. One thread
owns the listening socket and every connection it accepts.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Callable

log = logging.getLogger("ipymini.remote")

REQUEST_LIMIT = 64 * 1024  # bytes; EG's requests are a few dozen
READ_TIMEOUT = 5.0  # seconds a connected peer may take to send its request


class CommListener:
    """Serve EG's requests on `sock` (bound, not yet listening) from a daemon thread."""

    def __init__(self, sock: socket.socket, on_signal: Callable[[int], None],
                 on_shutdown: Callable[[], None]):
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.on_signal = on_signal
        self.on_shutdown = on_shutdown
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ipymini-eg-listener", daemon=True)

    def start(self) -> None:
        self.sock.listen(16)
        self.sock.settimeout(0.2)  # how often the accept loop looks at the stop flag
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting (EG then sees the port refuse connections) and close the socket."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError as e:
                    log.warning("communication port: accept failed: %s", e)
                    continue
                with conn:
                    request = self._read_request(conn)
                if request is not None:
                    self._handle(request)
        finally:
            self.sock.close()

    def _read_request(self, conn: socket.socket) -> dict | None:
        conn.settimeout(READ_TIMEOUT)
        data = b""
        try:
            while len(data) <= REQUEST_LIMIT:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as e:  # a timeout or reset: use what arrived
            log.info("communication port: read ended early: %s", e)
        if not data.strip():
            return None
        try:
            request = json.loads(data)
        except ValueError:
            log.warning("communication port: ignoring a request that is not JSON: %r", data[:200])
            return None
        if not isinstance(request, dict):
            log.warning("communication port: ignoring a request that is not an object: %r", request)
            return None
        return request

    def _handle(self, request: dict) -> None:
        if request.get("signum") is not None:
            try:
                signum = int(request["signum"])
            except (TypeError, ValueError):
                log.warning("communication port: bad signum in %r", request)
            else:
                if signum:
                    log.info("communication port: signal %d requested", signum)
                    self.on_signal(signum)
        if request.get("shutdown"):
            log.info("communication port: shutdown requested")
            self._stop.set()
            self.on_shutdown()
