"""Shell workers: the parent shell and JEP 91 subshells.

A ShellWorker serves one shell's requests in arrival order on one thread's asyncio loop: the parent
shell on the main thread, each subshell on a thread of its own. All share IPython's user namespace.
A worker owns what is per-shell: its queue, its abort window after an error, whether a cell is running
(for interrupts), and for subshells their own execution count and history (the parent's In/Out and
IPython history are left alone).

Interrupts: SIGINT reaches the main thread only. The kernel's handler interrupts every running
subshell too: a cell that awaits is cancelled; a cell computing on its thread gets KeyboardInterrupt
raised asynchronously at its next bytecode (a blocking C call such as time.sleep finishes first).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import deque
from typing import Callable

from ipymini.output import routing
from ipymini.scheduling.cell_asyncio import KernelEventLoop
from ipymini.scheduling.stdin import INPUT_INTERRUPTED
from ipymini.scheduling.thread_interrupt import raise_in_thread, raise_now, withdraw

log = logging.getLogger("ipymini")

class _Computing:
    """`with worker.computing():` a cell runs synchronously on the worker's thread."""

    __slots__ = ("worker",)

    def __init__(self, worker):
        self.worker = worker

    def __enter__(self):
        self.worker.executing = True

    def __exit__(self, *exc_info):
        self.worker.executing = False
        if self.worker.thread is not None:  # a subshell: interrupts are raised into its thread
            withdraw()


class _Awaiting:
    """`with worker.awaiting(task, cell):` the worker's cell runs as `task`, which the worker awaits;
    `cell` is its RunningCell, which an interrupt marks."""

    __slots__ = ("worker", "task", "cell")

    def __init__(self, worker, task, cell):
        self.worker, self.task, self.cell = worker, task, cell

    def __enter__(self):
        self.worker.awaited_cell = self.cell
        self.worker.cell_task = self.task

    def __exit__(self, *exc_info):
        self.worker.cell_task = self.worker.awaited_cell = None


