"""Interrupts: how an interrupt reaches running code, and where it must not land.

Owns the SIGINT handler. An interrupt comes as SIGINT (the kernel manager's signal mode, or the kernel
signalling itself for `interrupt_request`). The handler interrupts every busy subshell, then the parent
shell: a cell computing on the main thread gets KeyboardInterrupt where it is, a cell awaiting is
cancelled. Two places are protected:
- the kernel's own code (output queue, socket sends, wake-ups): an interrupt landing there is retried
  2 ms later, so only user code ever sees KeyboardInterrupt;
- a cell stopped at a debugger breakpoint: it is resumed first, then interrupted in its own code.

The memory guard stops cells the same way (`stop_cells`), with MemoryError and a signal of its own
(MEMORY_SIGNAL, a real-time signal: it never merges with a SIGINT), never counted as an interrupt;
landing in the kernel's code it stays pending, and the guard's thread asks again (no thread is
started from the handler: under memory pressure a thread's start-up may fail). The signal is not even
sent while the main thread runs the kernel's code: with the memory full, the interpreter may fail to
call the handler, and that MemoryError lands wherever the thread is.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from typing import Callable

from ipymini.kernelcode import in_kernel_code
from ipymini.scheduling import cell_asyncio, thread_interrupt

MEMORY_SIGNAL = signal.SIGRTMAX - 3  # the memory guard's; nothing else sends it

class Interrupts:
    """Delivers interrupts to a kernel's running cells (see module docstring)."""

    def __init__(self, parent_worker, subshells, debugger: Callable[[], object]):
        """`parent_worker`: the parent shell's worker; `subshells`: the SubshellManager; `debugger()`: the
        kernel's Debugger, or None while no frontend started one."""
        self.parent_worker = parent_worker
        self.subshells = subshells
        self.debugger = debugger
        self.main_thread_ident = threading.main_thread().ident
        self.count = 0  # SIGINTs seen: lets code that swallows KeyboardInterrupt (`!cmd`) notice
        self._retry = False  # the next SIGINT is our own retry of a deferred interrupt
        self._memory_error = None  # what the memory guard's signal raises in the parent shell's cell

    def install(self) -> None:
        """Take over SIGINT (on the main thread)."""
        signal.signal(signal.SIGINT, self._on_sigint)
        signal.signal(MEMORY_SIGNAL, self._on_memory_signal)

    def interrupt(self) -> None:
        """Interrupt every running cell, as a SIGINT from the kernel manager does.

        As the leader of its process group (lifecycle.py), the kernel sends the SIGINT to the whole
        group as signal mode does, so a child the cell waits on (os.system, a pipeline) stops too;
        otherwise only the main thread is signalled.
        """
        try:
            if os.getpgid(0) == os.getpid():
                os.killpg(os.getpid(), signal.SIGINT)
                return
        except OSError:
            pass
        self.interrupt_main()

    def interrupt_main(self) -> None:
        """Send SIGINT to the main thread; its handler interrupts the subshells as well."""
        signal.pthread_kill(self.main_thread_ident, signal.SIGINT)

    def stop_cells(self, exception: type[BaseException], threads=()) -> None:
        """Raise `exception` in every cell computing now, on any shell, and in `threads` (the user's
        threads those cells started), in their own code only (the memory guard's MemoryError). A cell
        awaiting is left alone: what it awaits fails instead."""
        for worker in self.subshells.workers():
            worker.raise_now(exception)
        for thread in threads:
            thread_interrupt.raise_in_users_thread(thread, exception)
        if self.parent_worker.busy:
            self._memory_error = exception
            # not while the main thread runs the kernel's code (it would stay pending there anyway):
            # the memory is full when this comes, and a handler the interpreter cannot even call for
            # want of memory raises MemoryError wherever the thread is, a lock just taken, say
            main = self.main_thread_ident
            if threading.get_ident() == main or not in_kernel_code(sys._current_frames().get(main)):
                signal.pthread_kill(main, MEMORY_SIGNAL)

    def _on_memory_signal(self, signum, frame) -> None:
        exception, self._memory_error = self._memory_error, None
        if exception is None:
            return
        try:
            lands = self._memory_error_lands(frame)
        except MemoryError:
            # no memory even to look (the memory is full: that is when this signal comes): an error
            # escaping this handler would land in whatever it interrupted, a lock just taken by the
            # kernel's output code, say, held for ever then. Pending: the guard asks again.
            lands = None
        if lands:
            raise exception
        if lands is None:
            self._memory_error = exception  # in the kernel's own code: pending (memory_stop_pending)

    def _memory_error_lands(self, frame) -> bool | None:
        """Whether the memory guard's MemoryError is raised where the main thread is (`frame`): True
        in a cell's code, False when no cell computes there (or it is stopped at a breakpoint: it
        allocates nothing), None in the kernel's own code (it stays pending)."""
        parent = self.parent_worker
        task = parent.cell_task
        if not (parent.executing or (task is not None and asyncio.current_task(parent.loop) is task)):
            return False
        debugger = self.debugger()
        if debugger is not None and debugger.in_debugger(frame):
            return False
        return None if in_kernel_code(frame) else True

    def memory_stop_pending(self) -> bool:
        """Whether the memory guard's MemoryError has not landed yet in the parent shell's running
        cell (its signal came while the kernel's own code ran): the guard asks again."""
        return self._memory_error is not None and self.parent_worker.busy

    def _on_sigint(self, signum, frame) -> None:
        try:
            self._interrupt_where(frame)
        except MemoryError:  # (see _on_memory_signal) no memory to handle it: this interrupt is lost,
            pass  # rather than an error landing in the kernel's code

    def _interrupt_where(self, frame) -> None:
        """SIGINT's work: KeyboardInterrupt raised here (in `frame`) if a cell computes in its own code."""
        self.count += 1
        if self._retry:
            self._retry = False
        else:
            for worker in self.subshells.workers():
                worker.interrupt()
        parent = self.parent_worker
        task = parent.cell_task
        computing = parent.executing or (task is not None and asyncio.current_task(parent.loop) is task)
        if computing:
            debugger = self.debugger()
            if debugger is not None and debugger.in_debugger(frame):
                # a cell stopped at a breakpoint: resume it, then interrupt it in its own code
                self._retry = True
                debugger.resume_for_interrupt(retry=self.interrupt_main)
                return
            if in_kernel_code(frame):
                # never break the kernel's own bookkeeping (output queue, wake-ups): try again soon
                self._retry = True
                retry = threading.Timer(0.002, self.interrupt_main)
                retry.name = "ipymini-interrupt-retry"
                retry.start()
                return
            if cell_asyncio.interrupt_runner(frame):
                return
            raise KeyboardInterrupt
        if task is not None:
            parent.interrupt()  # the cell awaits: cancel it
        # idle (or inside the kernel's own code between cells): nothing to interrupt
