"""sys.stdout / sys.stderr replacements that publish `stream` messages.

Owns the text path from a `write()` to the IOPub queue, built for floods of small writes:
- One active buffer for both streams. While the same thread keeps writing to the same stream for the same
  request, a write is a list append under one lock (the fast path of a print loop).
- When another writer takes over, the buffer's complete lines go to the IOPub queue. An unfinished line
  of another *thread* is set aside until that thread finishes it, so concurrent writers never interleave
  inside a line; within one thread, switching stdout/stderr keeps the exact write order.
- Text reaches the IOPub queue when the buffer is large, when the writer changes, on `flush()`, before
  any other message (`flush_all`), and by the IO thread's timer; the queue coalesces it into messages.
- An optional per-request budget stops stream output past N bytes and counts what was omitted.
Each write goes to the request that is current for the writing code (see routing.py).
"""

from __future__ import annotations

import io
import os
import threading
import time
import weakref

from ipymini import settings
from ipymini.output import routing

PUSH_BYTES = 1 << 16  # hand text to the IOPub queue once this much is buffered

_lock = threading.Lock()
_acquire, _release = _lock.acquire, _lock.release
_get_ident = threading.get_ident
_current = routing.current_request.get
_outside = routing.outside_request


class _Active:
    """The buffer being appended to: whose it is and what it holds."""

    __slots__ = ("stream", "tid", "request", "parts", "size")

    def __init__(self):
        self.stream = self.tid = self.request = None
        self.parts: list = []
        self.size = 0


_active = _Active()
_aside: dict = {}  # (thread id, stream) -> [text, request]: unfinished lines of threads not writing now
_child_pending: dict = {}  # in a forked child: stream name -> text not yet written (no newline yet)
budget = None  # bytes of stream output allowed per request (None: no limit); see set_budget
# each request's use of the budget, [bytes given, bytes omitted] (changed under the lock)
_spent: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
fd_capture = None  # the FDCapture whose pipes writes drain first (see fdcapture.py)
child_pipe = None  # where a forked child's writes go, if fd capture made one (see childpipe.py)


class KernelStream(io.TextIOBase):
    """A text stream whose writes become iopub `stream` messages for the current request."""

    def __init__(self, name: str, iopub, fileno: int | None = None):
        super().__init__()
        self.name = name
        self._iopub = iopub
        self._fileno = fileno

    encoding = "UTF-8"  # as ipykernel's streams say
    errors = None

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fileno is None:
            raise io.UnsupportedOperation("fileno")
        return self._fileno

    @property
    def closed(self) -> bool:  # never closed: a user's `sys.stdout.close()` must not lose later output
        return False

    def close(self) -> None:
        pass

    def write(self, text) -> int:
        if text.__class__ is not str:
            text = _as_text(text)
        request = _current() or _outside()
        tid = _get_ident()
        # the fast path of a print loop: the same writer appends to a buffer that already holds text
        # (acquire/try/finally is ~60 ns cheaper per write than `with`)
        _acquire()
        try:
            a = _active
            if a.parts and a.stream is self and a.tid == tid and a.request is request:
                a.parts.append(text)
                a.size += len(text)
                if a.size >= PUSH_BYTES:
                    _push_lines()
                return len(text)
        finally:
            _release()
        return self._write_first(text, request, tid)

    def _write_first(self, text: str, request, tid) -> int:
        """A write that starts a buffer: another writer's text is handed on first, and so is what C
        code, a subprocess or a forked child wrote to the fds before it (one select when there is
        none)."""
        if fd_capture is not None:
            fd_capture.drain(blocking=True)
        with _lock:
            a = _active
            if a.stream is not self or a.tid != tid or a.request is not request:
                _take_over(self, tid, request)
            if not a.parts:  # the IO thread's timer will send it if nothing else does first
                self._iopub.partial_waiting()
            a.parts.append(text)
            a.size += len(text)
            if a.size >= PUSH_BYTES:
                _push_lines()
        return len(text)

    def _write_to_fd(self, text) -> int:
        """write() in a forked child (see after_fork_in_child): line-buffered, so each line reaches
        the pipe in one write and lines of several children never mix."""
        if text.__class__ is not str:
            text = _as_text(text)
        with _lock:
            pending = _child_pending.setdefault(self.name, [])
            pending.append(text)
            if "\n" in text:
                data = "".join(pending)
                end = data.rfind("\n") + 1
                pending[:] = [data[end:]] if end < len(data) else []
                self._to_fd(data[:end])
        return len(text)

    def _flush_to_fd(self) -> None:
        """flush() in a forked child."""
        with _lock:
            pending = _child_pending.pop(self.name, None)
        if pending:
            self._to_fd("".join(pending))

    def _to_fd(self, text: str) -> None:
        if child_pipe is not None:
            request = routing.parent_request()
            child_pipe.send({"kind": "stream", "name": self.name, "text": text,
                             "parent": request.header if request is not None else {}})
            return
        if self._fileno is None:
            return
        data = text.encode("utf-8", "replace")
        while data:
            data = data[os.write(self._fileno, data):]

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Hand everything written so far to the IOPub queue and ask for it to be sent now."""
        flush_all()
        self._iopub.flush()


def _as_text(text) -> str:
    """What write() accepts besides str: str subclasses and objects with a str(); never bytes."""
    if isinstance(text, (bytes, bytearray)):
        raise TypeError(f"write() argument must be str, not {type(text).__name__}")
    return str(text)


def _emit(stream: KernelStream, text: str, request) -> None:
    """Give text to the IOPub queue, within the request's output budget."""
    if budget is not None and request is not None:
        spent = _spent.get(request)
        if spent is None:
            spent = _spent[request] = [0, 0]
        used = spent[0]
        spent[0] = used + len(text)
        if used + len(text) > budget:
            allowed = max(0, budget - used)
            spent[1] += len(text) - allowed
            text = text[:allowed]
            if not text:
                return
    stream._iopub.write_stream(stream.name, text, request)


