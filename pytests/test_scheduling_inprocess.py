"""The scheduling package in-process: ShellWorker, Interrupts and StdinBroker without a kernel process.

- `ShellWorker` (scheduling/workers.py): requests are served one at a time in arrival order, whether they
  came on the worker's own thread or were handed over through its loop; a handler's failure costs one
  request; a deleted subshell interrupts its running cell and answers every request still queued
  (`answer_aborted`), once each; `interrupt()` cancels a cell that awaits, raises KeyboardInterrupt into
  one that computes on a subshell's thread, and ends an input() wait.
- `Interrupts` (scheduling/interrupts.py): the SIGINT handler interrupts every subshell and the parent
  shell's cell in user code only (kernel code: retried; a breakpoint: resumed first; an awaiting cell:
  cancelled); the memory guard's signal raises MemoryError, never counted as an interrupt.
- `StdinBroker` (scheduling/stdin.py): input_request to the request's client, each input_reply to the
  prompt it answers, EOF and interrupts.

The kernel-process tests (test_subshells.py, test_interrupt.py, test_stdin.py) stay the proof that the
kernel behaves; these pin each object's own promises and run in about a second.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import signal
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from ipymini.output import routing
from ipymini.protocol.wire import Wire
from ipymini.scheduling import interrupts as interrupts_module
from ipymini.kernelcode import interruptible
from ipymini.scheduling.interrupts import MEMORY_SIGNAL, Interrupts
from ipymini.scheduling.stdin import INPUT_INTERRUPTED, StdinBroker
from ipymini.scheduling.workers import ShellWorker, SubshellManager
from ipymini.shell.zmqshell import RunningCell

TIMEOUT = 10


def req(name="r", **fields):
    """What a worker reads of a request: its place in line (`number` sets seq and worker)."""
    return SimpleNamespace(name=name, seq=None, worker=None, interrupted=False, **fields)


def wait_until(predicate, timeout=TIMEOUT, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


# -- ShellWorker: order --

@pytest.fixture
def subshell():
    """A subshell worker serving on its own thread; `log` has the seq of each request handled."""
    log, aborted = [], []

    async def handle(r, worker):
        log.append(r.seq)
        if getattr(r, "coro", None) is not None:
            await r.coro(r, worker)

    worker = ShellWorker(handle, lambda r: aborted.append(r.seq), subshell_id="sub-1")
    worker.start_thread()
    worker.log, worker.aborted = log, aborted
    yield worker
    worker.stop()
    assert not worker.thread.is_alive()


def test_requests_handed_over_from_another_thread_are_served_in_arrival_order(subshell):
    requests = [req(f"r{i}") for i in range(300)]
    for r in requests:
        subshell.submit(r)  # from the test's thread: each goes through the worker's loop
    wait_until(lambda: len(subshell.log) == 300, what="300 requests")
    assert subshell.log == list(range(1, 301))
    assert all(r.worker is subshell for r in requests)


def test_on_the_workers_own_thread_a_request_never_overtakes_one_on_its_way():
    """Received on the worker's thread with nothing in flight, a request is queued at once; with one
    handed over and not yet arrived, it goes through the loop too, behind that one."""
    handled = []

    async def handle(r, worker):
        handled.append(r.name)

    loop = asyncio.new_event_loop()
    worker = ShellWorker(handle, lambda r: None)
    worker.attach(loop)  # the parent shell: served on this (the test's) thread
    first, second, third = req("first"), req("second"), req("third")
    worker.submit(first)
    assert list(worker.pending) == [first]  # queued directly
    worker.number(second)
    worker.hand_over(worker.enqueue, second)  # as from the IO thread: on its way through the loop
    worker.submit(third)
    assert list(worker.pending) == [first]  # behind `second`, not ahead of it
    serving = loop.create_task(worker.serve())
    try:
        loop.run_until_complete(asyncio.wait_for(_until(lambda: len(handled) == 3), TIMEOUT))
    finally:
        serving.cancel()
        loop.run_until_complete(asyncio.gather(serving, return_exceptions=True))
        loop.close()
    assert handled == ["first", "second", "third"]


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.001)


def test_enqueue_puts_a_late_arrival_back_in_its_place():
    worker = ShellWorker(None, None)
    worker.loop = asyncio.new_event_loop()
    try:
        a, b, c = req("a"), req("b"), req("c")
        for r in (a, b, c):
            worker.number(r)
        for r in (a, c, b):  # b went through the loop (a comm message while a cell awaited)
            worker.enqueue(r)
        assert [r.name for r in worker.pending] == ["a", "b", "c"]
    finally:
        worker.loop.close()


def test_one_request_at_a_time_and_a_failing_handler_costs_only_its_request(subshell, caplog):
    running, overlaps, states = [], [], []
    subshell.on_busy = lambda: states.append("busy")
    subshell.on_idle = lambda: states.append("idle")

    async def work(r, worker):
        running.append(r.seq)
        overlaps.append(len(running))
        await asyncio.sleep(0.005)
        running.remove(r.seq)
        if r.name == "bad":
            raise RuntimeError("a kernel bug")

    names = ["ok", "bad", "ok", "ok"]
    for name in names:
        subshell.submit(req(name, coro=work))
    wait_until(lambda: len(subshell.log) == 4 and not subshell.busy and subshell.awaited_cell is None
               and states[-1:] == ["idle"], what="four requests")
    assert subshell.log == [1, 2, 3, 4]
    assert max(overlaps) == 1
    assert "error serving a sub-1 request" in caplog.text
    assert states.count("busy") == 4  # (and it went idle once the line was empty: waited for above)


# -- ShellWorker: abort and interrupts --

def test_a_deleted_subshell_interrupts_its_cell_and_answers_every_queued_request_once():
    started, aborted, cancelled = [], [], []
    cells = {}

    async def handle(r, worker):
        started.append(r.seq)
        task = asyncio.ensure_future(asyncio.sleep(60))
        cells[r.seq] = cell = RunningCell()
        with worker.awaiting(task, cell):
            try:
                await task
            except asyncio.CancelledError:
                cancelled.append(r.seq)
                raise

    manager = SubshellManager(lambda sid: ShellWorker(handle, lambda r: aborted.append(r.seq), sid),
                              threading.Lock())
    sid = manager.create()
    worker = manager.get(sid)
    requests = [req(f"r{i}") for i in range(5)]
    for r in requests:
        worker.submit(r)
    wait_until(lambda: worker.busy, what="the first cell to start")
    assert manager.delete(sid) is True
    assert not worker.thread.is_alive()
    assert manager.get(sid) is None and manager.delete(sid) is False
    assert started == [1] and cancelled == [1] and cells[1].interrupted
    assert aborted == [2, 3, 4, 5]  # the rest, in order, each answered once


@interruptible  # a wait that holds no kernel state: where a test's "user code" may be interrupted
def _spin(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "finished"


def test_interrupt_raises_into_a_cell_computing_on_a_subshells_thread(subshell):
    outcome = []

    async def compute(r, worker):
        with worker.computing():
            try:
                outcome.append(_spin(TIMEOUT))
            except KeyboardInterrupt:
                outcome.append("interrupted")

    subshell.submit(req("spin", coro=compute))
    wait_until(lambda: subshell.executing, what="the cell to compute")
    t0 = time.monotonic()
    subshell.interrupt()
    wait_until(lambda: outcome, what="the cell to end")
    assert outcome == ["interrupted"] and time.monotonic() - t0 < 5
    subshell.submit(req("after"))  # the worker lives on, and nothing lands after the cell
    wait_until(lambda: len(subshell.log) == 2, what="the next request")
    assert not subshell.executing


def test_interrupt_cancels_a_cell_that_awaits(subshell):
    outcome = []
    cell = RunningCell()

    async def awaiting(r, worker):
        task = asyncio.ensure_future(asyncio.sleep(60))
        with worker.awaiting(task, cell):
            try:
                await task
            except asyncio.CancelledError:
                outcome.append("cancelled")

    r = req("await", coro=awaiting)
    subshell.submit(r)
    wait_until(lambda: subshell.cell_task is not None, what="the cell to await")
    subshell.interrupt()
    wait_until(lambda: outcome, what="the cancellation")
    assert outcome == ["cancelled"] and cell.interrupted and subshell.awaited_cell is None
    wait_until(lambda: not subshell.busy, what="the worker to be free")


def test_interrupt_ends_a_subshells_input_wait_and_an_idle_worker_is_left_alone():
    worker = ShellWorker(None, None, subshell_id="s")
    worker.thread = threading.current_thread()
    worker.interrupt()  # nothing runs: nothing happens
    worker.input_waiter = waiter = queue.SimpleQueue()
    worker.interrupt()
    assert waiter.get_nowait() is INPUT_INTERRUPTED


# -- Interrupts --

class FakeWorker:
    """What Interrupts reads of a worker."""

    def __init__(self, executing=False):
        self.executing = executing
        self.cell_task = None
        self.loop = None
        self.interrupted = 0
        self.raised = []

    @property
    def busy(self):
        return self.executing or self.cell_task is not None

    def interrupt(self):
        self.interrupted += 1

    def raise_now(self, exception):
        self.raised.append(exception)
        return True


class FakeDebugger:
    def __init__(self, stopped):
        self.stopped = stopped
        self.resumed = []

    def in_debugger(self, frame):
        return self.stopped

    def resume_for_interrupt(self, retry):
        self.resumed.append(retry)


def kernel_frame():
    """A frame of ipymini's own code (SubshellManager.create, calling back into the test)."""
    frames = []

    class Worker:
        def start_thread(self):
            pass

    def new_worker(subshell_id):
        frames.append(sys._getframe(1))
        return Worker()

    SubshellManager(new_worker, threading.Lock()).create()
    return frames[0]


