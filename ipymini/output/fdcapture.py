"""OS-level output capture: what subprocesses and C code write to file descriptors 1 and 2.

Owns fds 1 and 2 while the kernel runs: each is replaced by a pipe whose text is written into the
kernel's stdout/stderr stream, so `os.system`, `subprocess.run` without capture and C extensions show up
in the cell. A reader thread forwards output as it arrives (subprocesses write while the cell waits on
them); the pipes are also drained when a child process is waited for (`os.system`, `Popen.wait`,
`os.waitpid`), and by the streams whenever a write starts a new buffer, so output written before a
Python `print` comes out before it. C stdio buffers are flushed at the end of each cell. Processes
forked from the kernel (multiprocessing's fork workers) never read the pipes; their prints and
displays come through a pipe of their own (childpipe.py), read here with the others.
The kernel's own log keeps the original stderr. Turn it off with IPYMINI_CAPTURE_FD=0.
"""

from __future__ import annotations

import codecs
import logging
import os
import select
import threading
import time

from ipymini import patches, settings
from ipymini.kernelcode import calls_user_code
from ipymini.output import routing
from ipymini.output.childpipe import ChildPipe, read_available

log = logging.getLogger("ipymini")


class FDCapture:
    """Redirects fds 1 and 2 into KernelStreams (see module docstring), and reads what forked children
    send through their pipe (childpipe.py)."""

    def __init__(self, streams: dict, publish=None):
        self.streams = streams  # fd -> KernelStream
        self.publish = publish  # Publisher.publish, for the displays of forked children
        self.children: ChildPipe | None = None
        self.saved: dict[int, int] = {}  # fd -> duplicate of the original target
        self.pipes: dict[int, int] = {}  # read end -> fd
        self._decoders = {}
        self._lock = threading.Lock()
        self._drainer = None  # the thread draining now
        self._stop_r = self._stop_w = None
        self._thread = None
        self._libc_fflush = None

    def start(self) -> None:
        for fd in self.streams:
            self.saved[fd] = os.dup(fd)
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self.pipes[r] = fd
            self._decoders[fd] = codecs.getincrementaldecoder("utf-8")("replace")
        self.children = ChildPipe()
        self._pipe_fds = [*self.pipes, self.children.read_fd]
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._forward, name="ipymini-fd-capture", daemon=True)
        self._thread.start()
        self._drain_after_child_exits()

    def _drain_after_child_exits(self) -> None:
        """When a child process has been waited for, its output is all in the pipes: move it into
        the streams right then, so a print that follows `os.system(...)`, `subprocess.run(...)` or
        `os.waitpid(...)` comes after the child's output."""
        import subprocess

        system, wait = os.system, subprocess.Popen.wait
        capture = self

        @calls_user_code  # an interrupt may stop the wait, never the drain
        def system_then_drain(command):
            status = system(command)
            capture.drain(blocking=True)
            return status

        @calls_user_code
        def wait_then_drain(self, timeout=None):
            status = wait(self, timeout)
            capture.drain(blocking=True)
            return status

        waitpid = os.waitpid

        @calls_user_code
        def waitpid_then_drain(pid, options):
            reaped = waitpid(pid, options)
            if reaped[0]:  # a child ended (not WNOHANG finding none)
                capture.drain(blocking=True)
            return reaped

        system_then_drain.__doc__, wait_then_drain.__doc__ = system.__doc__, wait.__doc__
        waitpid_then_drain.__doc__ = waitpid.__doc__
        patches.patch(os, "system", system_then_drain)  # restored at shutdown (patches.restore_all)
        patches.patch(subprocess.Popen, "wait", wait_then_drain)
        patches.patch(os, "waitpid", waitpid_then_drain)  # os.fork children, multiprocessing's workers

    def original_stderr(self):
        """A text file on the original stderr, for the kernel's own log."""
        fd = self.saved.get(2)
        return os.fdopen(os.dup(fd), "w", buffering=1) if fd is not None else None

    def _forward(self) -> None:
        poller = select.poll()
        for r in self._pipe_fds:
            poller.register(r, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            events = poller.poll()
            if any(fd == self._stop_r for fd, _ in events):
                return
            if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in events):
                return
            try:
                self.drain(blocking=True)
            except MemoryError:  # the kernel's memory is full for a moment (a cell's threads dying
                time.sleep(0.01)  # of MemoryError): this thread must live on, or fds 1/2 go unread

    def drain(self, blocking: bool = False) -> None:
        """Move whatever the pipes hold into the streams. blocking=False skips it if another thread
        is at it; blocking=True waits for that thread, so text it has taken out of the pipes is in
        the streams before the caller goes on."""
        if self._drainer == threading.get_ident():
            return  # called again from the streams while this thread drains
        if not self._lock.locked():
            try:  # one syscall instead of a failing read per pipe (this runs at every cell's end)
                if not select.select(self._pipe_fds, (), (), 0)[0]:
                    return
            except (OSError, ValueError):
                return  # the pipes are closed: capture has stopped
        if not self._lock.acquire(blocking):
            return
        try:  # (at once: a MemoryError before it would leave the lock held for ever)
            self._drainer = threading.get_ident()
            for r, fd in self.pipes.items():
                data = read_available(r)
                if data:
                    text = self._decoders[fd].decode(data)
                    if text:
                        self.streams[fd].write(text)
            if self.children is not None:  # after the fds: a child's C output came before its message
                for message in self.children.read():
                    self._from_child(message)
        finally:
            self._drainer = None
            self._lock.release()

    def _from_child(self, message: dict) -> None:
        """Show what a forked child sent: its text in its stream, its display as the display."""
        header = message.get("parent")
        try:
            request = routing.request_for({"header": header}) if header else None
        except ValueError:
            request = None
        if message.get("kind") == "stream":
            stream = self.streams[2 if message.get("name") == "stderr" else 1]
            token = routing.current_request.set(request) if request is not None else None
            try:
                stream.write(str(message.get("text", "")))
            finally:
                if token is not None:
                    routing.current_request.reset(token)
        elif message.get("kind") == "message" and self.publish is not None:
            content, metadata = message.get("content"), message.get("metadata")
            if isinstance(content, dict):
                self.publish(str(message.get("msg_type")), content,
                             metadata if isinstance(metadata, dict) else {}, request=request)

    def flush_c_stdio(self) -> None:
        """Flush C-level stdio buffers (printf from extensions) into the pipes, then drain them."""
        if self._libc_fflush is None:
            import ctypes

            try:
                self._libc_fflush = ctypes.CDLL(None).fflush
            except (OSError, AttributeError):
                self._libc_fflush = False
        if self._libc_fflush:
            self._libc_fflush(None)
        self.drain(blocking=True)

    def after_fork_in_child(self) -> None:
        """A forked child writes into the pipes (its fds 1 and 2) for the parent to read; it must
        never read them itself."""
        self._pipe_fds = []
        self.pipes = {}
        self._lock = threading.Lock()
        self.saved = {}
        if self.children is not None:
            self.children.after_fork_in_child()

    def stop(self) -> None:
        """Give fds 1 and 2 back to their original targets, forwarding what is left."""
        if not self.saved:
            return
        try:
            self.flush_c_stdio()
        except Exception:
            pass
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self.saved.clear()
        os.write(self._stop_w, b"x")
        self._thread.join(2)
        self.drain(blocking=True)
        for r in self.pipes:
            os.close(r)
        self.pipes.clear()
        if self.children is not None:
            self.children.close()
            self.children = None
        os.close(self._stop_r)
        os.close(self._stop_w)


def start_fd_capture(stdout, stderr, publish=None) -> FDCapture | None:
    """Capture fds 1/2 into the kernel's streams (unless IPYMINI_CAPTURE_FD=0), and forked children's
    displays through `publish`; the kernel's log moves to the original stderr so it never lands in a
    cell."""
    if not settings.value("IPYMINI_CAPTURE_FD"):
        return None
    capture = FDCapture({1: stdout, 2: stderr}, publish)
    capture.start()
    original = capture.original_stderr()
    for handler in log.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(original)
    return capture
