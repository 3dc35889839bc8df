"""Output of forked children (os.fork, multiprocessing's fork workers) on its way to the parent.

A forked child must never use the parent's sockets (libzmq is not fork-safe). Its `print`s and its
displays go through one pipe the parent made before forking, in the order the child made them: stream
text as text, a display (display_data, update_display_data, clear_output) with its whole MIME bundle,
as ipykernel shows it (its children send over a ZMQ connection of their own). Each carries the header
of the request the child's code belonged to, so output of a pool started by one cell goes to that cell.

Each frame is one pipe write of at most PIPE_BUF bytes, which POSIX makes atomic: frames of several
children never mix, and a message longer than one frame goes as several, put together again per child.
Used only with fd capture on (fdcapture.py owns the reading side); C code and subprocesses of a child
still write to the captured fds.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import threading

from ipymini.protocol.wire import pack, unpack

log = logging.getLogger("ipymini")

# a frame: child pid, sender thread id, whether it ends its message, payload length; then the payload
_FRAME = struct.Struct("<iQ?H")
_MAX_PAYLOAD = select.PIPE_BUF - _FRAME.size  # so that a whole frame is one atomic write


def read_available(fd: int) -> bytes:
    """Everything a non-blocking pipe holds now (b"" if nothing, or if it is closed)."""
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except OSError:  # BlockingIOError: nothing more now; others: closed
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class ChildPipe:
    """The parent's end reads frames (`read`); a forked child's end sends (`send`)."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._partial: dict = {}  # (pid, thread id) -> payload pieces of an unfinished message
        self._tail = b""  # bytes of a frame not fully read yet
        self._send_lock = threading.Lock()

    # -- in a forked child --

    def after_fork_in_child(self) -> None:
        """This process is a child now: it sends, and never reads."""
        self._send_lock = threading.Lock()  # another thread may have held it at the fork
        self._partial = {}
        self._tail = b""

    def send(self, message: dict) -> None:
        """Send one message to the parent (blocks while the pipe is full, like a write to a pipe)."""
        data = pack(message)
        pid, tid = os.getpid(), threading.get_ident()
        with self._send_lock:
            for start in range(0, max(len(data), 1), _MAX_PAYLOAD):
                piece = data[start:start + _MAX_PAYLOAD]
                last = start + _MAX_PAYLOAD >= len(data)
                try:
                    os.write(self.write_fd, _FRAME.pack(pid, tid, last, len(piece)) + piece)
                except OSError:  # the kernel is gone (broken pipe): there is no one to show it to
                    return

    # -- in the parent --

    def read(self) -> list[dict]:
        """The messages complete in the pipe now, in the order their last frames came."""
        data = self._tail + read_available(self.read_fd)
        messages, pos, head = [], 0, _FRAME.size
        while len(data) - pos >= head:
            pid, tid, last, size = _FRAME.unpack_from(data, pos)
            if size > _MAX_PAYLOAD:  # not a frame of ours: drop what is buffered rather than wedge
                log.error("children's pipe: bad frame (%d bytes); %d bytes dropped", size, len(data) - pos)
                self._partial.clear()
                pos = len(data)
                break
            if len(data) - pos - head < size:
                break
            piece = data[pos + head:pos + head + size]
            pos += head + size
            key = (pid, tid)
            if last:
                pieces = self._partial.pop(key, [])
                pieces.append(piece)
                try:
                    messages.append(unpack(b"".join(pieces)))
                except ValueError:
                    pass  # cannot happen short of a child writing garbage into our pipe
            else:
                self._partial.setdefault(key, []).append(piece)
        self._tail = data[pos:]
        return messages

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
