"""Protocol 5.6's kernel handshake (JEP 66): the kernel picks its own ports and tells the launcher.

A launcher that picks five free ports for a kernel to bind later races every other process on the host
(many kernels starting at once fail with "address in use"). With the handshake, the launcher binds a
*registration socket* and starts the kernel with a registration file instead of a connection file; the
kernel binds its five sockets on ports the OS gives it, connects to the registration socket, sends its
ports signed with the connection key, waits for the acknowledgement and disconnects. No acknowledgement
within IPYMINI_HANDSHAKE_TIMEOUT seconds stops the kernel (HandshakeError; exit status 1).

Two wire formats are in use, and the file says which one its launcher speaks:
- the JEP as jupyter_client's documentation (messaging.rst, "Kernel startup handshake") and xeus-zmq 4
  (xeus-python 0.19) have it: the file has `kernel_id`, `registration_ip` and `registration_port`;
  a DEALER sends [DELIM, HMAC(content), content], the content `{"kernel_id", "control_port",
  "shell_port", "stdin_port", "iopub_port", "hb_port"}` with the ports as strings; the acknowledgement
  is [DELIM, HMAC(content), content], its content anything (xeus sends "ACK");
- Positron's supervisor (posit-dev/kallichore) and its R kernel (posit-dev/ark) put `ip` and
  `registration_port` in the file (no `kernel_id`); a REQ socket sends a full signed Jupyter message
  `handshake_request` whose content has the five ports as numbers; the answer is a `handshake_reply`
  message with `status` "ok" (or "error" with an `error` text).
A file with all five ports is a classic connection file, whatever else it holds.
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass

import zmq

from ipymini import settings
from ipymini.protocol.wire import DELIM, pack, unpack

log = logging.getLogger("ipymini")

# in the order xeus-zmq and ark send them
PORT_FIELDS = ("control_port", "shell_port", "stdin_port", "iopub_port", "hb_port")


class HandshakeError(RuntimeError):
    """The kernel could not register its ports with the launcher."""


@dataclass
class Registration:
    """Where and how this kernel registers its ports (`style`: "jep" or "kallichore")."""

    style: str
    address: str
    kernel_id: str

    def register(self, ctx: zmq.Context, conn: dict, wire, timeout: float) -> None:
        """Send the ports in `conn` and wait for the acknowledgement; HandshakeError if none comes
        within `timeout` seconds or it is refused or badly signed."""
        sock = ctx.socket(zmq.DEALER if self.style == "jep" else zmq.REQ)
        sock.linger = 0
        try:
            sock.connect(self.address)
            sock.send_multipart(self._request(conn, wire))
            if not sock.poll(int(timeout * 1000) if timeout else None):
                raise HandshakeError(f"no acknowledgement from the registration socket {self.address} "
                                     f"within {timeout:g} s (IPYMINI_HANDSHAKE_TIMEOUT)")
            frames = sock.recv_multipart()
        finally:
            sock.close(0)  # the launcher may close its side once it has the ports (JEP 66)
        if self.style == "jep":
            self._check_jep_ack(frames, wire)
        else:
            self._check_handshake_reply(frames, wire)
        log.info("registered with %s: %s", self.address, {f: conn[f] for f in PORT_FIELDS})

    def _request(self, conn: dict, wire) -> list:
        if self.style == "jep":
            content = pack({"kernel_id": self.kernel_id, **{f: str(conn[f]) for f in PORT_FIELDS}})
            return [DELIM, wire.sign([content]), content]
        msg = wire.msg("handshake_request", {f: conn[f] for f in PORT_FIELDS})
        return wire.serialize(msg)

    def _check_jep_ack(self, frames: list, wire) -> None:
        if DELIM not in frames or len(frames) < frames.index(DELIM) + 3:
            raise HandshakeError(f"the acknowledgement from {self.address} is not [<IDS|MSG>, signature, "
                                 f"content] ({len(frames)} frames)")
        signature, content = frames[frames.index(DELIM) + 1:][:2]
        if wire.auth is not None and not hmac.compare_digest(signature, wire.sign([content])):
            raise HandshakeError(f"the acknowledgement from {self.address} has an invalid signature")

    def _check_handshake_reply(self, frames: list, wire) -> None:
        if DELIM not in frames:  # kallichore answers an unreadable request with bare JSON
            raise HandshakeError(f"the registration service {self.address} refused the handshake: "
                                 f"{_error_text(frames)}")
        try:
            reply = wire.deserialize(frames[frames.index(DELIM) + 1:])
        except ValueError as e:
            raise HandshakeError(f"the handshake reply from {self.address} was refused: {e}") from None
        content = reply["content"] if isinstance(reply["content"], dict) else {}
        if reply["msg_type"] != "handshake_reply" or content.get("status") != "ok":
            error = f": {content['error']}" if content.get("error") else ""
            raise HandshakeError(f"the registration service {self.address} answered {reply['msg_type']} "
                                 f"{content.get('status')!r}{error}")


def _error_text(frames: list) -> str:
    try:
        answer = unpack(frames[-1])
    except ValueError:
        return f"{bytes(frames[-1])[:200]!r}"
    return str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer)


def registration(conn: dict) -> Registration | None:
    """The registration a connection file asks for (None: a classic connection file). Fills in what a
    registration file leaves out (`ip`, `transport`) in `conn`, and its ports as 0 until bound."""
    if not conn.get("registration_port") or all(conn.get(f) for f in PORT_FIELDS):
        return None
    try:
        port = int(conn["registration_port"])  # xeus writes it as a string
    except (TypeError, ValueError):
        raise HandshakeError(f"registration_port {conn['registration_port']!r} is not a port") from None
    jep = "kernel_id" in conn or "registration_ip" in conn
    reg_ip = (conn.get("registration_ip") if jep else None) or conn.get("ip") or "127.0.0.1"
    transport = conn.setdefault("transport", "tcp")
    conn.setdefault("ip", reg_ip)
    for field in PORT_FIELDS:
        conn[field] = 0
    address = f"ipc://{reg_ip}-{port}" if transport == "ipc" else f"tcp://{_host(reg_ip)}:{port}"
    return Registration("jep" if jep else "kallichore", address, str(conn.get("kernel_id", "")))


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip and not ip.startswith("[") else ip


def bind_any(sock: zmq.Socket, conn: dict) -> int:
    """Bind `sock` on a port the OS picks (tcp) or an unused path suffix (ipc); returns the port."""
    if conn.get("transport", "tcp") == "ipc":
        taken, n = {conn[f] for f in PORT_FIELDS}, 1
        while n in taken or os.path.exists(f"{conn['ip']}-{n}"):
            n += 1
        sock.bind(f"ipc://{conn['ip']}-{n}")
        return n
    sock.bind(f"tcp://{_host(conn['ip'])}:*")
    return int(sock.last_endpoint.decode().rsplit(":", 1)[1])


def timeout() -> float:
    """Seconds to wait for the acknowledgement."""
    return settings.value("IPYMINI_HANDSHAKE_TIMEOUT")
