"""Comms: the kernel side of the Jupyter comm protocol, for ipywidgets and every other `comm` user.

Owns the comm table (the open comms and the registered targets), the `Comm` class that turns a comm's
open/send/close into iopub messages, and the handlers for the client's comm_open / comm_msg /
comm_close. `install` makes the `comm` package hand out these (`comm.create_comm`,
`comm.get_comm_manager`), so ipywidgets, bqplot, ipympl or plotly find them without patches.

- Output: a callback runs under the comm message that triggered it (the caller makes it the current
  request, see routing.py), so its prints, displays and errors are parented to that message.
  An exception in a callback becomes an `error` output of that message; the kernel carries on.
- Bad input: messages for unknown comms and malformed comm messages are logged and dropped.
- Threads: the table is guarded by a lock and nothing assumes the main thread: user code may open or
  send on comms from any thread, and comm messages may be handled on a subshell's thread.
- Late frontends: the table outlives the iopub messages, so a frontend that connects after a widget
  was created finds it through comm_info (and ipywidgets' control comm then sends it the states).
"""

from __future__ import annotations

import logging
import threading

import comm
from comm.base_comm import BaseComm
from comm.base_comm import CommManager as BaseCommManager

from ipymini import patches
from ipymini.kernelcode import calls_user_code
from ipymini.output import routing

log = logging.getLogger("ipymini")

_manager: CommManager | None = None


def install(manager: CommManager) -> None:
    """Make the `comm` package return ipymini's comms and `manager` (call before user code runs)."""
    global _manager
    _manager = manager
    patches.patch(comm, "create_comm", create_comm)
    patches.patch(comm, "get_comm_manager", get_comm_manager)


def create_comm(*args, **kwargs) -> Comm:
    """`comm.create_comm` in ipymini: a Comm that publishes through the kernel."""
    return Comm(*args, **kwargs)


def get_comm_manager() -> CommManager | None:
    """`comm.get_comm_manager` in ipymini: the kernel's comm manager."""
    return _manager


def as_frames(buffers) -> list | None:
    """Binary buffers as bytes frames. Copied: the caller may change its array right after sending."""
    if not buffers:
        return None
    return [b if isinstance(b, bytes) else memoryview(b).tobytes() for b in buffers]


class Comm(BaseComm):
    """One end of a comm, living in the kernel; messages go out on iopub."""

    def __init__(self, *args, kernel=None, **kwargs):
        self._manager = _manager  # whose publisher this comm's messages go through
        # ipykernel's `comm.kernel`, for code that reads it; ipymini never uses it
        self.kernel = kernel if kernel is not None else (_manager.kernel if _manager else None)
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        """Publish a comm_open / comm_msg / comm_close for this comm, parented to the current request."""
        publisher = self._manager.publisher if self._manager is not None else None
        if publisher is None:
            return  # not inside an ipymini kernel: nobody to talk to
        content = {"data": {} if data is None else data, "comm_id": self.comm_id, **keys}
        publisher.publish(msg_type, content, metadata=metadata or {}, buffers=as_frames(buffers))

    def __del__(self):
        # The garbage collector may run this inside any lock of any thread (the iopub queue's
        # included), so the close message is handed to the kernel's loop instead of published here.
        manager = self._manager
        if self._closed or manager is None or manager.publisher is None:
            return
        self._closed = True
        content = {"data": self._close_data or {}, "comm_id": self.comm_id}
        try:
            manager.run_soon(manager.publisher.publish, "comm_close", content)
        except Exception:
            pass  # no loop (shutting down): the frontend drops the comm with the kernel


