"""The Enterprise Gateway kernel launcher for ipymini: `python -m ipymini.remote ...`.

Options as EG's Python launcher accepts them (`--kernel-id`, `--response-address`, `--public-key`,
`--port-range`, each also as `--RemoteProcessProxy.<name>`; Spark/cluster options are accepted and
ignored), with EG's container environment variables (KERNEL_ID, RESPONSE_ADDRESS, PUBLIC_KEY,
PORT_RANGE, optionally EG_-prefixed) as fallbacks. `--ip` says where the kernel binds (default
0.0.0.0, as EG's launcher); arguments after `--` go to the kernel (`--Class.trait=value`).

The kernel runs as a child process leading its own process group: the pid and pgid sent to EG are
the kernel's, so EG's signals (through the communication port, or `kill` over SSH when it has none)
reach the kernel and the processes it started. The launcher ends when the kernel ends; on EG's
shutdown request or on SIGTERM it gives the kernel a grace period, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid

from ipymini import settings

from . import payload, ports
from .listener import CommListener

log = logging.getLogger("ipymini.remote")

SHUTDOWN_GRACE = 5.0  # seconds the kernel gets to finish EG's shutdown_request before SIGTERM
TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
RESPONSE_TIMEOUT = 30.0  # seconds to connect and send the connection info to EG


def parse_args(argv: list[str]) -> argparse.Namespace:
    kernel_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, kernel_args = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(prog="python -m ipymini.remote",
                                     description="Enterprise Gateway kernel launcher for ipymini",
                                     allow_abbrev=False)
    for name, help_text in (("kernel-id", "the kernel's id as EG knows it"),
                            ("response-address", "IP:PORT where EG waits for the connection info"),
                            ("public-key", "EG's RSA public key (base64 DER) to encrypt it with"),
                            ("port-range", "LO..HI: every port the kernel uses must be inside")):
        dest = name.replace("-", "_")
        parser.add_argument(f"--{name}", f"--RemoteProcessProxy.{name}", dest=dest, help=help_text)
    for ignored in ("spark-context-initialization-mode", "cluster-type"):
        parser.add_argument(f"--{ignored}", f"--RemoteProcessProxy.{ignored}", help=argparse.SUPPRESS)
    parser.add_argument("--kernel-class-name", help=argparse.SUPPRESS)
    parser.add_argument("--ip", default=settings.value("IPYMINI_KERNEL_IP"),
                        help="address the kernel binds (default 0.0.0.0)")
    parser.add_argument("connection_file", nargs="?", help=argparse.SUPPRESS)  # EG's deprecated form
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        log.warning("ignoring unknown launcher arguments: %s", unknown)
    args.kernel_args = kernel_args
    env = os.environ.get
    args.kernel_id = args.kernel_id or env("KERNEL_ID")
    args.response_address = args.response_address or env("RESPONSE_ADDRESS") or env("EG_RESPONSE_ADDRESS")
    args.public_key = args.public_key or env("PUBLIC_KEY") or env("EG_PUBLIC_KEY")
    args.port_range = args.port_range or env("PORT_RANGE") or env("EG_PORT_RANGE")
    if args.spark_context_initialization_mode not in (None, "none"):
        log.warning("ipymini does not create Spark contexts; ignoring --spark-context-initialization-mode %s",
                    args.spark_context_initialization_mode)
    if args.kernel_class_name:
        log.warning("ipymini has no kernel class option; ignoring --kernel-class-name %s", args.kernel_class_name)
    return args


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"response address {address!r} is not of the form IP:PORT")
    return host, int(port)


def write_connection_file(kernel_id: str | None, ip: str, kernel_ports: list[int]) -> tuple[str, dict]:
    """A fresh connection file (mode 0600, random key) for the kernel; returns its path and content."""
    info = dict(zip(("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"), kernel_ports))
    info.update(ip=ip, key=str(uuid.uuid4()), transport="tcp", signature_scheme="hmac-sha256",
                kernel_name="")
    fd, path = tempfile.mkstemp(prefix=f"kernel-{kernel_id or 'eg'}_", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    return path, info


def send_connection_info(address: str, info: dict, public_key: str) -> None:
    """Encrypt `info` for EG and send it to `address` (one connection, closed when written)."""
    data = payload.encrypt_connection_info(info, public_key)
    with socket.create_connection(parse_address(address), timeout=RESPONSE_TIMEOUT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)


class KernelProcess:
    """The ipymini kernel child: started in its own process group, signalled as a group."""

    def __init__(self, connection_file: str, kernel_args: list[str]):
        env = {**os.environ, "JPY_PARENT_PID": str(os.getpid())}  # the kernel stops if we die
        cmd = [sys.executable, "-m", "ipymini", "-f", connection_file, *kernel_args]
        log.info("starting kernel: %s", cmd)
        self.proc = subprocess.Popen(cmd, env=env, process_group=0, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self._lock = threading.RLock()  # the listener thread and signal handlers signal too

    def signal(self, signum: int) -> None:
        """Send `signum` to the kernel's process group, while the kernel is not yet reaped (so the
        group id cannot belong to anyone else)."""
        with self._lock:
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.pid, signum)
            except ProcessLookupError:
                pass
            except PermissionError as e:
                log.warning("could not send signal %d to the kernel: %s", signum, e)

    def end(self, grace: float) -> int:
        """Wait `grace` seconds for the kernel to exit, then SIGTERM, then SIGKILL; its exit code."""
        for signum, wait in ((None, grace), (signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, TERM_GRACE)):
            if signum is not None:
                log.info("kernel still running: sending %s", signal.Signals(signum).name)
                self.signal(signum)
            try:
                return self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        return self.proc.wait(TERM_GRACE)


def run(args: argparse.Namespace) -> int:
    if args.response_address and not args.public_key:
        raise SystemExit("--public-key is required with --response-address")
    if args.response_address:
        payload.check_crypto()
    port_range = ports.parse_port_range(args.port_range)
    kernel_ports = ports.pick_ports(5, args.ip, port_range)
    comm_sock = ports.bind_socket(args.ip, port_range)
    path, info = write_connection_file(args.kernel_id, args.ip, kernel_ports)
    stop = threading.Event()
    reason: list[str] = []

    def request_stop(why: str) -> None:
        reason.append(why)
        stop.set()

    try:
        kernel = KernelProcess(path, args.kernel_args)
    except OSError:
        comm_sock.close()
        os.unlink(path)
        raise
    listener = CommListener(comm_sock, kernel.signal, lambda: request_stop("shutdown"))
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, lambda *_: request_stop("sigterm"))
    signal.signal(signal.SIGINT, lambda *_: kernel.signal(signal.SIGINT))  # an interrupt, passed on
    try:
        listener.start()
        if args.response_address:
            send_connection_info(args.response_address, {
                **info, "pid": kernel.pid, "pgid": kernel.pid, "comm_port": listener.port,
                "kernel_id": args.kernel_id}, args.public_key)
            log.info("connection info sent to %s (kernel pid %d, communication port %d)",
                     args.response_address, kernel.pid, listener.port)
        while kernel.proc.poll() is None and not stop.wait(0.1):
            pass
        if reason and reason[0] == "sigterm":
            kernel.signal(signal.SIGTERM)
            code = kernel.end(TERM_GRACE)
        else:
            code = kernel.end(SHUTDOWN_GRACE)
        log.info("kernel exited with %s (%s)", code, reason[0] if reason else "by itself")
        if reason:
            return 0
        return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell reports it
    except BaseException:
        kernel.signal(signal.SIGTERM)
        kernel.end(0)
        raise
    finally:
        listener.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            os.unlink(path)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    if not settings.check():  # a bad IPYMINI_* value: the kernel would not start either
        return 2
    logging.basicConfig(format="[%(levelname).1s %(asctime)s ipymini.remote] %(message)s",
                        level=settings.value("IPYMINI_LOG_LEVEL", default="INFO"))
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (RuntimeError, ValueError, OSError) as e:
        log.error("%s", e)
        return 1