def _push_active() -> None:
    a = _active
    if a.parts:
        text = a.parts[0] if len(a.parts) == 1 else "".join(a.parts)
        a.parts = []
        a.size = 0
        _emit(a.stream, text, a.request)


def _push_lines() -> None:
    """A full buffer: its complete lines go to the IOPub queue and its unfinished line stays, since
    `print` writes its text and its newline in two calls and another thread may write in between. A
    line longer than the buffer goes as it is."""
    _push_complete_lines()
    if _active.size >= PUSH_BYTES:
        _push_active()


def _push_complete_lines() -> None:
    """Hand the active buffer's complete lines to the IOPub queue; an unfinished line stays (the
    buffer is left as it is if it holds no newline)."""
    a = _active
    text = a.parts[0] if len(a.parts) == 1 else "".join(a.parts)
    nl = text.rfind("\n")
    if nl < 0:
        return
    _emit(a.stream, text[:nl + 1], a.request)
    rest = text[nl + 1:]
    a.parts = [rest] if rest else []
    a.size = len(rest)


def _take_over(stream, tid, request) -> None:
    """Make (stream, thread, request) the active writer; called with the lock held."""
    a = _active
    if a.parts and a.tid != tid:
        # another thread's unfinished line waits aside until that thread writes again
        text = "".join(a.parts)
        nl = text.rfind("\n")
        if nl != len(text) - 1:
            _aside[(a.tid, a.stream)] = [text[nl + 1:], a.request]
            text = text[:nl + 1]
        a.parts = [text] if text else []
    _push_active()
    a.stream, a.tid, a.request = stream, tid, request
    held = _aside.pop((tid, stream), None) if _aside else None
    if held is not None:
        if held[1] is request:
            a.parts.append(held[0])
            a.size = len(held[0])
        else:
            _emit(stream, held[0], held[1])


def flush_all(blocking: bool = True) -> bool:
    """Hand all buffered text, unfinished lines included, to the IOPub queue.

    Called before any other message is published and at the end of a request. The IO thread calls it
    with blocking=False: a writer may hold the lock while it waits for the IO thread to make room in the
    queue, so the IO thread must never wait for that lock. Returns whether it ran.

    A blocking flush always takes the lock, even when the buffers look empty: another thread taking
    over the buffer empties it before it has handed the text to the queue, and a flush that returned
    then would let the reply overtake that text.
    """
    if not blocking and not _active.parts and not _aside:
        return True
    if not _lock.acquire(blocking):
        return False
    try:
        _push_active()
        while _aside:
            (_, stream), (text, request) = _aside.popitem()
            _emit(stream, text, request)
    finally:
        _lock.release()
    return True


