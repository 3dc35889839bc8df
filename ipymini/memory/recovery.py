"""Giving memory back after a cell ended in MemoryError.

What the failed cell allocated can stay alive after it: the traceback's frames keep every local of every
function the error went through (the traceback is kept in `sys.last_traceback`, in IPython's last
execution result, in the exception's chain), and freed memory stays in the allocator's free lists
instead of going back to the system. The frames are cleared and the tracebacks dropped (`%debug`
and `%tb` have nothing to show for this error), the garbage collector runs, and glibc is asked to
return its free pages (`malloc_trim`; other C libraries have none, their free memory stays mapped).
The cell's own names in the user namespace are left alone: they are the user's variables.
"""

from __future__ import annotations

import gc
import inspect
import sys
import threading

from ipymini import patches

_malloc_trim = None


def _chain(exc: BaseException | None) -> list:
    """`exc`, its cause and context, recursively (and an exception group's members)."""
    seen, found, stack = set(), [], [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        found.append(e)
        stack += [e.__cause__, e.__context__, *getattr(e, "exceptions", ())]
    return found


def clear_frames(exc: BaseException | None) -> None:
    """Drop the locals of every frame in `exc`'s tracebacks (its cause's, its context's), and the
    tracebacks themselves: a frame also keeps its function alive, and so the closure cells the function
    shares with its caller (`Executor.map`'s list of futures, say)."""
    for e in _chain(exc):
        clear_traceback(e.__traceback__)
        e.__traceback__ = None


def clear_traceback(tb) -> None:
    """Drop the locals of the frames in `tb` that have finished (see _drop_locals)."""
    while tb is not None:
        _drop_locals(tb.tb_frame)
        tb = tb.tb_next


def _drop_locals(frame) -> None:
    """frame.clear(), as traceback.clear_frames does. Python 3.11 also keeps a snapshot of a function's
    locals made when something (a traceback formatter) read `f_locals`: reading it again after the
    clear empties it. A module's namespace (the user's variables) and closure cells stay."""
    try:
        frame.clear()
    except RuntimeError:  # still executing: its locals are in use
        return
    if frame.f_code.co_flags & inspect.CO_OPTIMIZED:
        frame.f_locals  # noqa: B018 (refreshes the snapshot)


def give_back(exc: BaseException | None) -> None:
    """Free what the failed cell's error keeps alive, collect, and return free memory to the system
    (unless threads of the user's still run: see no_user_threads)."""
    forget(exc)
    gc.collect()
    if no_user_threads():
        trim()


def no_user_threads() -> bool:
    """Whether returning malloc's free memory is safe now: no thread of the user's runs. Trimmed
    memory stays mapped, and malloc hands it out again with no new mapping, past the bound; a
    thread still allocating (one a stopped cell started) would take it at once. (Threads the user
    starts are not daemons unless started from one; the kernel's and IPython's all are.)"""
    main = threading.main_thread()
    return not any(t is not main and not t.daemon for t in threading.enumerate())


def forget(exc: BaseException | None) -> None:
    """Clear the frames of `exc` and of the error sys.last_* keep, and drop their tracebacks."""
    clear_frames(exc)
    for name in ("last_value", "last_exc"):
        clear_frames(getattr(sys, name, None))
    clear_traceback(getattr(sys, "last_traceback", None))
    patches.assign(sys, "last_traceback", None)  # (%tb and %debug have nothing to show for this error)


def trim() -> bool:
    """Ask glibc to return its free heap pages to the system; False where there is no malloc_trim."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
            _malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim is False:
        return False
    _malloc_trim(0)
    return True
