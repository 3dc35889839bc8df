"""The Enterprise Gateway launcher (`python -m ipymini.remote`) against EG's side of the contract.

The test plays EG: it makes an RSA key pair, listens on a response address, starts the launcher as EG
would, decrypts the payload exactly as EG's ResponseManager does (version 1: PKCS#1 v1.5 for the AES
key, AES-ECB + PKCS#7 for the connection info), connects with jupyter_client, and sends requests on the
communication port as EG's process proxy does (connect, write JSON, close). The full EG + SSH run is
test_enterprise_gateway.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from jupyter_client import BlockingKernelClient

from harness import gateway as gh  # (conftest's harness import puts the repo on PYTHONPATH)
from harness.kernel import reply_to

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(120)]


class FakeGateway:
    """EG's response side: an RSA key and a listening response socket on 127.0.0.1."""

    def __init__(self):
        from Cryptodome.PublicKey import RSA

        self.key = RSA.generate(1024)
        pem = self.key.publickey().export_key("PEM").decode()
        self.public_key = "".join(line for line in pem.splitlines() if "PUBLIC KEY" not in line)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(30)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def receive(self) -> dict:
        """Accept one payload and decrypt it as EG's ResponseManager._decode_payload does."""
        from Cryptodome.Cipher import AES, PKCS1_v1_5
        from Cryptodome.Util.Padding import unpad

        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(30)
            data = b""
            while chunk := conn.recv(1024):
                data += chunk
        envelope = json.loads(base64.b64decode(data))
        assert envelope["version"] == 1
        aes_key = PKCS1_v1_5.new(self.key).decrypt(base64.b64decode(envelope["key"]), b"\x42")
        plain = unpad(AES.new(aes_key, AES.MODE_ECB).decrypt(base64.b64decode(envelope["conn_info"])), 16)
        return json.loads(plain)

    def close(self):
        self.sock.close()


