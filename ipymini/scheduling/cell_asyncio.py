"""asyncio.run() and loop.run_until_complete() inside a cell that does not use top-level await.

A cell runs inside the kernel's event loop, so asyncio refuses to start a loop there ("cannot be called
from a running event loop"); ipykernel's users install nest_asyncio for it. A cell without top-level
await runs synchronously (`sync_cell`): the kernel loop is not turning meanwhile, so
- `asyncio.run(...)`, and any other loop's `run_until_complete`, run with the kernel loop set aside as
  this thread's running loop until they return;
- `run_until_complete` on the kernel loop itself (what `asyncio.get_event_loop()` returns in a cell)
  turns the kernel loop from inside the cell until the future is done, so tasks and objects bound to it
  (an `asyncio.gather`, a client session made in an earlier cell) keep working.
The kernel loop stays the running loop for everything else, so `asyncio.create_task` and
`ensure_future` in a cell schedule work on it, as in ipykernel. A cell with top-level await runs as a
task of the kernel loop, which is turning: asyncio's rule holds there unchanged.
Output of the coroutines goes to the cell (tasks copy the cell's context); an interrupt stops them.
"""

from __future__ import annotations

import asyncio
import threading
from asyncio import events, tasks
from contextlib import contextmanager

from ipymini import patches
from ipymini.kernelcode import calls_user_code

_state = threading.local()  # .sync_cell: a cell without top-level await runs on this thread
_RUNNER_RUN = asyncio.Runner.run.__code__  # asyncio's own, whatever wraps it later


class KernelEventLoop(asyncio.SelectorEventLoop):
    """The event loop of a shell (the parent's and each subshell's)."""

    def run_until_complete(self, future):
        if not (getattr(_state, "sync_cell", False) and events._get_running_loop() is self):
            return super().run_until_complete(future)
        future = asyncio.ensure_future(future, loop=self)
        cell_task = tasks.current_task(self)  # the shell's task, paused inside the running cell
        if cell_task is not None:
            tasks._leave_task(self, cell_task)
        # The turn of the loop running this cell counted its ready callbacks before it began, and pops
        # that many once the cell returns; the turns below run some of them. So as many as it counted
        # stay ready, padded with callbacks that do nothing (else: IndexError, "pop from an empty
        # deque", in the kernel loop itself, and the kernel dies).
        counted = len(self._ready)
        try:
            while not future.done():
                self._run_once()
        except BaseException:  # an interrupt: the coroutine stops with the cell
            future.cancel()
            raise
        finally:
            for _ in range(counted - len(self._ready)):
                self.call_soon(_nothing)
            if cell_task is not None:
                tasks._enter_task(self, cell_task)
        return future.result()


def _nothing() -> None:
    pass


@contextmanager
def sync_cell():
    """Mark the calling thread as running a cell synchronously (see the module docstring)."""
    _state.sync_cell = True
    try:
        yield
    finally:
        _state.sync_cell = False


@contextmanager
def _kernel_loop_set_aside():
    """While a cell runs synchronously, let another loop run on this thread; yields whether the
    kernel loop was set aside."""
    loop = events._get_running_loop()
    if not (getattr(_state, "sync_cell", False) and isinstance(loop, KernelEventLoop)):
        yield False
        return
    # the shell's task, paused inside the running cell, leaves with its loop: 3.14 keeps one current
    # task per thread (not per loop), and the other loop's task could not enter beside it
    cell_task = tasks.current_task(loop)
    if cell_task is not None:
        tasks._leave_task(loop, cell_task)
    events._set_running_loop(None)
    try:
        yield True
    finally:
        events._set_running_loop(loop)
        events.set_event_loop(loop)  # asyncio.run leaves the thread with no event loop set
        if cell_task is not None:
            tasks._enter_task(loop, cell_task)


def interrupt_runner(frame) -> bool:
    """An interrupt for code running inside `asyncio.run` (asyncio.Runner.run) on this thread is
    delivered as asyncio's own SIGINT handler delivers it, which asyncio sets up only when SIGINT has
    Python's default handler (the kernel has its own): the main task is cancelled and Runner.run
    raises KeyboardInterrupt. Raised anywhere else in asyncio's loop, it can leave the loop marked as
    running (3.13: "Cannot close a running event loop" instead of the KeyboardInterrupt). Returns
    whether it did; if not (no Runner.run on the stack, its task not made yet or done, its loop not
    started yet, a second interrupt), the caller raises KeyboardInterrupt as usual."""
    f = frame
    while f is not None and f.f_code is not _RUNNER_RUN:
        f = f.f_back
    if f is None or f is frame:  # in Runner.run's own lines the loop is not running: raise there
        return False
    runner, task = f.f_locals.get("self"), f.f_locals.get("task")
    count = getattr(runner, "_interrupt_count", None)
    loop = getattr(runner, "_loop", None)
    if not isinstance(task, asyncio.Future) or task.done() or not isinstance(count, int):
        return False
    if not (isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running()):
        # before run_until_complete starts the loop, Runner.run has yet to reset its interrupt count
        # (a cancel now would end as CancelledError): raised in place, it is a KeyboardInterrupt
        return False
    patches.assign(runner, "_interrupt_count", count + 1)
    if count:
        return False
    task.cancel()
    loop.call_soon_threadsafe(lambda: None)  # wake the loop from its wait
    return True


_installed = False


def install() -> None:
    """Wrap asyncio.run, Runner.run and other loops' run methods so they work inside a synchronous
    cell (outside one, each behaves exactly as before)."""
    global _installed
    if _installed:
        return
    _installed = True
    # each of these runs the user's coroutines: an interrupt may land in what they call
    calls_user_code(KernelEventLoop.run_until_complete)
    run, runner_run = asyncio.run, asyncio.Runner.run

    @calls_user_code
    def asyncio_run(main, **kwargs):
        with _kernel_loop_set_aside():
            return run(main, **kwargs)

    @calls_user_code
    def runner_run_(self, coro, **kwargs):
        with _kernel_loop_set_aside():
            return runner_run(self, coro, **kwargs)

    patches.patch(asyncio, "run", asyncio_run)
    patches.patch(asyncio.runners, "run", asyncio_run)
    patches.patch(asyncio.Runner, "run", runner_run_)
    for name in ("run_until_complete", "run_forever"):
        _wrap_other_loops(name, getattr(asyncio.BaseEventLoop, name), calls_user_code)


def _wrap_other_loops(name: str, method, calls_user_code) -> None:
    @calls_user_code
    def other_loop_method(self, *args):
        if isinstance(self, KernelEventLoop):
            return method(self, *args)
        with _kernel_loop_set_aside():
            return method(self, *args)

    other_loop_method.__name__ = name
    patches.patch(asyncio.BaseEventLoop, name, other_loop_method)