@pytest.fixture
def interrupts(monkeypatch):
    main, subs = FakeWorker(), [FakeWorker(), FakeWorker()]
    debugger = [None]
    it = Interrupts(main, SimpleNamespace(workers=lambda: subs), lambda: debugger[0])
    it.retries = []
    monkeypatch.setattr(it, "interrupt_main", lambda: it.retries.append(time.monotonic()))
    it.subs, it.debugger_slot = subs, debugger
    return it


def lands_nothing(handler, signum, frame):
    """Call a signal handler that must not raise here (an unexpected KeyboardInterrupt would end the
    test session instead of failing the test)."""
    try:
        handler(signum, frame)
    except BaseException as e:  # noqa: BLE001
        pytest.fail(f"{type(e).__name__} landed where it must not")


def test_sigint_interrupts_every_subshell_and_an_idle_parent_shell_is_left_alone(interrupts):
    lands_nothing(interrupts._on_sigint, signal.SIGINT, sys._getframe())  # nothing runs
    assert [w.interrupted for w in interrupts.subs] == [1, 1]
    assert interrupts.parent_worker.interrupted == 0 and interrupts.count == 1


def test_sigint_raises_keyboardinterrupt_in_a_cell_running_user_code(interrupts):
    interrupts.parent_worker.executing = True
    with pytest.raises(KeyboardInterrupt):
        interrupts._on_sigint(signal.SIGINT, sys._getframe())
    assert interrupts.retries == []


