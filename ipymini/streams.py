"""sys.stdout / sys.stderr replacements that publish `stream` messages.

Owns the text path from a `write()` to the IOPub queue. Each thread's writes are held until they end a
line, so concurrent writers never interleave inside a line; a partial line is published when it is
flushed, when any other message is published (`flush_all`), or by the IO thread's timer. Each line goes
to the request that is current for the writing code (see routing.py).
"""

from __future__ import annotations

import io
import threading

from .routing import parent_request

_partials_lock = threading.Lock()
_partials: dict = {}  # (thread id, stream) -> [text parts, request]


class KernelStream(io.TextIOBase):
    """A text stream whose writes become iopub `stream` messages for the current request."""

    def __init__(self, name: str, iopub, fileno: int | None = None):
        super().__init__()
        self.name = name
        self._iopub = iopub
        self._fileno = fileno

    encoding = "utf-8"
    errors = "strict"

    # io.TextIOBase API
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
            if isinstance(text, bytes):
                raise TypeError("write() argument must be str, not bytes")
            text = str(text)
        key = (threading.get_ident(), self)
        nl = text.rfind("\n")
        with _partials_lock:
            partial = _partials.get(key)
            if nl < 0:
                if partial is None:
                    _partials[key] = [[text], parent_request()]
                else:
                    partial[0].append(text)
                new_partial = partial is None
                line = None
            else:
                new_partial = False
                line = text if nl == len(text) - 1 else text[: nl + 1]
                rest = text[nl + 1:]
                request = parent_request()
                if partial is not None:
                    del _partials[key]
                    if partial[1] is request:
                        partial[0].append(line)
                        line = "".join(partial[0])
                    else:
                        self._iopub.write_stream(self.name, "".join(partial[0]), partial[1])
                if rest:
                    _partials[key] = [[rest], request]
                    new_partial = True
        if line is not None:
            self._iopub.write_stream(self.name, line, request)
        if new_partial:
            self._iopub.partial_waiting()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Publish this thread's partial line and ask for the pending text to be sent now."""
        with _partials_lock:
            partial = _partials.pop((threading.get_ident(), self), None)
            if partial is not None:
                self._iopub.write_stream(self.name, "".join(partial[0]), partial[1])
        self._iopub.flush()


def flush_all(blocking: bool = True) -> bool:
    """Publish every thread's partial lines (before any non-stream message, and at the end of a cell).

    The IO thread calls it with blocking=False: a writer may hold the lock while it waits for the IO
    thread to make room, so the IO thread must never wait for that lock. Returns whether it ran.
    """
    if not _partials:
        return True
    if not _partials_lock.acquire(blocking):
        return False
    try:
        items = list(_partials.items())
        _partials.clear()
        for (_, stream), (parts, request) in items:
            stream._iopub.write_stream(stream.name, "".join(parts), request)
    finally:
        _partials_lock.release()
    return True
