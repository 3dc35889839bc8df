"""Enterprise Gateway end to end: EG starts ipymini over SSH with `python -m ipymini.remote`.

- sshd: Debian's openssh-server (apt-get installed when missing), on a free 127.0.0.1 port, with a
  host key, a client key and an authorized_keys file made for this test only (nothing under /etc or
  ~/.ssh is touched; EG runs with HOME in a temporary directory holding the key and known_hosts).
- EG: `jupyter_enterprise_gateway` in a venv of its own (.venv/eg: it pins jupyter_client<7,
  jupyter_server<2, pyzmq<25, which the test venv must not get), with `DistributedProcessProxy`,
  `remote_hosts=127.0.0.1`, a port range, and the repository's `ipymini_distributed` kernelspec whose
  argv[0] is this venv's Python (the "remote host's" ipymini). `eg_start.py` makes EG treat
  127.0.0.1 as remote, so launch, signals and kill go through SSH (see there why).
- The test then drives EG's REST API and kernel websocket: create, execute, interrupt, restart,
  shut down, and checks that no process of the kernel is left.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import REPO
from harness import gateway as gh
from harness.messages import result_text, stream_text

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(1500)]  # the first run builds .venv/eg (pip)

ARTIFACTS = REPO / "test-artifacts"
SSHD = "/usr/sbin/sshd"
EG_VENV = REPO / ".venv" / "eg"
EG_REQUIREMENT = "jupyter_enterprise_gateway==3.3.0"
TOKEN = "ipymini-eg-test"
PORT_RANGE = (20000, 21999)  # outside Linux's ephemeral range, so few collisions; EG wants >= 1000 ports
KERNEL_NAME = "ipymini_distributed"


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"`{' '.join(map(str, cmd))}` failed ({proc.returncode}):\n{proc.stdout[-2000:]}"
                             f"\n{proc.stderr[-2000:]}")
    return proc


def _ensure_sshd() -> None:
    """openssh-server from Debian, installed once when missing (like the browser tests' chromium)."""
    if os.path.exists(SSHD):
        return
    assert shutil.which("apt-get"), f"{SSHD} is missing and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], timeout=900, env=env)
    _run(["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"], timeout=900, env=env)
    assert os.path.exists(SSHD), "apt-get install openssh-server did not provide /usr/sbin/sshd"


def _eg_base_python() -> str:
    """The interpreter for EG's venv: EG 3.3 pins pyzmq<25, which has wheels only up to Python 3.11.

    IPYMINI_EG_PYTHON wins; else this Python when it is 3.11 or older, else python3.11/python3.10 from
    PATH. (The kernel side, launcher and ipymini, always runs on the test's own Python.)
    """
    if os.environ.get("IPYMINI_EG_PYTHON"):
        return os.environ["IPYMINI_EG_PYTHON"]
    if sys.version_info < (3, 12):
        return sys.executable
    for name in ("python3.11", "python3.10"):
        found = shutil.which(name)
        if found and subprocess.run([found, "-c", "import venv"], capture_output=True, timeout=60).returncode == 0:
            return found
    return sys.executable  # pip will try to build pyzmq 24 from source; the error says why if it fails


def _ensure_eg_venv() -> Path:
    """A venv with Enterprise Gateway, made once and kept under .venv/eg (marker: requirement + base)."""
    base = _eg_base_python()
    python = EG_VENV / "bin" / "python"
    marker = EG_VENV / ".ipymini-eg-installed"
    stamp = f"{EG_REQUIREMENT} {base}"
    if marker.exists() and marker.read_text() == stamp and python.exists():
        return python
    if EG_VENV.exists():
        shutil.rmtree(EG_VENV)
    _run([base, "-m", "venv", str(EG_VENV)], timeout=300)
    _run([str(python), "-m", "pip", "install", "-q", EG_REQUIREMENT], timeout=1200)
    marker.write_text(stamp)
    return python


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A private sshd on 127.0.0.1; yields (port, dir with the client's HOME)."""
    _ensure_sshd()
    tmp = tmp_path_factory.mktemp("sshd")
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    os.chmod(home / ".ssh", 0o700)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "host_key")], timeout=60)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "id_ed25519")], timeout=60)
    shutil.copy(home / ".ssh" / "id_ed25519.pub", tmp / "authorized_keys")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    user = getpass.getuser()
    config = tmp / "sshd_config"

    def command(port: int) -> list[str]:
        config.write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {tmp / 'host_key'}",
            f"PidFile {tmp / 'sshd.pid'}", f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "UsePAM no", "StrictModes no", f"AllowUsers {user}",
            "X11Forwarding no", "AllowTcpForwarding no", "PrintMotd no", "LogLevel VERBOSE", ""]))
        return [SSHD, "-D", "-e", "-f", str(config)]

    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "eg-sshd.log"
    log.write_text("")
    server = gh.Server("sshd", command, log, timeout=30)
    host_key = (tmp / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{server.port} {host_key[0]} {host_key[1]}\n")
    try:
        yield server.port, home
    finally:
        server.stop()


@pytest.fixture(scope="module")
def eg(sshd, tmp_path_factory):
    """Enterprise Gateway with the ipymini_distributed kernelspec; yields (base URL, kernel log dir)."""
    ssh_port, home = sshd
    eg_python = _ensure_eg_venv()
    tmp = tmp_path_factory.mktemp("eg")
    spec_dir = tmp / "share" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = json.loads((REPO / "share/enterprise-gateway/kernelspecs" / KERNEL_NAME / "kernel.json").read_text())
    # the "remote host" runs ipymini from this venv, bound to loopback only
    spec["argv"][0] = sys.executable
    spec["argv"] += ["--ip", "127.0.0.1"]
    spec["env"] = {"PYTHONPATH": str(REPO), "IPYMINI_LOG_LEVEL": "INFO"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    logs = tmp / "kernel-logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items()
           # EG exports its whole environment into the remote command: no SSH_* of ours over sshd's
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_PATH") and not k.startswith("SSH_")}
    env.update(HOME=str(home), JUPYTER_PATH=str(tmp / "share"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               EG_SSH_PORT=str(ssh_port), EG_REMOTE_USER=getpass.getuser(), EG_RESPONSE_IP="127.0.0.1",
               EG_RESPONSE_PORT=str(gh.free_port()), EG_KERNEL_LOG_DIR=str(logs), EG_KERNEL_LAUNCH_TIMEOUT="60",
               IPYMINI_TEST_SSH_HOSTS="127.0.0.1")
    log = ARTIFACTS / "eg-server.log"
    log.write_text("")
    server = gh.Server("Enterprise Gateway", lambda port: [
        str(eg_python), str(REPO / "pytests" / "eg_start.py"), "--ip=127.0.0.1", f"--port={port}",
        "--port_retries=0", f"--EnterpriseGatewayApp.auth_token={TOKEN}",
        "--EnterpriseGatewayApp.remote_hosts=127.0.0.1", "--EnterpriseGatewayApp.list_kernels=True",
        f"--EnterpriseGatewayApp.port_range={PORT_RANGE[0]}..{PORT_RANGE[1]}",
        f"--EnterpriseGatewayApp.default_kernel_name={KERNEL_NAME}", "--debug"], log, env=env,
        ready=lambda port: _eg_ready(port))
    try:
        yield f"http://127.0.0.1:{server.port}", logs
    finally:
        server.stop()


def _eg_ready(port: int) -> bool:
    try:
        status, specs = gh.Rest(f"http://127.0.0.1:{port}", TOKEN)("GET", "/api/kernelspecs", timeout=5)
    except OSError:
        return False
    return status == 200 and KERNEL_NAME in specs["kernelspecs"]


def _kernel_pid(ws: gh.KernelSocket) -> int:
    reply, iopub = ws.execute("import os; os.getpid()")
    assert reply["content"]["status"] == "ok", reply
    return int(result_text(iopub))


def test_kernel_over_ssh_execute_interrupt_restart_shutdown(eg, sshd):
    base, logs = eg
    ssh_port = sshd[0]
    rest = gh.Rest(base, TOKEN)
    t0 = time.monotonic()
    status, kernel = rest("POST", "/api/kernels", {"name": KERNEL_NAME,
                                                  # EG refuses kernels for 'root' (unauthorized_users)
                                                  "env": {"KERNEL_USERNAME": "ipymini-test"}})
    assert status == 201, kernel
    kid = kernel["id"]
    started = time.monotonic() - t0
    try:
        ws = gh.KernelSocket(base, TOKEN, kid)
        try:
            info = ws.wait_ready()
            assert info["content"]["implementation"] == "ipymini"

            # executed by the kernel the launcher started through sshd
            reply, iopub = ws.execute("print('hello from ipymini via EG')\nx = 41\nx + 1")
            assert reply["content"]["status"] == "ok"
            assert stream_text(iopub) == "hello from ipymini via EG\n"
            assert result_text(iopub) == "42"
            pid = _kernel_pid(ws)
            env = gh.process_environ(pid)
            ssh_connection = env.get(b"SSH_CONNECTION", b"").split()
            assert ssh_connection[-1:] == [str(ssh_port).encode()], "the kernel was not started through our sshd"
            assert env[b"KERNEL_ID"].decode() == kid
            launcher = [p for p, cmd in gh.processes_matching(f"--kernel-id {kid}") if "ipymini.remote" in cmd]
            assert len(launcher) == 1, gh.processes_matching(kid)
            kernel_log = (logs / f"kernel-{kid}.log").read_text()
            assert "connection info sent" in kernel_log, kernel_log
            # every port (five ZMQ ports and the communication port) inside EG's port range
            conn = json.loads(Path(_connection_file(pid)).read_text())
            for name in ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"):
                assert PORT_RANGE[0] <= conn[name] <= PORT_RANGE[1], (name, conn[name])

            # interrupt over REST: EG → communication port → launcher → SIGINT to the kernel's group
            msg_id = ws.send("execute_request", {"code": "import time\ntime.sleep(60)", "silent": False})
            ws.wait_for_iopub(msg_id, "execute_input")  # an interrupt while idle does nothing
            time.sleep(0.3)
            t_int = time.monotonic()
            status, _ = rest("POST", f"/api/kernels/{kid}/interrupt")
            assert status == 204
            reply, iopub = ws.collect(msg_id, timeout=20)
            interrupt_s = time.monotonic() - t_int
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
            assert _kernel_pid(ws) == pid  # same kernel, still alive
        finally:
            ws.close()

        # restart over REST: a new kernel process (new launcher over SSH), the old ones gone
        t_restart = time.monotonic()
        status, _ = rest("POST", f"/api/kernels/{kid}/restart")
        assert status == 200
        restart_s = time.monotonic() - t_restart
        ws = gh.KernelSocket(base, TOKEN, kid)
        try:
            ws.wait_ready()
            reply, iopub = ws.execute("'x' in globals()")
            assert result_text(iopub) == "False"
            new_pid = _kernel_pid(ws)
            assert new_pid != pid
            gh.wait_for(lambda: not gh.pid_alive(pid) and not gh.pid_alive(launcher[0]), 20,
                        "the old kernel and launcher to exit after restart")
            new_launcher = [p for p, cmd in gh.processes_matching(f"--kernel-id {kid}") if "ipymini.remote" in cmd]
            assert len(new_launcher) == 1
        finally:
            ws.close()

        status, _ = rest("DELETE", f"/api/kernels/{kid}")
        assert status == 204
        gh.wait_for(lambda: not gh.processes_matching(kid), 30, "every process of the kernel to exit")
        status, kernels = rest("GET", "/api/kernels")
        assert kid not in [k["id"] for k in kernels]
        print(f"\nEG over SSH: create {started:.1f}s, interrupt {interrupt_s:.2f}s, restart {restart_s:.1f}s")
    finally:
        left = gh.kill_leftovers(kid)
        assert not left, f"processes left after the test: {left}"


def _connection_file(pid: int) -> str:
    cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    return cmd[cmd.index(b"-f") + 1].decode()