def test_sigint_in_kernel_code_is_retried_and_the_retry_skips_the_subshells(interrupts):
    interrupts.parent_worker.executing = True
    lands_nothing(interrupts._on_sigint, signal.SIGINT, kernel_frame())
    wait_until(lambda: interrupts.retries, what="the retry")
    assert [w.interrupted for w in interrupts.subs] == [1, 1]
    with pytest.raises(KeyboardInterrupt):  # the retry lands in user code
        interrupts._on_sigint(signal.SIGINT, sys._getframe())
    assert [w.interrupted for w in interrupts.subs] == [1, 1]  # interrupted once, not twice
    assert interrupts.count == 2


def test_sigint_at_a_breakpoint_resumes_the_cell_first(interrupts):
    interrupts.parent_worker.executing = True
    debugger = interrupts.debugger_slot[0] = FakeDebugger(stopped=True)
    lands_nothing(interrupts._on_sigint, signal.SIGINT, sys._getframe())  # not at the breakpoint
    assert debugger.resumed == [interrupts.interrupt_main]
    debugger.stopped = False
    with pytest.raises(KeyboardInterrupt):
        interrupts._on_sigint(signal.SIGINT, sys._getframe())


def test_sigint_cancels_a_parent_shell_cell_that_awaits(interrupts):
    interrupts.parent_worker.cell_task = object()  # a task, but not the one running the handler
    interrupts.parent_worker.loop = loop = asyncio.new_event_loop()
    try:
        lands_nothing(interrupts._on_sigint, signal.SIGINT, sys._getframe())  # not the running task
    finally:
        loop.close()
    assert interrupts.parent_worker.interrupted == 1


