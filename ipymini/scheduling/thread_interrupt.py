"""KeyboardInterrupt (or the memory guard's MemoryError) for a subshell's thread, raised once that
thread runs user code, never the kernel's.

Signals reach the main thread only; another thread is interrupted with PyThreadState_SetAsyncExc, which
raises at its next bytecode, wherever that is. Where it lands is chosen by looking at the thread's stack
(`guard.in_kernel_code`), and how depends on the build:
- With the GIL, a running thread's frames can be read from another thread: a helper thread samples the
  subshell's stack every millisecond until it is in user code, then raises there.
- Without the GIL (free-threaded builds), reading the frames of a thread that runs meanwhile is a
  use-after-free in CPython (gh-152355): the subshell's thread looks at its own stack instead, in a
  sys.monitoring callback (line and jump events, switched on only while an interrupt is on its way) that
  raises KeyboardInterrupt once it runs user code. The callback's own frame ends the traceback, where
  the kernel's SIGINT handler's would: the shell cuts both off (zmqshell._drop_kernel_frames).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

from ipymini.kernelcode import in_kernel_code, in_users_own_code

log = logging.getLogger("ipymini")


def raise_in_thread(thread: threading.Thread, wanted: Callable[[], bool],
                    exception: type[BaseException] = KeyboardInterrupt) -> None:
    """Raise `exception` in `thread` once it runs user code, as long as `wanted()` (its cell still
    runs). Returns at once; the exception comes later, on that thread."""
    if getattr(sys, "_is_gil_enabled", lambda: True)() or not _monitoring.arm(thread.ident, wanted,
                                                                               exception):
        helper = threading.Thread(target=_sample_and_raise, args=(thread.ident, wanted, exception),
                                  name="ipymini-interrupter", daemon=True)
        helper.pydev_do_not_trace = helper.is_pydev_daemon_thread = True  # hidden from the debugger
        helper.start()


def raise_now(thread: threading.Thread, exception: type[BaseException],
              wanted: Callable[[], bool]) -> bool:
    """Raise `exception` in `thread` if it runs user code right now and `wanted()`; whether it was
    (one look, for a caller that asks again later, as the memory guard does at each sample). Without
    the GIL the look is the thread's own, at its next line (see the module docstring): True once armed."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return _monitoring.arm(thread.ident, wanted, exception)
    return _raise_if_in_user_code(thread.ident, wanted, exception) is not False


def raise_in_users_thread(thread: threading.Thread, exception: type[BaseException]) -> bool:
    """Raise `exception` in a thread the user's code started (no cell of its own ends it) if it runs
    the user's own code right now (a cell's function, not a library's: see kernelcode); whether it
    was. One look, with the GIL only (the memory guard asks again at its next sample; it is off on
    free-threaded builds)."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return False
    import ctypes

    ident = thread.ident
    with _raising:
        frame = sys._current_frames().get(ident)
        if not in_users_own_code(frame) or in_kernel_code(frame):
            return False
        # the look may have let the thread run (its first look at a file name reads the file system,
        # which releases the GIL): raised after the thread left that frame, the exception would land
        # in what runs now, the kernel's output code taking a lock, say (a wedge, seen)
        if sys._current_frames().get(ident) is not frame:
            return False
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exception))
        return True


# With the GIL, an exception set for a thread lands at one of its next bytecodes, which may come after
# its cell ended (in IPython's post_execute hooks): raising and ending a cell are ordered by this lock,
# and a cell that ends makes what was raised into it land in `withdraw`, which drops it.
# (an RLock: `withdraw` can tell whether it holds it when an exception lands at its acquire)
_raising = threading.RLock()
_raised: dict[int, type[BaseException]] = {}  # thread -> what was set for it, not yet withdrawn


def _raise_if_in_user_code(ident: int, wanted: Callable[[], bool], exception) -> bool | None:
    """With the GIL: True if raised, False if the thread is in the kernel's code, None if not wanted."""
    import ctypes  # only an interrupt of a subshell needs it: not loaded at startup

    with _raising:
        if not wanted():
            return None
        if in_kernel_code(sys._current_frames().get(ident)):
            return False
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exception))
        _raised[ident] = exception
        return True


