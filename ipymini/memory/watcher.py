"""The memory guard: watches the kernel's memory, stops a cell near the limit, describes what happened.

Three things keep a cell from taking the kernel down with it:
- the address-space bound (bound.py) refuses, in any code, a mapping that could not fit in the room
  left: a huge NumPy array, a C loop allocating, a thread pool allocating all fail with MemoryError;
- this thread samples the memory (limits.py) at a rate set by the room left (every 0.5 s when far, every
  2 ms when close) and, once a budget is past its margin while a cell computes and the kernel itself
  grew during it, raises MemoryError in the cell's thread, where an interrupt would be raised (in user
  code only: the kernel gives `stop_cells`). That covers what the bound cannot see: memory mapped
  earlier and written now, shared memory, other processes in the same cgroup;
- after such a cell the error says what happened in one line, and the memory it held is given back
  (recovery.py). Its record (lastcell.py) tells the next kernel if this one dies anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ipymini import patches
from ipymini.memory import mallocstate, recovery
from ipymini.memory.bound import AddressBound, install
from ipymini.memory.lastcell import LastCell
from ipymini.memory.limits import Limits, Sample, human

log = logging.getLogger("ipymini")

RATE = 8 << 30  # bytes a second: the fastest a cell is assumed to fill memory
MIN_INTERVAL, MAX_INTERVAL = 0.002, 0.5  # seconds between samples
FOLLOW_INTERVAL = 0.01  # between samples while a stopped cell has not shown its MemoryError yet
STOP_LANDS = 2.0  # seconds a thread that stopped its cell waits, alive, for the stop to land
GROWTH_MIN = 16 << 20  # a cell is stopped only if the kernel grew this much since it started
TRIM_OVER = 32 << 20  # memory malloc holds free, past which it is returned while idle
TRIM_EVERY, TRIM_BACKOFF = 1.0, 64.0  # seconds between such trims; up to this when they free little


class MemoryGuard:
    """The guard of one kernel (see the module docstring); `limits` None: off (the record stays)."""

    def __init__(self, limits: Limits | None, record: LastCell | None,
                 cells_computing: Callable[[], bool], stop_cells: Callable[[list], None],
                 stop_pending: Callable[[], bool] = lambda: False):
        """`cells_computing()`: whether a cell computes now, on any shell; `stop_cells(threads)`: raise
        MemoryError in every cell computing and in `threads` (the user's, started since the running
        cells began), in their own code; `stop_pending()`: whether one asked for has not landed yet
        in a cell (it came while the kernel's own code ran)."""
        self.limits = limits
        self.record = record
        self._computing = cells_computing
        self._stop_cells_and_threads = stop_cells
        # when the running cells began (time.monotonic()), None when none runs: [the parent shell's, a
        # subshell's]. Two fixed slots, never resized: other threads read them without a lock (a dict
        # that changes size meanwhile is a use-after-free class of free-threaded CPython: gh-144295, gh-149816)
        self._cells_began: list[float | None] = [None, None]
        self._stop_pending = stop_pending
        self._cell_done = threading.Event()  # the running cell shows its MemoryError, or has ended
        self._lock = threading.Lock()  # one sample and its bound at a time
        self._closing = False
        self._wake = threading.Event()  # set at shutdown, and by a stop asked from another thread
        self._thread: threading.Thread | None = None
        self.bound = AddressBound(self._sample_and_bound, limits.mapped) if limits is not None else None
        self.last: Sample | None = limits.sample() if limits is not None else None
        self._base = self.last.kernel_anon if self.last else 0  # the kernel's size when the cell began
        self._peak_base = self.last.peak_resident if self.last else 0  # its highest then (VmHWM)
        self._peak = list(self.last.used) if self.last else []  # each budget's highest, this cell
        self._start = self.last.used if self.last else []  # each budget's use when the cell began
        self._cell_samples = 0  # samples taken while the cell ran
        self._start_unused = 0  # mapped memory not in use, counted as used, when the cell began
        self._grant = 0  # room given to show and recover from a MemoryError
        self._showing = False  # the running cell's MemoryError is being shown: no more stops
        self._stopped_cell = False  # this guard stopped the running cell
        self._stop_asked = False  # a thread that died of MemoryError could not stop the cell itself
        self.stops = 0  # cells stopped with MemoryError
        self._next_trim, self._trim_every = 0.0, TRIM_EVERY  # (see _trim_when_idle)
        kills = {b.source: b.oom_kills() for b in limits.budgets} if limits is not None else {}
        self._notice = record.notice({source: n for source, n in kills.items() if n is not None}) \
            if record is not None else None

    def start(self) -> None:
        if self.limits is None:
            return
        install(self.bound)
        patches.patch(threading, "excepthook", self._thread_failed(threading.excepthook))
        s = self._sample_and_bound()
        self.bound.cell_began(s.data, s.kernel_anon)  # (what start-up mapped and left unwritten)
        self._sample_and_bound()
        thread = threading.Thread(target=self._run, name="ipymini-memory", daemon=True)
        thread.pydev_do_not_trace = thread.is_pydev_daemon_thread = True  # hidden from the debugger
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """At shutdown: the thread ends, the bound goes, the record is removed."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2)
        if self.bound is not None:
            self.bound.close()
        if self.limits is not None:
            self.limits.close()
        if self.record is not None:
            self.record.close()

    # -- the thread --

    def _run(self) -> None:
        interval = 0.0
        while True:
            self._wake.wait(interval)
            self._wake.clear()
            if self._closing:
                return
            try:
                interval = self._tick()
            except MemoryError:
                interval = MIN_INTERVAL * 5
            except Exception:
                log.exception("the memory guard failed to sample")
                interval = MAX_INTERVAL

    def _tick(self) -> float:
        s = self._sample_and_bound()
        computing = self._computing()
        self._cell_samples += computing
        if not computing and self.bound.reusable > TRIM_OVER and recovery.no_user_threads():
            self._trim_when_idle(s)
        follow = MAX_INTERVAL
        if self._stop_asked:
            self._stop_asked = False
            if computing and not self._showing:
                self._stop()
                return MIN_INTERVAL
        if computing and self._stopped_cell and not self._showing:
            if self._stop_pending():
                self._stop_cells()  # (it came while the kernel's own code ran)
                return MIN_INTERVAL
            follow = FOLLOW_INTERVAL  # until the cell shows its MemoryError, see that it landed
        if s.spare >= 0:
            return min(max(s.spare / RATE, MIN_INTERVAL), follow)
        if not computing:
            return 0.05  # over, and idle: memory the user's variables hold
        if s.kernel_anon - self._base < GROWTH_MIN or self._showing:
            return 0.02  # the cell did not grow the kernel (another process did), or is ending
        self._stop()
        return MIN_INTERVAL

    def _stop(self) -> None:
        """Raise MemoryError in the running cells (again, if a cell swallowed the last one)."""
        if not self._stopped_cell:
            self.stops += 1
            self._stopped_cell = True
        self.bound.stopping_cell = True  # (a thread the cell is starting may never begin: see bound)
        self._stop_cells()
        if threading.current_thread() is not self._thread:
            self._wake.set()  # (a thread died of MemoryError): should the stop land in the kernel's
            # code, the watcher asks again within FOLLOW_INTERVAL rather than at its next sample

    def _stop_cells(self) -> None:
        """MemoryError into the running cells, and into the threads their code started: a cell's
        threads allocating at once refill memory malloc freed (one thread's arena taken by another
        whose own could not grow) with no new mapping, which the bound cannot refuse."""
        began = self._began()
        since = min(began) if began else time.monotonic()
        self._stop_cells_and_threads(self.bound.user_threads_since(since))

    def _trim_when_idle(self, s: Sample) -> None:
        """Between cells, free memory malloc holds goes back to the system (a `del` of a big list, the
        threads of a failed cell ending after it): the kernel's use is what it really holds."""
        now = time.monotonic()
        if now < self._next_trim:
            return
        recovery.trim()
        mallocstate.forget()  # what it trimmed is reusable and unresident now: it counts at once
        freed = s.kernel_anon - self.limits.sample().kernel_anon
        # trims that free little (free memory in pieces smaller than a page) come less often
        self._trim_every = TRIM_EVERY if freed > TRIM_OVER // 2 else min(self._trim_every * 2, TRIM_BACKOFF)
        self._next_trim = now + self._trim_every

    def _sample_and_bound(self) -> Sample:
        limits = self.limits
        with self._lock:
            s = limits.sample()
            self.last = s
            peak = self._peak
            for i, used in enumerate(s.used):
                if used > peak[i]:
                    peak[i] = used
            threads = not recovery.no_user_threads()
            room = limits.room_for_allocations(s) + self._grant
            self.bound.set(self.bound.soft_limit(s.data, s.kernel_anon, room, threads))
        if self.record is not None:
            budget = limits.budgets[s.worst]
            self.record.sample(s.used[s.worst], budget.limit, s.kernel_anon, budget.oom_kills(),
                               budget.source)
        return s

    def _thread_failed(self, excepthook):
        def thread_failed(args):
            """A thread the running cell started (or one of its threads did) that dies of MemoryError
            (it allocated until the bound refused) stops the cell too: it could not have done its work.
            A thread of an earlier cell does not: one that cell's stop reached late, dying while the
            next cell runs, would stop an innocent cell (the watcher still stops any cell that grows
            past the margin). What its frames held is let go first: printing its traceback needs
            memory, and so do the kernel's own threads (several dying at once print while memory is
            full). The thread then stays until the cell shows its MemoryError or ends (at most
            STOP_LANDS): a cell joining its threads would otherwise see the last one end and finish
            `ok` before the stop landed (seen on 3.13t with the guard forced on: the threads all die
            at once there)."""
            stopping = False
            if issubclass(args.exc_type, MemoryError):
                recovery.clear_traceback(args.exc_traceback)
                if not self._showing and self._computing() and self._of_running_cells(args.thread):
                    stopping = True
                    try:
                        self._stop()
                    except MemoryError:  # (nothing left even for that): the watcher stops it
                        self._stop_asked = True
                        self._wake.set()
            excepthook(args)
            if stopping:
                self._cell_done.wait(STOP_LANDS)
        return thread_failed

    def _began(self) -> list[float]:
        """When each running cell began."""
        return [t for t in self._cells_began if t is not None]

    def _of_running_cells(self, thread: threading.Thread | None) -> bool:
        """Whether the user's code started `thread` since the running cells began."""
        began = self._began()
        return bool(began) and thread is not None and thread in self.bound.user_threads_since(min(began))

    # -- cells (on their own threads) --

    def cell_started(self, parent: bool, count: int, code: str) -> str | None:
        """A cell starts; returns, once, what to tell the user about a previous kernel's death."""
        if self.record is not None:
            self.record.cell_started(0 if parent else 1, count, code)
        self._cells_began[0 if parent else 1] = time.monotonic()
        self._cell_done.clear()
        last = self.last
        if last is not None:
            self._base, self._peak_base = last.kernel_anon, last.peak_resident
            self._peak, self._start, self._cell_samples = [0] * len(last.used), last.used, 0
            self._start_unused = self.bound.unused
            self.bound.cell_began(last.data, last.kernel_anon)
            self.bound.stopping_cell = False
            self._showing = self._stopped_cell = self._stop_asked = False
        notice = self._notice
        if notice is not None:
            self._notice = None
        return notice

    def cell_ended(self, parent: bool) -> None:
        if self.record is not None:
            self.record.cell_ended(0 if parent else 1)
        self._cells_began[0 if parent else 1] = None
        self._cell_done.set()
        last = self.last
        if last is not None and last.spare < 0:  # past the margin: what the cell freed (`del`) goes
            # back now, and the kernel's own work gets its room
            mallocstate.forget()
            self._sample_and_bound()
            if self.bound.reusable > TRIM_OVER and recovery.no_user_threads():
                recovery.trim()
                mallocstate.forget()
                self._sample_and_bound()

    def describe(self, exc: BaseException) -> None:
        """Before a cell's MemoryError is shown: say in it, in one line, how far the cell went, the limit
        and where it comes from, and that the kernel lives on; and give the kernel room to show it."""
        if self.limits is None or getattr(exc, "_ipymini_memory", False):
            return
        self._showing = True
        self._cell_done.set()
        with self._lock:  # (a quarter: threads the cell started may still be allocating, and the
            # bound stays below the limit by that much)
            self._grant = self.limits.margins[self.last.worst] // 4
        try:
            line = self._line(self._sample_and_bound())
            exc._ipymini_memory = True
            if exc.args:
                exc.add_note(line)
            else:
                exc.args = (line,)
        except Exception:  # (an exception class that refuses both; no memory for a sample): the
            log.debug("could not describe a MemoryError", exc_info=True)  # error shows as it is

    def _line(self, s: Sample) -> str:
        i = s.worst
        budget, margin = self.limits.budgets[i], self.limits.margins[i]
        peak = max(self._peak[i], s.used[i])
        new_high = s.peak_resident > self._peak_base
        if new_high and not self._cell_samples:  # C code held the interpreter all along, so no sample
            # was taken, but the kernel set a new high in this cell: it was that much bigger (file
            # pages count in that high too: only when nothing better is known)
            peak = max(peak, s.used[i] + s.peak_resident - s.resident)
        where = f"{human(budget.limit)} limit ({budget.source})"
        whose = "the kernel's memory" if budget.kind == "setting" else "memory in use"
        intact = "The kernel and its variables are intact."
        if self._stopped_cell:
            return f"{whose} reached {human(peak)} of the {where}, so ipymini stopped this cell. {intact}"
        if self._cell_samples or new_high:
            return f"{whose} reached {human(peak)} of the {where}; an allocation that would not fit was " \
                   f"refused. {intact}"
        # C code held the interpreter all along: how far it went was not seen, only where it began
        start = self._start[i] if self._start else s.used[i]
        unused = self._start_unused
        mapped = (f" (and {human(unused)} more was mapped but not in use, which counts as used)"
                  if unused >= 16 << 20 else "")
        return (f"an allocation that would not fit was refused: {whose} was {human(start)} of the {where} "
                f"when this cell began{mapped}. {intact}")

    def after_memory_error(self, exc: BaseException | None) -> str | None:
        """After a cell that ended in MemoryError: give its memory back; a line to show if the kernel
        is still past the margin (the user's own variables hold the memory)."""
        if self.limits is None:
            return None
        recovery.give_back(exc)
        mallocstate.forget()
        self._next_trim, self._trim_every = 0.0, TRIM_EVERY
        with self._lock:
            self._grant = 0
        s = self._sample_and_bound()
        if s.spare >= 0:
            return None
        budget = self.limits.budgets[s.worst]
        return (f"[ipymini] memory in use is still {human(s.used[s.worst])} of the {human(budget.limit)} "
                f"limit after this cell ({budget.source}); the kernel holds {human(s.kernel_anon)}. "
                "Variables hold it: `del` the large ones to free it.\n")

    # -- usage_request --

    def report(self) -> dict:
        """The limit, where it comes from, and the use against it, for usage_request."""
        if self.limits is None:
            return {"enabled": False}
        s = self._sample_and_bound()
        budgets = [{"kind": b.kind, "source": b.source, "limit": b.limit, "used": used,
                    "margin": margin}
                   for b, used, margin in zip(self.limits.budgets, s.used, self.limits.margins)]
        worst = budgets[s.worst]
        return {"enabled": True, "limit": worst["limit"], "source": worst["source"], "used": worst["used"],
                "kernel": s.kernel_anon, "stop_at": worst["limit"] - worst["margin"],
                "malloc_unused": self.bound.unused,
                "budgets": budgets, "cells_stopped": self.stops}