def test_stop_cells_raises_memoryerror_in_user_code_and_is_never_an_interrupt(interrupts, monkeypatch):
    sent = []
    monkeypatch.setattr(interrupts_module.signal, "pthread_kill", lambda ident, sig: sent.append(sig))
    interrupts.stop_cells(MemoryError)  # parent shell idle: subshells only
    assert [w.raised for w in interrupts.subs] == [[MemoryError], [MemoryError]] and sent == []
    interrupts.parent_worker.executing = True
    interrupts.stop_cells(MemoryError)
    assert sent == [MEMORY_SIGNAL]
    lands_nothing(interrupts._on_memory_signal, MEMORY_SIGNAL, kernel_frame())  # kernel code: not there
    assert interrupts.retries == []
    interrupts.stop_cells(MemoryError)
    with pytest.raises(MemoryError):
        interrupts._on_memory_signal(MEMORY_SIGNAL, sys._getframe())
    lands_nothing(interrupts._on_memory_signal, MEMORY_SIGNAL, sys._getframe())  # asked once, raised once
    assert interrupts.count == 0
    assert [w.interrupted for w in interrupts.subs] == [0, 0]


def test_the_memory_signal_is_not_sent_while_the_main_thread_runs_kernel_code(interrupts, monkeypatch):
    """With the memory full, even calling a signal handler can fail, and that MemoryError lands
    wherever the main thread is: the guard's thread looks first, and while the main thread runs the
    kernel's code the stop stays pending without a signal (the guard asks again at its next sample)."""
    sent = []
    monkeypatch.setattr(interrupts_module.signal, "pthread_kill", lambda ident, sig: sent.append(sig))
    interrupts.parent_worker.executing = True
    where = {}
    monkeypatch.setattr(interrupts_module.sys, "_current_frames",
                        lambda: {interrupts.main_thread_ident: where["frame"]})

    def from_the_guards_thread():
        t = threading.Thread(target=interrupts.stop_cells, args=(MemoryError,))
        t.start()
        t.join(10)

    where["frame"] = kernel_frame()
    from_the_guards_thread()
    assert sent == [] and interrupts.memory_stop_pending()
    where["frame"] = sys._getframe()  # user code (a test's own frame)
    from_the_guards_thread()
    assert sent == [MEMORY_SIGNAL]


def test_no_memory_in_a_signal_handler_never_lands_an_error_where_it_interrupted(interrupts):
    """The memory guard's signal comes when memory is full: a MemoryError from the handler's own work
    would land in what it interrupted (a lock the output code just took, held for ever: a wedge seen
    with eight threads filling memory). The stop stays pending instead; a SIGINT is dropped."""
    interrupts.parent_worker.executing = True

    def no_memory():
        raise MemoryError

    interrupts.debugger_slot[0] = SimpleNamespace(in_debugger=lambda frame: no_memory())
    interrupts._memory_error = MemoryError
    lands_nothing(interrupts._on_memory_signal, MEMORY_SIGNAL, sys._getframe())
    assert interrupts.memory_stop_pending()
    lands_nothing(interrupts._on_sigint, signal.SIGINT, sys._getframe())
    interrupts.debugger_slot[0] = None
    with pytest.raises(MemoryError):  # memory again: it lands in the cell's code
        interrupts._on_memory_signal(MEMORY_SIGNAL, sys._getframe())
    assert not interrupts.memory_stop_pending()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers are installed on the main thread only")