class CommManager(BaseCommManager):
    """The kernel's comm table and the handlers for comm messages from clients (see module docstring)."""

    def __init__(self, publisher=None, run_soon=None, kernel=None):
        """`publisher`: where comm messages go (output/publisher.Publisher); `run_soon(fn, *args)`:
        run on the kernel's loop, from any thread; `kernel`: what user code sees as `comm.kernel`.
        `shell` (set once it exists) shows a failing callback's traceback."""
        super().__init__()
        self.publisher = publisher
        self.run_soon = run_soon
        self.kernel = kernel
        self.shell = None
        self._lock = threading.Lock()

    # -- the table (any thread) --

    def register_target(self, target_name: str, f) -> None:
        """Call `f(comm, msg)` when a client opens a comm with `target_name` (f may be an import string)."""
        probe = BaseCommManager()  # resolves import strings without touching our table
        probe.register_target(target_name, f)
        with self._lock:
            self.targets[target_name] = probe.targets[target_name]

    def unregister_target(self, target_name: str, f=None):
        with self._lock:
            return self.targets.pop(target_name, None)

    def register_comm(self, comm: BaseComm) -> str:
        with self._lock:
            self.comms[comm.comm_id] = comm
        return comm.comm_id

    def unregister_comm(self, comm: BaseComm) -> None:
        with self._lock:
            self.comms.pop(comm.comm_id, None)

    def get_comm(self, comm_id: str) -> BaseComm | None:
        """The open comm `comm_id`, or None (logged) if there is none."""
        with self._lock:
            found = self.comms.get(comm_id)
        if found is None:
            log.warning("dropped a message for unknown comm %r", comm_id)
        return found

    def comms_info(self, target_name: str | None = None) -> dict:
        """comm_info_reply's `comms`: {comm_id: {"target_name": ...}}, optionally of one target only."""
        with self._lock:
            return {cid: {"target_name": c.target_name} for cid, c in self.comms.items()
                    if target_name is None or c.target_name == target_name}

    # -- messages from clients (run under the message as the current request) --

    def handle_request(self, req) -> None:
        """Kernel entry point for a shell comm_open / comm_msg / comm_close (a Request)."""
        msg = req.msg
        data = msg["content"].get("data", {})
        if data is None:
            msg["content"]["data"] = {}
        elif not isinstance(data, dict):
            log.warning("dropped a %s whose data is not a JSON object", req.msg_type)
            return
        msg.setdefault("buffers", [])
        handler = {"comm_open": self.comm_open, "comm_msg": self.comm_msg,
                   "comm_close": self.comm_close}[req.msg_type]
        handler(None, req.idents, msg)

    def comm_open(self, stream, ident, msg) -> None:
        """A client opened a comm: create our end and give it to the target's callback."""
        content = msg["content"]
        target_name = content["target_name"]
        new = Comm(comm_id=content["comm_id"], primary=False, target_name=target_name)
        with self._lock:  # checked and registered at once: two opens may race on two subshells
            target = self.targets.get(target_name)
            taken = new.comm_id in self.comms
            if not taken:
                self.comms[new.comm_id] = new
        if taken:
            new._closed = True  # never sends a close for the comm that holds this id
            log.warning("dropped a comm_open for comm %r, which is already open", content["comm_id"])
            return
        if target is None:
            log.warning("no comm target %r is registered: closing comm %r", target_name, new.comm_id)
        elif self._run_callback(target, new, msg):
            return
        new.close()

    def comm_msg(self, stream, ident, msg) -> None:
        """A client sent a message on a comm: give it to the comm's on_msg callback."""
        found = self.get_comm(msg["content"]["comm_id"])
        if found is not None:
            self._run_callback(found.handle_msg, msg)

    def comm_close(self, stream, ident, msg) -> None:
        """A client closed a comm: forget it and call its on_close callback."""
        comm_id = msg["content"]["comm_id"]
        with self._lock:
            found = self.comms.pop(comm_id, None)
        if found is None:
            log.warning("dropped a comm_close for unknown comm %r", comm_id)
            return
        found._closed = True
        self._run_callback(found.handle_close, msg)

    @calls_user_code  # an interrupt may stop the callback, never this bookkeeping
    def _run_callback(self, fn, *args) -> bool:
        """Run user code for a comm; its exception (even an interrupt) becomes an error output."""
        # Mark the shell as running user code, so an interrupt request stops a callback stuck in it.
        worker = getattr(routing.current_request.get(), "worker", None)
        computing = worker.computing() if worker is not None and not worker.executing else None
        if computing is not None:
            computing.__enter__()
        # Errors shown meanwhile (by us or by ipywidgets itself) are this message's, not those of a
        # cell that awaits while the message is handled.
        shell = self.shell
        cell_error = getattr(shell, "last_error", None)
        try:
            fn(*args)
            return True
        except BaseException as e:
            log.info("a comm callback raised %s: %s", type(e).__name__, e)
            self._show_error(shell)
            return False
        finally:
            if computing is not None:
                computing.__exit__(None, None, None)
            if shell is not None:
                shell.last_error = cell_error

    def _show_error(self, shell) -> None:
        if shell is None:
            log.exception("error in a comm callback")
            return
        try:
            shell.showtraceback()
        except Exception:
            log.exception("error in a comm callback (and in showing it)")
