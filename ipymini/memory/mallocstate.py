"""What the C library's malloc keeps mapped and can hand out again without mapping anything new.

glibc keeps freed memory: free chunks in its arenas, and in each thread's arena the part of its heap
above the top that it gave back with madvise but left mapped and writable (up to 64 MiB an arena, 8
arenas a core). malloc reuses it with no mmap/brk, so RLIMIT_DATA does not see that use, and a C loop
could fill it past the limit. `reusable()` reads glibc's own account of it (`malloc_info`: free chunks,
and `mprotect` less `total` address space of its heaps), at most every REREAD seconds: ~10 µs, more for
a heap with many free chunks. Other C libraries: None.
"""

from __future__ import annotations

import time

REREAD = 0.05  # seconds a reading is used for
FIRST_AFTER = 1.0  # seconds after import: the first reading (and ctypes' import) waits past start-up

_libc = None
_cached = (time.monotonic() + FIRST_AFTER - REREAD, None)


def _load():
    global _libc
    if _libc is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            libc.open_memstream.restype = ctypes.c_void_p
            libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
            libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
            libc.fclose.argtypes = [ctypes.c_void_p]
            libc.free.argtypes = [ctypes.c_void_p]
            _libc = (ctypes, libc)
        except (OSError, AttributeError):
            _libc = False
    return _libc


def _last(text: bytes, tag: bytes) -> int:
    at = text.rfind(tag)
    if at < 0:
        return 0
    start = text.index(b'size="', at) + 6
    return int(text[start:text.index(b'"', start)])


def parse(text: bytes) -> int:
    """Reusable bytes from malloc_info's XML: the totals after the last heap."""
    free = _last(text, b'<total type="fast"') + _last(text, b'<total type="rest"')
    above_top = _last(text, b'<aspace type="mprotect"') - _last(text, b'<aspace type="total"')
    return free + max(above_top, 0)


def forget() -> None:
    """The next reusable() reads again."""
    global _cached
    _cached = (0.0, None)


def reusable() -> int | None:
    """Bytes glibc's malloc holds mapped and may reuse (None: not glibc, or could not tell)."""
    global _cached
    now = time.monotonic()
    if now - _cached[0] < REREAD:
        return _cached[1]
    loaded = _load()
    value = None
    if loaded:
        ctypes, libc = loaded
        buf, size = ctypes.c_char_p(), ctypes.c_size_t()
        fp = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
        if fp:
            libc.malloc_info(0, fp)
            libc.fclose(fp)
            try:
                text = ctypes.string_at(buf, size.value)
                if text.rstrip().endswith(b"</malloc>"):
                    value = parse(text)
            finally:
                libc.free(buf)
    _cached = (now, value)
    return value
