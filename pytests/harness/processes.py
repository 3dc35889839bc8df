"""Processes from outside, through /proc: resident memory, waiting for one to end, liveness, finding
and killing leftovers by their command line."""

from __future__ import annotations

import os
import signal
import time


_NO_DEFAULT = object()


def rss_mb(pid: int, missing=_NO_DEFAULT) -> float:
    """Resident memory of process `pid` in MiB (VmRSS). A process with none left (a zombie) fails the
    test (AssertionError), or gives `missing` when one is passed (a soak run's figures)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    if missing is _NO_DEFAULT:
        raise AssertionError(f"process {pid} has no VmRSS (it has exited)")
    return missing


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    """Wait until process `pid` has exited (reaping it if it is our own child); whether it did in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap it if it is our own zombie child
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


def processes_matching(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live, non-zombie process whose command line contains `text`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if text in cmd and stat[stat.rfind(b")") + 2:][:1] != b"Z":
            found.append((int(name), cmd))
    return found


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def process_environ(pid: int) -> dict:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)


def kill_leftovers(text: str) -> list[tuple[int, str]]:
    """SIGKILL processes whose command line contains `text` (a kernel id this test created)."""
    found = processes_matching(text)
    for pid, _ in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return found
