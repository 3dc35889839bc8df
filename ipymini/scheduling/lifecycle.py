"""Process lifecycle: the kernel's process group, its children, its parent, and how it ends.

- The kernel makes itself a process-group leader, so the processes user code starts (and that stay in
  the group) can be stopped with it: on shutdown, restart or SIGTERM they get SIGTERM, then SIGKILL.
- When started by a manager that sets JPY_PARENT_PID, the kernel stops if that parent dies.
- SIGTERM asks for a clean shutdown; a watchdog ends the process if the clean path does not finish.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger("ipymini")


def become_group_leader() -> None:
    """Lead a process group of our own (jupyter_client already starts kernels in a new session)."""
    try:
        if os.getpgid(0) != os.getpid():
            os.setpgid(0, 0)
    except OSError as e:
        log.info("could not become a process-group leader: %s", e)


def _group_members() -> list[int]:
    """Other live processes in our process group (Linux /proc; elsewhere: unknown, so none)."""
    me = os.getpid()
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == me and fields[0] != b"Z":
            members.append(int(name))
    return members


def stop_children(grace: float = 1.0) -> None:
    """SIGTERM every other process in our group, then SIGKILL what is left after `grace` seconds.

    Safe from any thread: the shutdown watchdog calls it off the main thread, where the kernel cannot
    set aside its own SIGTERM handler (signal.signal raised there, and the watchdog died without
    ending the process), so there each member is signalled by pid instead of the whole group."""
    if os.getpgid(0) != os.getpid():
        return  # not our group: never signal processes we do not own
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            os.killpg(os.getpid(), signal.SIGTERM)
        except OSError:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
    else:
        for pid in _group_members():
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _group_members():
            return
        time.sleep(0.02)
    for pid in _group_members():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def watch_parent(on_parent_exit) -> None:
    """Call `on_parent_exit` once if the process named by JPY_PARENT_PID goes away."""
    try:
        parent = int(os.environ.get("JPY_PARENT_PID", "0"))
    except ValueError:
        return
    if parent <= 1:
        return

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                log.warning("parent process %d is gone; shutting down", parent)
                on_parent_exit()
                return

    threading.Thread(target=watch, name="ipymini-parent-watch", daemon=True).start()


def start_watchdog(seconds: float = 10.0) -> None:
    """End the process if a requested shutdown has not finished within `seconds`."""

    def expire():
        log.error("shutdown did not finish in %.0f s; exiting", seconds)
        stop_children(grace=0.5)
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
