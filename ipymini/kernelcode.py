"""Where an asynchronous exception may land: in user code, never in the kernel's own.

An interrupt (SIGINT on the main thread, `PyThreadState_SetAsyncExc` on a subshell's thread) or a
completion timeout (SIGALRM) raises wherever the thread happens to be. Landing in kernel code could leak
a lock or a half-made state change, so the kernel marks its functions: `calls_user_code` for the ones that
run user code (an exception may land in what they call), `interruptible` for waits that hold no kernel
state; `in_kernel_code(frame)` says whether a frame is somewhere an exception must not land now, and
`in_users_own_code(frame)` whether it is the user's own code (not a library's), for exceptions raised
into threads of the user's.

Every layer marks its functions here (the output path, the shell, the scheduling package that raises
the exceptions), so this module sits below them all.
Must not import: ipymini (it is the bottom layer: the standard library only).
"""

from __future__ import annotations

import os
import site
import sysconfig

# the ipymini package: every module of it is kernel code
KERNEL_DIR = os.path.dirname(os.path.abspath(__file__))


_INTERRUPTIBLE: set = set()
_CALLS_USER_CODE: set = set()


def interruptible(func):
    """Mark a kernel function whose waiting may be interrupted (it holds no kernel state then)."""
    _INTERRUPTIBLE.add(func.__code__)
    return func


def calls_user_code(func):
    """Mark a kernel function that calls into user code (IPython running a cell, the completer): an
    asynchronous exception may land in what it calls, though never in kernel code called from there."""
    _CALLS_USER_CODE.add(func.__code__)
    return func


def in_kernel_code(frame) -> bool:
    """Whether an asynchronous exception (an interrupt, a completion timeout) raised in `frame` could
    land in ipymini's own code and break its invariants: a lock taken and not yet inside its `try`
    (leaked, the IO lock wedged every shell forever), a flag set before the wake-up it stands for.

    True if `frame` is kernel code, or if walking out through its callers (library code: asyncio,
    threading, pyzmq) reaches kernel code that is not marked `calls_user_code`. So user code (a
    cell, a repr, a `__dir__`) may be interrupted, but not the kernel code it calls (print, display),
    and a user callback called from an unmarked kernel function counts as kernel code."""
    f = frame
    while f is not None:
        code = f.f_code
        if code in _INTERRUPTIBLE:
            return False
        if code.co_filename.startswith(KERNEL_DIR):
            return f is frame or code not in _CALLS_USER_CODE
        f = f.f_back
    return False


def _installed_code_dirs() -> tuple:
    """Where the Python installation's own code and installed packages live."""
    dirs = {KERNEL_DIR}
    for scheme in {sysconfig.get_default_scheme(), "posix_prefix", "posix_user"}:
        try:
            paths = sysconfig.get_paths(scheme)
        except KeyError:
            continue
        dirs.update(paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib") if name in paths)
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:  # (a virtualenv's old site.py)
        pass
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs if d)


_installed: tuple | None = None  # (made at the first look: sysconfig's paths)
_users_files: dict[str, bool] = {}  # file name -> whether it is the user's own


def in_users_own_code(frame) -> bool:
    """Whether `frame` runs the user's own code: a cell, or a file outside the Python installation,
    its packages and the kernel. An asynchronous exception landing in library code run by a thread of
    the user's (a pool's worker taking its shut-down sentinel off the queue) can wedge that library;
    landing in the user's own code, it is the user's code that fails."""
    if frame is None:
        return False
    global _installed
    name = frame.f_code.co_filename
    own = _users_files.get(name)
    if own is None:
        if _installed is None:
            _installed = _installed_code_dirs()
        own = bool(name) and not name.startswith("<") and not os.path.realpath(name).startswith(_installed)
        _users_files[name] = own
    return own