def comm_request(port: int, request: dict) -> None:
    """What EG's `_send_listener_request` does."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(json.dumps(request).encode())


def wait_started(kc, msg_id: str, timeout: float = 15) -> None:
    """Wait until the kernel has begun executing `msg_id` (its execute_input), then a little more."""
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.01))
        if msg["msg_type"] == "execute_input" and msg["parent_header"].get("msg_id") == msg_id:
            time.sleep(0.3)
            return


def launcher_cmd(eg: FakeGateway, kernel_id: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ipymini.remote", "--RemoteProcessProxy.kernel-id", kernel_id,
            "--RemoteProcessProxy.response-address", eg.address, "--RemoteProcessProxy.public-key", eg.public_key,
            "--RemoteProcessProxy.spark-context-initialization-mode", "none", "--ip", "127.0.0.1", *extra]


@pytest.fixture
def launched(tmp_path):
    """Start a launcher; yields (launcher Popen, decrypted connection info, client)."""
    eg = FakeGateway()
    kid = f"launcher-test-{os.getpid()}-{time.monotonic_ns()}"
    log = open(tmp_path / "launcher.log", "w")
    proc = subprocess.Popen(launcher_cmd(eg, kid, "--port-range", "30000..31999"), stdout=log,
                            stderr=subprocess.STDOUT)
    kc = None
    try:
        info = eg.receive()
        kc = BlockingKernelClient()
        kc.load_connection_info(info)
        kc.start_channels(hb=False)  # without a manager, a slow first heartbeat reads as 'died'
        kc.wait_for_ready(timeout=60)
        yield proc, info, kc
    finally:
        if kc is not None:
            kc.stop_channels()
        eg.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        log.close()
        assert not gh.kill_leftovers(kid), "launcher test left processes behind"


def test_payload_and_ports(launched):
    proc, info, kc = launched
    assert set(info) >= {"shell_port", "iopub_port", "stdin_port", "hb_port", "control_port", "ip", "key",
                         "transport", "signature_scheme", "pid", "pgid", "comm_port", "kernel_id"}
    assert info["kernel_id"].startswith("launcher-test-")
    ports = [info[k] for k in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port", "comm_port")]
    assert len(set(ports)) == 6 and all(30000 <= p <= 31999 for p in ports), ports
    assert info["pgid"] == info["pid"] != proc.pid  # the kernel runs as a child, leading its own group
    reply = kc.execute_interactive("import os; print(os.getpid(), os.getppid())", timeout=20)
    assert reply["content"]["status"] == "ok"


def test_signals_poll_and_shutdown(launched):
    proc, info, kc = launched
    comm_request(info["comm_port"], {"signum": 0})  # EG's poll: answered by accepting, nothing sent
    msg_id = kc.execute("import time; time.sleep(30)")
    wait_started(kc, msg_id)  # an interrupt while idle does nothing
    comm_request(info["comm_port"], {"signum": int(signal.SIGINT)})
    reply = reply_to(kc, msg_id, timeout=15)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    # EG's shutdown: shutdown_request to the kernel, then {"shutdown": 1} to the launcher
    kc.shutdown()
    comm_request(info["comm_port"], {"shutdown": 1})
    assert proc.wait(15) == 0
    assert not gh.pid_alive(info["pid"])
    assert not gh.port_open(info["comm_port"])


def test_listener_shutdown_ends_a_kernel_that_was_not_asked(launched):
    proc, info, kc = launched
    comm_request(info["comm_port"], {"shutdown": 1})  # no shutdown_request: SIGTERM after the grace period
    assert proc.wait(30) == 0
    assert not gh.pid_alive(info["pid"])


def test_sigterm_to_launcher_ends_kernel(launched):
    proc, info, kc = launched
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    gh.wait_for(lambda: not gh.pid_alive(info["pid"]), 10, "the kernel to exit")


def test_kernel_exit_ends_launcher(launched):
    proc, info, kc = launched
    kc.execute("import os; os._exit(3)")
    assert proc.wait(20) == 3
    assert not gh.port_open(info["comm_port"])  # EG's next poll sees the kernel gone


def test_kernel_signal_kill_via_pgid(launched):
    """EG's fallback without a communication port: `kill -9 -PGID` over SSH; the launcher follows."""
    proc, info, kc = launched
    os.killpg(info["pgid"], signal.SIGKILL)
    assert proc.wait(20) == 128 + signal.SIGKILL  # the shell's convention for a killed child
    assert not gh.port_open(info["comm_port"])


@pytest.mark.parametrize("args, message", [
    (["--port-range", "30000..30010"], "smaller than 1000 ports"),
    (["--port-range", "nonsense"], "not of the form LO..HI"),
])
def test_bad_arguments_are_reported(args, message, tmp_path):
    eg = FakeGateway()
    try:
        proc = subprocess.run(launcher_cmd(eg, "bad-args-test", *args), capture_output=True, text=True,
                              timeout=60)
    finally:
        eg.close()
    assert proc.returncode == 1
    assert message in proc.stderr


def test_without_public_key_refuses(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ipymini.remote", "--kernel-id", "k", "--response-address",
                           "127.0.0.1:9"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--public-key is required" in proc.stderr


def test_environment_fallbacks(tmp_path):
    """EG's container launchers pass KERNEL_ID, RESPONSE_ADDRESS, PUBLIC_KEY, PORT_RANGE as env vars."""
    eg = FakeGateway()
    env = {**os.environ, "KERNEL_ID": f"env-test-{os.getpid()}", "RESPONSE_ADDRESS": eg.address,
           "PUBLIC_KEY": eg.public_key, "PORT_RANGE": "0..0", "IPYMINI_KERNEL_IP": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "ipymini.remote"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        info = eg.receive()
        assert info["kernel_id"] == env["KERNEL_ID"] and info["ip"] == "127.0.0.1"
        comm_request(info["comm_port"], {"shutdown": 1})
        assert proc.wait(30) == 0
    finally:
        eg.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        gh.kill_leftovers(env["KERNEL_ID"])