class ShellWorker:
    """One shell's request queue, served in order on its own asyncio loop."""

    def __init__(self, handle: Callable, answer_aborted: Callable, subshell_id: str | None = None):
        """`await handle(req, worker)` answers a request; `answer_aborted(req)` answers one that will
        never run (its subshell was deleted)."""
        self._handle = handle
        self._answer_aborted = answer_aborted
        self.subshell_id = subshell_id
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: deque = deque()  # requests waiting their turn, in arrival order
        self._wakeup: asyncio.Future | None = None  # what `serve` awaits while `pending` is empty
        # requests handed to this worker's loop from other threads, and how many have arrived: one
        # received on the worker's own thread is queued directly only when none is on its way
        self.handed = 0  # (changed under the IO lock)
        self.arrived = 0  # (changed on this worker's loop)
        self.on_busy = self.on_idle = None  # called when this worker starts work / runs out of it
        self.thread: threading.Thread | None = None
        self.seq = 0  # requests received, in order
        self.abort_through = 0  # execute requests received up to this number are aborted
        self.executing = False  # a synchronous cell runs on this worker's thread
        self.cell_task: asyncio.Task | None = None  # the running cell, while it awaits
        self.awaited_cell = None  # the running cell's record while it awaits (interrupt() marks it)
        self.cells = None  # its cells' execution count and history (shell/history.py), from the kernel
        self.input_waiter = None  # the queue an input() on this shell waits on
        self.thread_ident = None  # the thread whose loop serves this worker
        self._ready = threading.Event()
        self._stopped = False

    # -- any thread --

    def number(self, req) -> None:
        """Give a request its place in this shell's arrival order (called with the IO sockets' lock
        held, so `seq` needs no lock of its own)."""
        self.seq += 1
        req.seq = self.seq
        req.worker = self

    def submit(self, req) -> None:
        """Queue a request (called with the IO sockets' lock held)."""
        self.number(req)
        if threading.get_ident() == self.thread_ident and self.handed == self.arrived:
            self.enqueue(req)  # nothing is on its way through the loop that it could overtake
        else:
            self.hand_over(self.enqueue, req)

    def hand_over(self, handle, req) -> None:
        """Run `handle(req)` on this worker's loop (called with the IO sockets' lock held)."""
        self.handed += 1
        self.loop.call_soon_threadsafe(self._arrive, handle, req)

    def _arrive(self, handle, req) -> None:
        self.arrived += 1
        handle(req)

    def enqueue(self, req) -> None:
        """On this worker's loop: add a request to the line, in arrival order (one that went through
        the loop, a comm message that came while a cell awaited, may find later ones queued)."""
        pending = self.pending
        if pending and pending[-1].seq > req.seq:
            later = next(i for i, r in enumerate(pending) if r.seq > req.seq)
            pending.insert(later, req)
        else:
            pending.append(req)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def interrupt(self) -> None:
        """Stop the running cell, if any, with KeyboardInterrupt (called from the main thread)."""
        task = self.cell_task
        waiter = self.input_waiter
        if waiter is not None and self.thread is not None:
            waiter.put(INPUT_INTERRUPTED)  # a subshell waiting in input()
        elif task is not None:
            cell = self.awaited_cell
            if cell is not None:
                cell.interrupted = True
            self.loop.call_soon_threadsafe(task.cancel)
        elif self.executing and self.thread is not None:
            raise_in_thread(self.thread, lambda: self.executing)

    def raise_now(self, exception: type[BaseException]) -> bool:
        """Raise `exception` in this subshell's cell if it computes in user code (not in the kernel's),
        at once or, without the GIL, at its next line; whether it was (thread_interrupt.raise_now)."""
        thread = self.thread
        if not self.executing or thread is None:
            return False
        return raise_now(thread, exception, lambda: self.executing)

    def computing(self) -> _Computing:
        """A context manager around a cell running synchronously on this worker's thread."""
        return _Computing(self)

    def awaiting(self, task: asyncio.Task, cell) -> _Awaiting:
        """A context manager around awaiting the running cell's task; `cell` (shell.zmqshell's
        RunningCell) is marked when an interrupt cancels it."""
        return _Awaiting(self, task, cell)

    @property
    def busy(self) -> bool:
        return self.executing or self.cell_task is not None

    # -- the parent shell, on the main thread's loop --

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve on `loop`, which runs on the calling thread."""
        self.loop = loop
        self.thread_ident = threading.get_ident()
        self.pending.clear()

    async def serve(self) -> None:
        """Handle this shell's requests one after another, forever."""
        while True:
            if not self.pending and self.on_idle is not None:
                self.on_idle()
            while not self.pending:
                self._wakeup = self.loop.create_future()
                try:
                    await self._wakeup
                finally:
                    self._wakeup = None
            req = self.pending.popleft()
            if self.on_busy is not None:
                self.on_busy()
            try:
                await self._handle(req, self)
            except Exception:  # a kernel bug must cost one request, never the shell
                log.exception("error serving a %s request", self.subshell_id or "shell")

    # -- a subshell's own thread --

    def start_thread(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"ipymini-subshell-{self.subshell_id}",
                                       daemon=True)
        # subshell cells are not debugged (as in ipykernel): pydevd neither traces nor lists the thread
        self.thread.pydev_do_not_trace = self.thread.is_pydev_daemon_thread = True
        routing.start_outside_requests(self.thread)
        self._ready.wait(10)

    def _run(self) -> None:
        loop = KernelEventLoop()
        asyncio.set_event_loop(loop)
        self.attach(loop)
        serving = loop.create_task(self.serve())
        self._ready.set()
        try:
            while not self._stopped:
                try:
                    loop.run_forever()
                except KeyboardInterrupt:
                    # an interrupt that escaped a cell; serve on unless we were asked to stop
                    if serving.done() and not self._stopped:
                        serving = loop.create_task(self.serve())
        finally:
            serving.cancel()
            try:
                loop.run_until_complete(asyncio.gather(serving, return_exceptions=True))
            except BaseException:
                pass
            # deleted: no request can reach this worker any more (see SubshellManager.delete), and
            # the ones that got here still get their one reply and idle
            while self.pending:
                try:
                    self._answer_aborted(self.pending.popleft())
                except Exception:
                    log.exception("could not answer a request of a deleted subshell")
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop this subshell's thread, interrupting a running cell first."""
        self._stopped = True
        if self.busy:
            self.interrupt()
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)


class SubshellManager:
    """The live subshells by id (thread-safe: used by the control, IO and main threads)."""

    def __init__(self, new_worker: Callable[[str], ShellWorker], routing_lock):
        """`new_worker(subshell_id)` makes a subshell's worker; `routing_lock` is the lock requests
        are routed to workers under (the IO sockets' lock)."""
        self._new_worker = new_worker
        self._routing_lock = routing_lock
        # reentrant: the SIGINT handler lists the subshells to interrupt them, and it runs on the main
        # thread between any two bytecodes, possibly inside `get` there (a plain Lock: the main thread
        # waited for itself, and the control thread, holding the IO lock, for it; seen on 3.13t)
        self._lock = threading.RLock()
        self._workers: dict[str, ShellWorker] = {}

    def create(self) -> str:
        subshell_id = str(uuid.uuid4())
        worker = self._new_worker(subshell_id)
        worker.start_thread()
        with self._lock:
            self._workers[subshell_id] = worker
        return subshell_id

    def get(self, subshell_id: str) -> ShellWorker | None:
        with self._lock:
            return self._workers.get(subshell_id)

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._workers)

    def workers(self) -> list[ShellWorker]:
        with self._lock:
            return list(self._workers.values())

    def delete(self, subshell_id: str) -> bool:
        """Stop and forget a subshell; False if there is no such subshell."""
        # under the IO lock: once it is released, no request can be handed to this worker any more
        # (requests are routed holding it), so stopping it answers every request it was given
        with self._routing_lock, self._lock:
            worker = self._workers.pop(subshell_id, None)
        if worker is None:
            return False
        worker.stop()
        return True

    def stop_all(self) -> None:
        for subshell_id in self.ids():
            self.delete(subshell_id)
