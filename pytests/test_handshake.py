"""The kernel handshake of protocol 5.6 (JEP 66), from the launcher's side.

No jupyter_client version implements the launcher's side, so the tests play it, written from
jupyter_client's documentation (messaging.rst "Kernel startup handshake", kernels.rst "Registration
file format") and the two implementations in use: xeus-zmq 4's handshake client and tests (a ROUTER
registration socket; [DELIM, HMAC(content), content] both ways, the ports as strings, `registration_port`
written as a string) and Positron's supervisor kallichore with ark's kernel side (a REP registration
socket; `handshake_request` / `handshake_reply` Jupyter messages, the ports as numbers). Each test binds
the registration socket, writes the file, starts `python -m ipymini -f FILE`, checks what arrives
(signature included), acknowledges (or not), and talks to the kernel with jupyter_client's
BlockingKernelClient on the ports it got. The launcher's sockets are used by the test's thread only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import zmq
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.session import Session
from harness import REPO, stream_text  # noqa: F401  (sets PYTHONPATH/JUPYTER_PATH for the kernel)

from ipymini.protocol.handshake import HandshakeError, registration

PORTS = ("control_port", "shell_port", "stdin_port", "iopub_port", "hb_port")
START_TIMEOUT = 90  # seconds for kernels to start and register (a loaded 2-core machine, 8 at once)
DELIM = b"<IDS|MSG>"


def sign(key: bytes, *parts: bytes) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.hexdigest().encode()


class KernelProcess:
    """`python -m ipymini -f FILE` with its log (stderr) in a file."""

    def __init__(self, conn: dict, env: dict | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="ipymini-handshake-"))
        self.file = self.dir / "registration.json"
        self.file.write_text(json.dumps(conn))
        self.log = self.dir / "kernel.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ipymini", "-f", str(self.file)],
                                         cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={**os.environ, **(env or {})})

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the kernel did not exit within {timeout}s; log:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Registrar:
    """The launcher's registration socket: a ROUTER (xeus-zmq, the JEP) or a REP (kallichore)."""

    def __init__(self, style: str, key: bytes = None):
        self.style = style
        self.key = key if key is not None else str(uuid.uuid4()).encode()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER if style == "jep" else zmq.REP)
        self.sock.linger = 0
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.session = Session(key=self.key)  # kallichore: reads and answers Jupyter messages

    def file(self, kernel_id: str = "kernel-1") -> dict:
        if self.style == "jep":  # as xeus-zmq's test_handshake writes it (the port as a string)
            return {"kernel_id": kernel_id, "transport": "tcp", "ip": "127.0.0.1",
                    "registration_ip": "127.0.0.1", "registration_port": str(self.port),
                    "signature_scheme": "hmac-sha256", "key": self.key.decode()}
        return {"transport": "tcp", "signature_scheme": "hmac-sha256", "ip": "127.0.0.1",
                "key": self.key.decode(), "registration_port": self.port}  # kallichore's RegistrationFile

    def receive(self, timeout: float = START_TIMEOUT):
        """(routing frames, ports dict, kernel_id) of the next registration; the signature checked."""
        assert self.sock.poll(int(timeout * 1000)), f"no registration within {timeout}s"
        frames = self.sock.recv_multipart()
        if self.style == "jep":
            i = frames.index(DELIM)
            signature, content = frames[i + 1:]
            assert signature == sign(self.key, content), "the registration is not signed with the key"
            info = json.loads(content)
            assert list(info) == ["kernel_id", *PORTS]
            assert all(isinstance(info[p], str) for p in PORTS)  # strings, as the docs and xeus say
            return frames[:i], {p: int(info[p]) for p in PORTS}, info["kernel_id"]
        idents, rest = self.session.feed_identities(frames)
        msg = self.session.deserialize(rest)  # verifies the signature
        assert msg["msg_type"] == "handshake_request"
        assert set(msg["content"]) == set(PORTS) and all(isinstance(msg["content"][p], int) for p in PORTS)
        self.request = msg
        return idents, dict(msg["content"]), None

    def ack(self, route: list, signature_ok: bool = True, status: str = "ok") -> None:
        if self.style == "jep":  # xeus-zmq's handshake client answers a signed "ACK"
            content = b"ACK"
            signature = sign(self.key, content) if signature_ok else b"0" * 64
            self.sock.send_multipart([*route, DELIM, signature, content])
            return
        # as kallichore's RegistrationSocket: a handshake_reply, metadata null, signed with the key
        header = json.dumps({"msg_id": str(uuid.uuid4()), "msg_type": "handshake_reply", "session": "s",
                             "username": "u", "date": "2025-01-01T00:00:00.000Z", "version": "5.5"}).encode()
        parts = [header, json.dumps(self.request["header"], default=str).encode(), b"null",
                 json.dumps({"status": status, "capabilities": {}}).encode()]
        signature = sign(self.key, *parts) if signature_ok else b"0" * 64
        self.sock.send_multipart([DELIM, signature, *parts])

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def client(registrar: Registrar, ports: dict) -> BlockingKernelClient:
    kc = BlockingKernelClient()
    kc.load_connection_info({"transport": "tcp", "ip": "127.0.0.1", "key": registrar.key.decode(),
                             "signature_scheme": "hmac-sha256", **ports})
    kc.start_channels()
    kc.wait_for_ready(timeout=START_TIMEOUT)
    return kc


def run_cell(kc: BlockingKernelClient, code: str) -> str:
    out = []
    reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(m))
    assert reply["content"]["status"] == "ok", reply["content"]
    return stream_text(out)


