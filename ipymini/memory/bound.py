"""The address-space bound: an allocation that could not fit in the memory left fails at once, in any
code, with MemoryError, instead of being granted and then filled until the kernel is killed.

A watcher thread cannot stop C code that fills one huge allocation (`np.ones(10**10)`), nor a C loop
that allocates many small ones: exceptions reach C code only when it returns. What every such
allocation must do first is map new memory (mmap, brk), and RLIMIT_DATA (Linux ≥ 4.7) bounds exactly
that: the data segment and every private writable mapping, what malloc, pymalloc, NumPy and thread
stacks use, and not file mappings (`mmap` of a file, read-only or shared) nor shared memory. The guard
keeps the soft limit at what the kernel has mapped now plus the room left before the limit, so a
mapping fails as soon as it could not be backed if it were used. The hard limit is never changed, and
the original soft limit is put back at shutdown.

Children never inherit it: a forked child restores the original at once (os.register_at_fork), and
the bound is lifted in the kernel for the moment a child is started without Python's fork hooks
(`_posixsubprocess.fork_exec`, which subprocess and multiprocessing use; `os.posix_spawn[p]`; and
`os.system`, for the whole command, since the C library forks inside it).

The other way round, memory already mapped can become used with no new mapping, which the bound does
not see, so some of it counts as used (`soft_limit`):
- what the running cell mapped and has not written yet: an array another thread is filling (a thread
  pool's tasks map their arrays one after the other, each against the room left, while the earlier
  ones are still being filled); but not the stacks of threads it started, nor an np.zeros retried;
- malloc's freed memory: glibc keeps it mapped and hands it out again with no new mapping; what it
  may reuse (mallocstate.py), as far as it is not resident; while no thread of the user's runs, up to
  half the room left: counted in full, a heap fragmented by one big cell (a thread's arena keeps every
  64 MiB heap above a chunk still in use) would leave no room for new mappings at all. Beyond that
  half, one C call allocating many small objects can refill it past the limit.
Memory mapped before the cell and never written (np.empty kept, library buffers) does not count:
filled later by one C call, it is the other thing the guard cannot stop. A thread started with little room
left gets room for its stack while it is mapped, so a thread pool near the limit starts its threads and
its tasks get the MemoryError, not `RuntimeError: can't start new thread`.

A large `np.zeros` is calloc's: its pages stay unwritten until used, so one refused because of the
bound is retried with room for itself (it then counts as mapped, not as used). Those raises are
bounded: what other threads can map meanwhile is the raise at most; the lift for a child is not (a
thread allocating while `os.system` runs is not bounded until the command ends).
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import sys
import _thread
import threading
import time
import types
import weakref
from contextlib import contextmanager

from ipymini import patches
from ipymini.kernelcode import calls_user_code, in_kernel_code
from ipymini.memory import mallocstate
from ipymini.patches import after_import

log = logging.getLogger("ipymini")

_STACK = threading.stack_size() or resource.getrlimit(resource.RLIMIT_STACK)[0]
# a thread's stack (glibc's default: RLIMIT_STACK; 8 MiB) and a little: with less room than this, a
# thread start gets this much more while its stack is mapped
THREAD_ROOM = (_STACK if 0 < _STACK < (1 << 30) else 8 << 20) + (1 << 20)


class AddressBound:
    """RLIMIT_DATA's soft limit, set to what the guard wants unless a child is being started."""

    def __init__(self, resample, mapped):
        """`resample()` is called after a lift ends: what the kernel has mapped changed meanwhile;
        `mapped()` is what the kernel has mapped now (statm's data)."""
        self.original = resource.getrlimit(resource.RLIMIT_DATA)
        soft = self.original[0]  # (never above the hard limit)
        self._ceiling = None if soft == resource.RLIM_INFINITY else soft
        self._resample, self._mapped = resample, mapped
        self._lock = threading.RLock()  # (a finalizer releasing an np.zeros may run while it is held)
        self._lifts: list = []  # the lifts in force: None (the original limit), or bytes of room
        self.unused = 0  # mapped and not resident, counted as used (see soft_limit)
        self.reusable = 0  # malloc's freed memory, resident or not
        self.reserved = 0  # live np.zeros arrays retried with room for themselves (maybe never used)
        self._base_unresident = self._base_threads = 0  # when the running cell began
        self._wanted: int | None = None  # the soft limit the guard asks for (None: the original)
        self._applied: int | None = None
        self.counting_threads = False  # the last bound counted malloc's free memory in full
        self.stopping_cell = False  # the guard is stopping the running cell for memory
        self._user_threads: list = []  # (when, Thread) started by the user's code, alive at the last look

    def note_user_thread(self, thread: threading.Thread) -> None:
        """A thread the user's code (a cell, or a thread of its) started just now."""
        now = time.monotonic()
        with self._lock:
            self._user_threads = [(t, th) for t, th in self._user_threads if th.is_alive()]
            self._user_threads.append((now, thread))

    def user_threads_since(self, since: float) -> list:
        """The user's threads started at or after `since` (time.monotonic()) and still alive."""
        with self._lock:
            self._user_threads = [(t, th) for t, th in self._user_threads if th.is_alive()]
            return [th for t, th in self._user_threads if t >= since]

    def cell_began(self, data: int, anon: int) -> None:
        """A cell starts: what is mapped and not resident now is not its doing."""
        self._base_unresident, self._base_threads = data - anon, threading.active_count()

    def soft_limit(self, data: int, anon: int, room: int, user_threads: bool) -> int:
        """The soft limit for `room` more bytes of use, given `data` bytes mapped (statm's data) of
        which `anon` are resident. Counted as used: what the running cell mapped and has not written
        yet (an array being filled by another thread, which the room does not show yet), but for
        thread stacks and np.zeros retried; and malloc's reusable memory, as far as it is not
        resident, up to half the room (all of it while `user_threads` run)."""
        self.reusable = mallocstate.reusable() or 0
        unresident = max(data - anon, 0)
        threads = max(threading.active_count() - self._base_threads, 0)
        pending = unresident - self._base_unresident - self.reserved - threads * THREAD_ROOM
        # malloc's freed memory in full while threads of the user's run (they refill it at once)
        self.counting_threads = user_threads
        cap = unresident if self.counting_threads else max(room, 0) // 2
        self.unused = max(min(self.reusable, unresident, cap), pending, 0)
        return data + max(room - self.unused, 0)

    def resample(self) -> None:
        """Sample the memory and set the bound again now (rather than at the watcher's next sample)."""
        self._resample()

    def reserve(self, array, nbytes: int) -> None:
        """`array`, an np.zeros retried with room for itself, need not count until it is written."""
        with self._lock:
            self.reserved += nbytes
        weakref.finalize(array, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self.reserved -= nbytes

    def headroom(self) -> int:
        """What may still be mapped now before the bound refuses."""
        applied = self._applied
        return (1 << 62) if applied is None else applied - self._mapped()

    @property
    def armed(self) -> bool:
        """Whether allocations are bounded tighter than they would be without the guard."""
        return self._applied is not None

    def set(self, soft: int | None) -> None:
        """Bound the data segment to `soft` bytes (None: the original limit)."""
        with self._lock:
            self._wanted = soft
            self._apply(self._effective())

    def _effective(self) -> int | None:
        """What to apply (lock held): the wanted limit, unless lifts are in force."""
        lifts, wanted = self._lifts, self._wanted
        if not lifts or wanted is None:
            return wanted
        if None in lifts:
            return None
        return max(wanted, self._mapped() + sum(lifts))

    def _apply(self, soft: int | None) -> None:
        if soft is not None and self._ceiling is not None and soft >= self._ceiling:
            soft = None  # the limit the kernel had is tighter already
        if soft == self._applied:
            return
        try:
            resource.setrlimit(resource.RLIMIT_DATA,
                               self.original if soft is None else (soft, self.original[1]))
            self._applied = soft
        except (ValueError, OSError):
            log.debug("could not set RLIMIT_DATA to %s", soft, exc_info=True)

    @contextmanager
    def lifted(self, room: int | None = None):
        """While the block runs: the original limit (`room` None: a child being started inherits what
        is set), or `room` bytes more than is mapped now (a thread's stack, a retried np.zeros), so
        what other threads can take meanwhile stays bounded."""
        with self._lock:
            self._lifts.append(room)
            self._apply(self._effective())
        try:
            yield
        finally:
            with self._lock:
                self._lifts.remove(room)
                last = not self._lifts
                self._apply(self._effective())  # at once: the resample may fail for want of memory
            if last:
                try:
                    self._resample()
                except Exception:  # MemoryError included: the bound from before stays
                    pass

    def restore_in_child(self) -> None:
        """In a forked child (no lock: another thread of the parent may have held it at the fork)."""
        try:
            resource.setrlimit(resource.RLIMIT_DATA, self.original)
        except (ValueError, OSError):
            pass

    def close(self) -> None:
        self.set(None)


def install(bound: AddressBound) -> None:
    """Children start without the bound; a large np.zeros is not refused for memory it may never use."""
    os.register_at_fork(after_in_child=bound.restore_in_child)
    import _posixsubprocess
    import subprocess

    def lifting(original):
        @functools.wraps(original)
        def start_child(*args, **kwargs):
            with bound.lifted():
                return original(*args, **kwargs)
        return start_child

    patches.patch(_posixsubprocess, "fork_exec", lifting(_posixsubprocess.fork_exec))
    if getattr(subprocess, "_fork_exec", None) is not None:  # 3.11+: imported by name
        patches.patch(subprocess, "_fork_exec", lifting(subprocess._fork_exec))
    for name in ("posix_spawn", "posix_spawnp", "system"):
        if hasattr(os, name):
            patches.patch(os, name, lifting(getattr(os, name)))
    # a thread's stack is reserved (8 MiB) and mostly never touched: starting one is not refused
    for name in ("_start_new_thread", "_start_joinable_thread"):  # 3.11-3.12, 3.13+
        if hasattr(threading, name):
            patches.patch(threading, name, _starting_threads(bound, getattr(threading, name)))
    after_import("numpy", lambda numpy: _lazy_zeros(numpy, bound))


NO_ROOM_FOR_STACK = "can't start new thread: no memory was left for its stack"


def _starting_threads(bound: AddressBound, original):
    @functools.wraps(original)
    def start_thread(function, *args, **kwargs):
        users = not in_kernel_code(sys._getframe(1))
        if bound.stopping_cell and users:
            # the guard is stopping this cell (one of its threads died of MemoryError, most likely):
            # its MemoryError, should it land in the kernel's code while a thread starts, would be
            # late, and the cell could end `ok` with its threads dead
            raise MemoryError("can't start new thread: this cell is being stopped for want of memory")
        thread = getattr(function, "__self__", None)  # threading.Thread's bootstrap, or None
        started = getattr(thread, "_started", None)
        start_up = _StartUp()  # (made now: a failing start-up may have no memory to spare)
        if started is not None:
            function = _reporting_failure(function, start_up)
        if bound.headroom() > 2 * THREAD_ROOM:  # most starts: one read of statm
            try:
                ident = original(function, *args, **kwargs)
            except RuntimeError as error:  # "can't start new thread": the room went meanwhile
                if not bound.armed:
                    raise
                kwargs = _fresh_handle(thread, kwargs, error)
            else:
                _started(bound, thread, started, start_up, kwargs.get("handle"))
                if users and thread is not None:
                    bound.note_user_thread(thread)
                return ident
        armed = bound.armed
        with bound.lifted(THREAD_ROOM):
            try:
                ident = original(function, *args, **kwargs)
            except RuntimeError as error:  # other threads took the room lifted for its stack
                if not armed:
                    raise
                raise MemoryError(NO_ROOM_FOR_STACK) from error
            # and until the thread has started, so that its start-up has room too
            _started(bound, thread, started, start_up, kwargs.get("handle"))
        if users and thread is not None:
            bound.note_user_thread(thread)
        return ident
    return start_thread


def _fresh_handle(thread, kwargs: dict, error: RuntimeError) -> dict:
    """`kwargs` to start the thread again after a start refused for memory. From 3.13, a start that
    failed has spent its handle (marked done): the Thread gets a new one of the same type where it
    keeps it (`_os_thread_handle` from 3.14, `_handle` in 3.13); a bare handle cannot be replaced,
    and the start ends in MemoryError."""
    handle = kwargs.get("handle")
    if handle is None:  # 3.11-3.12: nothing spent
        return kwargs
    for name in ("_os_thread_handle", "_handle"):
        if thread is not None and getattr(thread, name, None) is handle:
            fresh = type(handle)()
            setattr(thread, name, fresh)
            return {**kwargs, "handle": fresh}
    raise MemoryError(NO_ROOM_FOR_STACK) from error


class _StartUp:
    """Between Thread.start and the thread it starts: what ended the thread's start-up, and whether
    the thread got as far as our wrapper (`enter`) before Thread.start gave up on it (`abandon`)."""

    __slots__ = ("error", "_entered", "_abandoned", "_lock")

    def __init__(self):
        self.error: BaseException | None = None
        self._entered = self._abandoned = False
        self._lock = _thread.allocate_lock()

    def enter(self) -> bool:
        """In the new thread, first thing: False if Thread.start has given up on it (it must not run)."""
        with self._lock:
            self._entered = not self._abandoned
            return self._entered

    def abandon(self) -> bool:
        """In the starting thread: give up on a thread that has not entered yet (True), for good."""
        with self._lock:
            self._abandoned = not self._entered
            return self._abandoned


def _reporting_failure(bootstrap, start_up: _StartUp):
    """`bootstrap` (Thread._bootstrap), noting in `start_up` that it began and an exception that ends
    it. One raised before the thread says it started (a MemoryError in its start-up) would leave
    Thread.start waiting for ever: `_started` raises it in the starting thread instead."""
    @calls_user_code  # (a MemoryError the guard raises into the thread may land in what it runs)
    def bootstrap_reporting(thread, *args, **kwargs):
        if not start_up.enter():
            return  # Thread.start raised already: the thread does not run
        try:
            bootstrap(*args, **kwargs)
        except BaseException as e:
            start_up.error = e
            raise
    # still a method of the Thread: debugpy finds the thread it starts through `__self__` (and so
    # keeps the kernel's own threads, marked `is_pydev_daemon_thread`, out of the debugger's list)
    return types.MethodType(bootstrap_reporting, bootstrap.__self__)


def _raise_start_up_failure(error: BaseException) -> None:
    """Thread.start's error for a thread whose start-up failed: the MemoryError behind it (3.11 ends
    such a thread with a KeyError from its clean-up, the MemoryError as its context), else a
    RuntimeError as for a thread that cannot start."""
    cause = error
    while cause is not None and not isinstance(cause, MemoryError):
        cause = cause.__context__
    if cause is not None:
        raise MemoryError(*cause.args) from error
    raise RuntimeError("can't start new thread: its start-up failed") from error


GIVE_UP_AFTER = 0.5  # seconds a thread may take to begin while memory is short


def _started(bound: AddressBound, thread, started, start_up: _StartUp, handle=None) -> None:
    """Wait until a threading.Thread has started (Thread.start waits for it next anyway), or raise
    what ended its start-up.

    A thread can also die before any of its Python code runs (its first frame's memory refused: the
    interpreter only prints "Exception ignored in thread started by"), and Thread.start would wait for
    ever: when it has ended (3.13+ can tell) or has not begun after GIVE_UP_AFTER while the cell is
    being stopped for memory or the bound leaves no room for it, Thread.start raises MemoryError, and
    the thread, should it begin later, does not run.
    The first thread of the user's re-arms the bound at once: malloc's free memory, which threads
    refill with no new mapping, then counts as used in full."""
    if started is None:
        return
    began = time.monotonic()
    while not started.wait(0.05):
        if start_up.error is not None and not started.is_set():
            _raise_start_up_failure(start_up.error)
        ended = handle is not None and getattr(handle, "is_done", lambda: False)()
        short = (time.monotonic() - began >= GIVE_UP_AFTER
                 and (bound.stopping_cell or bound.headroom() < THREAD_ROOM))
        if (ended or short) and not started.is_set() and start_up.abandon():
            raise MemoryError("can't start new thread: no memory was left for its start-up")
    if not thread.daemon and bound.armed and bound.counting_threads is False:
        bound.counting_threads = True
        try:
            bound.resample()
        except Exception:  # (MemoryError: the bound from before stays; the watcher samples soon)
            pass


def _lazy_zeros(numpy, bound: AddressBound) -> None:
    original = numpy.zeros

    @functools.wraps(original)
    def zeros(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except MemoryError:
            if not bound.armed:
                raise
        # calloc'd pages are not touched until written: try again with room for it alone
        with bound.lifted(_nbytes(numpy, *args, **kwargs)):
            array = original(*args, **kwargs)
        bound.reserve(array, array.nbytes)
        return array

    patches.patch(numpy, "zeros", zeros)


def _nbytes(numpy, shape=None, dtype=float, *args, **kwargs) -> int | None:
    """The size of np.zeros(shape, dtype) plus a page, or None when it cannot be told (lift fully)."""
    try:
        count = 1
        for n in (shape if isinstance(shape, (tuple, list)) else (shape,)):
            count *= int(n)
        return count * numpy.dtype(kwargs.get("dtype", dtype)).itemsize + (1 << 16)
    except Exception:
        return None