def test_a_real_sigint_reaches_a_cell_computing_on_the_main_thread():
    main = FakeWorker()
    it = Interrupts(main, SimpleNamespace(workers=lambda: []), lambda: None)
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(MEMORY_SIGNAL)
    it.install()
    try:
        main.executing = True
        timer = threading.Timer(0.05, it.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            _spin(TIMEOUT)
        timer.join(5)
        main.executing = False
        it.interrupt_main()  # idle: the handler does nothing (no KeyboardInterrupt here)
        time.sleep(0.01)
        assert it.count == 2
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(MEMORY_SIGNAL, saved[1])


# -- StdinBroker --

KEY = b"stdin-in-process"


@pytest.fixture
def broker():
    wire = Wire(KEY)
    sent = queue.SimpleQueue()
    b = StdinBroker(wire, sent.put)
    b.wire, b.sent = wire, sent
    return b


def shell_request(wire, allow_stdin=True, worker=None):
    msg = wire.msg("execute_request", {"code": "input()", "allow_stdin": allow_stdin})
    return SimpleNamespace(channel="shell", content=msg["content"], header=msg["header"],
                           idents=[b"client-identity"], worker=worker)


def ask_in_thread(broker, request, prompt="? ", password=False):
    """Call request_input as the cell of `request` would, on a thread; returns (thread, result list)."""
    result = []

    def cell():
        routing.current_request.set(request)
        try:
            result.append(broker.request_input(prompt, password))
        except BaseException as e:  # noqa: BLE001 (the test looks at what the cell got)
            result.append(e)

    thread = threading.Thread(target=contextvars.Context().run, args=(cell,), daemon=True)
    thread.start()
    return thread, result


def input_request(broker):
    """The input_request the broker sent: (routing identities, message)."""
    idents, rest = Wire.split_identities(broker.sent.get(timeout=TIMEOUT))
    return idents, broker.wire.deserialize(rest)


def reply(broker, value, parent=None):
    return broker.wire.msg("input_reply", {"value": value}, parent=parent)


def test_input_goes_to_the_requests_client_and_the_reply_comes_back(broker):
    worker = SimpleNamespace(input_waiter=None)
    request = shell_request(broker.wire, worker=worker)
    thread, result = ask_in_thread(broker, request, "name: ", password=True)
    idents, msg = input_request(broker)
    assert idents == [b"client-identity"]
    assert msg["msg_type"] == "input_request"
    assert msg["content"] == {"prompt": "name: ", "password": True}
    assert msg["parent_header"]["msg_id"] == request.header["msg_id"]
    assert worker.input_waiter is not None  # an interrupt of this shell can end the wait
    broker.deliver(reply(broker, "Ada", parent=msg))
    thread.join(TIMEOUT)
    assert result == ["Ada"] and worker.input_waiter is None


def test_each_reply_answers_its_own_prompt(broker):
    t1, r1 = ask_in_thread(broker, shell_request(broker.wire), "one")
    _, first = input_request(broker)
    t2, r2 = ask_in_thread(broker, shell_request(broker.wire), "two")
    _, second = input_request(broker)
    broker.deliver(reply(broker, "2", parent=second))  # answered in the other order
    broker.deliver(reply(broker, "1", parent=first))
    t1.join(TIMEOUT), t2.join(TIMEOUT)
    assert (r1, r2) == (["1"], ["2"])


def test_stale_and_unexpected_replies_are_dropped_and_a_parentless_one_answers_the_only_prompt(broker, caplog):
    thread, result = ask_in_thread(broker, shell_request(broker.wire))
    input_request(broker)
    broker.deliver(reply(broker, "stale", parent=broker.wire.msg("input_request", {})))
    broker.deliver(broker.wire.msg("execute_request", {}))
    time.sleep(0.05)
    assert result == []  # still waiting
    assert "answers no pending input request" in caplog.text and "unexpected" in caplog.text
    broker.deliver(reply(broker, "no parent"))  # jupyter_client's kc.input() sends none
    thread.join(TIMEOUT)
    assert result == ["no parent"]


def test_eof_shutdown_and_interrupt_end_a_wait(broker):
    from IPython.core.error import StdinNotImplementedError

    thread, result = ask_in_thread(broker, shell_request(broker.wire))
    _, msg = input_request(broker)
    broker.deliver(reply(broker, "\x04", parent=msg))  # Ctrl-D
    thread.join(TIMEOUT)
    assert isinstance(result[0], EOFError) and "EOF when reading a line" in str(result[0])

    thread, result = ask_in_thread(broker, shell_request(broker.wire))
    input_request(broker)
    broker.cancel_all()
    thread.join(TIMEOUT)
    assert isinstance(result[0], EOFError) and "shutting down" in str(result[0])

    worker = SimpleNamespace(input_waiter=None)
    thread, result = ask_in_thread(broker, shell_request(broker.wire, worker=worker))
    input_request(broker)
    worker.input_waiter.put(INPUT_INTERRUPTED)  # what ShellWorker.interrupt does for a subshell
    thread.join(TIMEOUT)
    assert isinstance(result[0], KeyboardInterrupt)

    on_control = SimpleNamespace(**{**vars(shell_request(broker.wire)), "channel": "control"})
    for request in (shell_request(broker.wire, allow_stdin=False), on_control):  # refused at once
        thread, result = ask_in_thread(broker, request)
        thread.join(TIMEOUT)
        assert isinstance(result[0], StdinNotImplementedError)
    assert broker.sent.empty()


def test_a_sigint_landing_while_the_main_thread_looks_up_a_subshell_still_lists_them():
    """The SIGINT handler lists the subshells (to interrupt them) on the main thread, which may be
    inside `SubshellManager.get` at that moment, holding the table's lock. With a plain Lock the main
    thread waited for itself for ever (and the control thread, deleting a subshell under the IO lock,
    for it): the chaos test wedged 3.13t kernels so. Run in a fresh interpreter, so a wedge is a
    timeout here rather than a hung suite."""
    import subprocess

    code = (
        "import signal, threading\n"
        "from ipymini.scheduling.workers import SubshellManager\n"
        "manager = SubshellManager(lambda sid: None, threading.Lock())\n"
        "class Table(dict):\n"
        "    def get(self, key, default=None):\n"
        "        signal.raise_signal(signal.SIGINT)  # its handler runs here, inside get's lock\n"
        "        return super().get(key, default)\n"
        "manager._workers = Table(a='worker a')\n"
        "listed = []\n"
        "signal.signal(signal.SIGINT, lambda signum, frame: listed.append(manager.workers()))\n"
        "print(manager.get('a'), listed)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "worker a [['worker a']]\n"


def _users_function(source: str, name: str):
    """A function compiled as a cell's code is (a file of the user's, outside the installation)."""
    import tempfile
    namespace = {"time": time}
    exec(compile(source, tempfile.gettempdir() + "/ipymini_test/users_cell.py", "exec"), namespace)
    return namespace[name]


def test_only_the_users_own_code_is_the_users():
    from ipymini import kernelcode

    loop = _users_function("def here():\n    import sys\n    return sys._getframe()\n", "here")
    assert kernelcode.in_users_own_code(loop())
    assert not kernelcode.in_users_own_code(None)
    library = SimpleNamespace(f_code=queue.Queue.get.__code__)  # the standard library
    assert not kernelcode.in_users_own_code(library)
    kernel = SimpleNamespace(f_code=Interrupts.stop_cells.__code__)
    assert not kernelcode.in_users_own_code(kernel)
    assert not kernelcode.in_users_own_code(SimpleNamespace(f_code=compile("0", "<string>", "eval")))
    assert not kernelcode.in_users_own_code(SimpleNamespace(f_code=pytest.raises.__code__))  # a package


@pytest.mark.skipif(not getattr(sys, "_is_gil_enabled", lambda: True)(), reason="with the GIL only")
def test_stop_cells_raises_in_the_users_threads_in_their_own_code_only(interrupts, monkeypatch):
    """The memory guard's stop reaches the threads a cell started: one looping in the cell's code gets
    MemoryError; one waiting in a library (a pool's worker on its queue) is left alone."""
    monkeypatch.setattr(interrupts_module.signal, "pthread_kill", lambda ident, sig: None)
    spin = _users_function("def spin(stop):\n    while not stop.is_set():\n        time.sleep(0.001)\n", "spin")
    stop, died = threading.Event(), []
    work = queue.Queue()

    def users():
        try:
            spin(stop)
        except MemoryError:
            died.append("users")

    def waits():
        try:
            work.get(timeout=30)
        except MemoryError:
            died.append("library")

    threads = [threading.Thread(target=users, daemon=True), threading.Thread(target=waits, daemon=True)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while sys._current_frames()[threads[1].ident].f_code is waits.__code__:  # (not in the queue yet)
        assert time.monotonic() < deadline
        time.sleep(0.001)
    while not died and time.monotonic() < deadline:
        interrupts.stop_cells(MemoryError, threads)
        time.sleep(0.005)
    work.put(None)
    stop.set()
    for t in threads:
        t.join(10)
    assert died == ["users"]