def _sample_and_raise(ident: int, wanted: Callable[[], bool], exception=KeyboardInterrupt,
                      attempts: int = 2000) -> None:
    """With the GIL: raise in thread `ident` once its stack is in user code (look up to `attempts`
    times, a millisecond apart)."""
    for _ in range(attempts):
        if _raise_if_in_user_code(ident, wanted, exception) is not False:
            return
        time.sleep(0.001)


def withdraw() -> None:
    """The calling thread's cell has ended (its `wanted()` is false from now on): an exception raised
    into it that has not landed yet lands here and is dropped, never in what runs after the cell.
    (Clearing it with PyThreadState_SetAsyncExc(id, NULL) instead leaves 3.11's eval breaker set for
    every thread.) Raised before this point, it ends the cell."""
    ident = threading.get_ident()
    try:
        _raising.acquire()
    except BaseException:
        # it landed at the acquire (3.14+ checks for it right after the call, before a `with` block
        # would begin: the lock would stay held, and every later interrupt of a subshell wait for it)
        if _raising._is_owned():
            _raising.release()
        raise
    try:
        exception = _raised.pop(ident, None)
    finally:
        _raising.release()
    if exception is None:
        return
    try:
        _checkpoint()
    except exception:
        pass


def _checkpoint() -> None:
    """A call and a loop: the interpreter checks for a pending asynchronous exception at each."""
    for _ in range(2):
        pass


class _MonitoringInterrupts:
    """Without the GIL: the threads an interrupt is on its way to, and the sys.monitoring tool that
    delivers it (switched on while there is one; every thread runs its callback meanwhile)."""

    TOOL_IDS = (4, 3)  # the ids PEP 669 leaves unnamed (debuggers, coverage, profilers use 0-2, 5)

    def __init__(self):
        self._lock = threading.RLock()  # arm() runs in the SIGINT handler, which may land inside arm()
        # thread ident -> (wanted(), the exception to raise). Every thread reads it at every line while
        # armed, without a lock: it is replaced, never changed in place (a dict that grows or shrinks
        # while other threads look into it without a lock is a use-after-free class of free-threaded
        # CPython: gh-144295, gh-149816)
        self.targets: dict[int, tuple] = {}
        self._tool = None

    def arm(self, ident: int, wanted: Callable[[], bool],
            exception: type[BaseException] = KeyboardInterrupt) -> bool:
        """Deliver `exception` to thread `ident`; False if no sys.monitoring tool id is free."""
        mon = sys.monitoring
        with self._lock:
            if self._tool is None:
                for tool in self.TOOL_IDS:
                    try:
                        mon.use_tool_id(tool, "ipymini interrupt")
                    except ValueError:
                        continue
                    self._tool = tool
                    break
                else:
                    log.warning("no sys.monitoring tool id is free: interrupting a subshell by "
                                "sampling its stack")
                    return False
                for event in (mon.events.LINE, mon.events.JUMP):
                    # a module function, never freed when unregistered while another thread calls it
                    mon.register_callback(self._tool, event, _on_event)
            self.targets = {**self.targets, ident: (wanted, exception)}
            mon.set_events(self._tool, mon.events.LINE | mon.events.JUMP)
        return True

    def disarm(self, ident: int) -> None:
        """Thread `ident` needs no interrupt any more; give the tool back after the last one."""
        mon = sys.monitoring
        with self._lock:
            if ident in self.targets:
                self.targets = {other: target for other, target in self.targets.items() if other != ident}
            if self.targets or self._tool is None:
                return
            mon.set_events(self._tool, 0)
            for event in (mon.events.LINE, mon.events.JUMP):
                mon.register_callback(self._tool, event, None)
            mon.free_tool_id(self._tool)
            self._tool = None


_monitoring = _MonitoringInterrupts()


def _on_event(code, *args):
    # runs on every thread at every line and jump while armed: return at once on the others
    ident = threading.get_ident()
    target = _monitoring.targets.get(ident)
    if target is None:
        return
    wanted, exception = target
    if wanted() and in_kernel_code(sys._getframe(1)):
        return  # kernel code (the cell's print, say): wait for the user's next line
    _monitoring.disarm(ident)
    if wanted():
        raise exception