def flush_before_message() -> None:
    """Before a display, a result or an error: what C code or a subprocess wrote to fds 1/2 so far,
    then all buffered text, go to the IOPub queue first (`os.write(1, b'x\\n'); 5` shows x, then 5)."""
    if fd_capture is not None:
        fd_capture.drain(blocking=True)
    flush_all()


PARTIAL_LINE_WAIT = 0.05  # an unfinished line is published once no stream was written for this long
PARTIAL_LINE_MAX_WAIT = 1.0  # ... or once it alone sat unchanged this long (others kept writing)
_clock = time.monotonic
_seen_at_last_tick: dict = {}  # buffer key -> (parts list, its length, time since when it is unchanged)


def flush_on_timer() -> bool | None:
    """The IO thread's periodic flush. Returns None if a writer holds the lock (try again soon), else
    whether an unfinished line is still held back (look again after another interval).

    Complete lines are published at once. An unfinished line is published once nothing has been
    written for PARTIAL_LINE_WAIT: its thread may be stopped between a `print`'s text and its newline,
    and publishing it while another thread writes would put that thread's text inside the line. A
    line left unfinished while other threads keep writing goes after PARTIAL_LINE_MAX_WAIT.
    """
    if not _lock.acquire(False):
        return None
    try:
        now = _clock()
        seen = {}
        a = _active
        quiet = now - _unchanged_since("active", a.parts, now) >= PARTIAL_LINE_WAIT
        if a.parts:
            if quiet:
                _push_active()
            else:
                _push_complete_lines()
        held_back = bool(a.parts)
        if held_back:  # the time since it is unchanged carries on only if this tick left it alone
            seen["active"] = (a.parts, len(a.parts), _unchanged_since("active", a.parts, now))
        for key, held in list(_aside.items()):
            since = _unchanged_since(key, held, now)
            if quiet or now - since >= PARTIAL_LINE_MAX_WAIT:
                del _aside[key]
                _emit(key[1], held[0], held[1])
            else:
                seen[key] = (held, len(held), since)
                held_back = True
        if not held_back:
            seen["active"] = (a.parts, len(a.parts), _unchanged_since("active", a.parts, now))
        _seen_at_last_tick.clear()
        _seen_at_last_tick.update(seen)
        return held_back
    finally:
        _lock.release()


def _unchanged_since(key, parts, now: float) -> float:
    """Since when the buffer under `key` has been this same list with this many parts (now if new)."""
    last = _seen_at_last_tick.get(key)
    return last[2] if last is not None and last[0] is parts and last[1] == len(parts) else now


def after_fork_in_child() -> None:
    """In a forked child (multiprocessing's fork workers, os.fork): the kernel's sockets and threads
    are the parent's, so every line goes straight to the parent: through the children's pipe when fd
    capture made one (the parent shows it in the cell the child's code belongs to), else to the
    stream's file descriptor."""
    global _lock, _acquire, _release, fd_capture
    _lock = threading.Lock()  # another thread may have held it at the fork
    _acquire, _release = _lock.acquire, _lock.release
    _active.parts, _active.size, _active.stream = [], 0, None  # the parent sends what it buffered
    _aside.clear()
    fd_capture = None
    KernelStream.write = KernelStream._write_to_fd
    KernelStream.flush = KernelStream._flush_to_fd


def set_budget_from_env() -> None:
    """IPYMINI_OUTPUT_LIMIT=bytes turns the per-request budget on (off by default)."""
    limit = settings.value("IPYMINI_OUTPUT_LIMIT")
    if limit is not None:
        set_budget(limit)


def omitted(request) -> int:
    """Bytes of `request`'s stream output that its budget held back (call after flush_all)."""
    spent = _spent.get(request)
    return spent[1] if spent is not None else 0


def set_budget(limit: int | None) -> None:
    """Limit each request's stream output to `limit` bytes (None: unlimited)."""
    global budget
    budget = limit