def shut_down(kc: BlockingKernelClient, kernel: KernelProcess) -> None:
    kc.shutdown()
    kc.stop_channels()
    assert kernel.wait(60) == 0


@pytest.mark.parametrize("style", ["jep", "kallichore"])
def test_handshake_then_a_client_runs_a_cell(style):
    registrar = Registrar(style)
    kernel = KernelProcess(registrar.file())
    try:
        route, ports, kernel_id = registrar.receive()
        if style == "jep":
            assert kernel_id == "kernel-1"
        registrar.ack(route)
        kc = client(registrar, ports)
        assert run_cell(kc, "print(6 * 7)") == "42\n"
        msg = kc.session.msg("connect_request")
        kc.shell_channel.send(msg)
        reply = kc.get_shell_msg(timeout=30)
        assert reply["parent_header"]["msg_id"] == msg["header"]["msg_id"]
        assert {p: reply["content"][p] for p in PORTS} == ports  # the ports it bound, not the file's 0s
        info = kc.kernel_info(reply=True, timeout=30)["content"]
        assert info["protocol_version"] == "5.6"
        shut_down(kc, kernel)
    finally:
        kernel.stop()
        registrar.close()


def test_many_kernels_register_on_one_socket_at_once():
    """8 kernels started together, one long-lived registration socket (the JEP's recommendation for a
    multi-kernel launcher): each registers its own ports under its kernel_id and answers."""
    registrar = Registrar("jep")
    kernels = {f"k{i}": KernelProcess(registrar.file(f"k{i}")) for i in range(8)}
    clients = {}
    try:
        registered = {}
        deadline = time.monotonic() + START_TIMEOUT * 2
        while len(registered) < len(kernels):
            route, ports, kernel_id = registrar.receive(max(1.0, deadline - time.monotonic()))
            assert kernel_id in kernels and kernel_id not in registered
            registered[kernel_id] = ports
            registrar.ack(route)
        all_ports = [p for ports in registered.values() for p in ports.values()]
        assert len(set(all_ports)) == len(all_ports) == 40
        for kernel_id, ports in registered.items():
            clients[kernel_id] = client(registrar, ports)
        for kernel_id, kc in clients.items():
            assert run_cell(kc, f"print('{kernel_id}')") == f"{kernel_id}\n"
        for kernel_id, kc in clients.items():
            shut_down(kc, kernels[kernel_id])
    finally:
        for kc in clients.values():
            kc.stop_channels()
        for kernel in kernels.values():
            kernel.stop()
        registrar.close()


@pytest.mark.parametrize("listening", [True, False], ids=["never_acknowledged", "nobody_listening"])
def test_no_acknowledgement_stops_the_kernel_clearly(listening):
    registrar = Registrar("jep")
    conn = registrar.file()
    if not listening:
        registrar.close()
    kernel = KernelProcess(conn, env={"IPYMINI_HANDSHAKE_TIMEOUT": "2"})
    try:
        if listening:
            registrar.receive()  # it registers, and gets no answer
        assert kernel.wait(START_TIMEOUT) == 1
        log = kernel.log_text()
        assert "kernel handshake failed, stopping: no acknowledgement from the registration socket " \
               f"tcp://127.0.0.1:{registrar.port} within 2 s (IPYMINI_HANDSHAKE_TIMEOUT)" in log, log
        assert "Traceback" not in log, log
    finally:
        kernel.stop()
        if listening:
            registrar.close()


@pytest.mark.parametrize("style, problem, expected", [
    ("jep", "bad signature", "has an invalid signature"),
    ("kallichore", "bad signature", "was refused: invalid signature"),
    ("kallichore", "status error", "answered handshake_reply 'error'"),
])
def test_a_bad_acknowledgement_stops_the_kernel(style, problem, expected):
    registrar = Registrar(style)
    kernel = KernelProcess(registrar.file())
    try:
        route, _, _ = registrar.receive()
        registrar.ack(route, signature_ok=problem != "bad signature",
                      status="error" if problem == "status error" else "ok")
        assert kernel.wait(START_TIMEOUT) == 1
        log = kernel.log_text()
        assert "kernel handshake failed, stopping:" in log and expected in log, log
    finally:
        kernel.stop()
        registrar.close()


def test_which_files_ask_for_a_handshake():
    """In-process: the file decides (a classic file is served as before, whatever else it holds)."""
    classic = {"transport": "tcp", "ip": "127.0.0.1", "key": "k", "signature_scheme": "hmac-sha256",
               **{p: 5000 + i for i, p in enumerate(PORTS)}}
    assert registration(dict(classic)) is None
    assert registration({**classic, "registration_port": 6000}) is None
    jep = {"kernel_id": "id", "transport": "tcp", "registration_ip": "10.0.0.1", "registration_port": "6000",
           "signature_scheme": "hmac-sha256", "key": "k"}
    r = registration(jep)
    assert (r.style, r.address, r.kernel_id) == ("jep", "tcp://10.0.0.1:6000", "id")
    assert jep["ip"] == "10.0.0.1" and all(jep[p] == 0 for p in PORTS)  # binds where it registers
    kallichore = {"transport": "tcp", "signature_scheme": "hmac-sha256", "ip": "127.0.0.1", "key": "k",
                  "registration_port": 6001}
    r = registration(kallichore)
    assert (r.style, r.address) == ("kallichore", "tcp://127.0.0.1:6001")
    r = registration({**kallichore, **{p: 0 for p in PORTS}})  # ark's file: ports present as 0
    assert r.style == "kallichore"
    with pytest.raises(HandshakeError, match="is not a port"):
        registration({**kallichore, "registration_port": "many"})
