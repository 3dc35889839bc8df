"""In-process: an interrupt raised into a subshell's thread never lands after its cell ended.

With the GIL, a subshell is interrupted by setting an exception for its thread, which lands at the
thread's next bytecode. A cell that ended between the check and that bytecode used to get the
KeyboardInterrupt in what ran next (IPython's post_execute hooks: "Error in callback ..." in an ok
cell, seen in a loaded chaos run with pyplot). Ending a cell now takes back what has not landed.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

from ipymini.scheduling import thread_interrupt


class FakeWorker:
    """What `_Computing` needs of a subshell worker."""

    def __init__(self):
        self.executing = False
        self.thread = threading.current_thread()


@pytest.mark.skipif(not getattr(sys, "_is_gil_enabled", lambda: True)(),
                    reason="free-threaded builds raise from the thread itself (sys.monitoring): no race")
def test_an_interrupt_set_as_the_cell_ends_does_not_land_after_it(monkeypatch):
    from ipymini.scheduling.workers import _Computing

    worker = FakeWorker()
    cell_may_end, landed = threading.Event(), []

    def in_kernel_code(frame):
        # the sampler looked and is about to raise: let the cell end now, and give it time to get to
        # the end of its `with` (it then waits for the sampler, which holds the raising lock)
        cell_may_end.set()
        time.sleep(0.05)
        return False

    monkeypatch.setattr(thread_interrupt, "in_kernel_code", in_kernel_code)

    def run_cell():
        computing = _Computing(worker)
        computing.__enter__()
        try:
            thread_interrupt.raise_in_thread(threading.current_thread(), lambda: worker.executing)
            cell_may_end.wait(5)
        except KeyboardInterrupt:
            landed.append("in the cell")  # (fine: the cell was still running)
        try:
            computing.__exit__(None, None, None)
        except KeyboardInterrupt:  # set before the cell ended: it ends the cell (the kernel reports it)
            landed.append("as the cell ended")
        try:
            for _ in range(200):  # what runs after the cell (post_execute hooks)
                time.sleep(0.001)
        except KeyboardInterrupt:
            landed.append("after the cell")

    thread = threading.Thread(target=run_cell)
    thread.start()
    thread.join(10)
    assert "after the cell" not in landed, landed
    assert len(landed) <= 1
    # landing at the acquire of the raising lock (3.14+ checks right after the call) left it held
    assert thread_interrupt._raising.acquire(timeout=5), "the raising lock was left held"
    thread_interrupt._raising.release()


@pytest.mark.skipif(not getattr(sys, "_is_gil_enabled", lambda: True)(), reason="with the GIL only")
def test_a_users_thread_that_moved_on_during_the_look_is_not_raised_into(monkeypatch):
    """Looking at a thread's code can let it run (the first look at a file name reads the file system,
    releasing the GIL): a thread no longer in the frame that was looked at is left alone, or the
    exception would land in whatever it runs now (the kernel's output code taking a lock: a wedge)."""
    stop, seen = threading.Event(), []
    thread = threading.Thread(target=stop.wait, args=(30,), daemon=True)
    thread.start()
    here, elsewhere = sys._getframe(), sys._getframe().f_back
    frames = iter([{thread.ident: here}, {thread.ident: elsewhere}])
    monkeypatch.setattr(thread_interrupt.sys, "_current_frames", lambda: next(frames))
    monkeypatch.setattr(thread_interrupt, "in_users_own_code", lambda frame: seen.append(frame) or True)
    monkeypatch.setattr(thread_interrupt, "in_kernel_code", lambda frame: False)
    try:
        assert thread_interrupt.raise_in_users_thread(thread, MemoryError) is False
        assert seen == [here]
    finally:
        stop.set()
        thread.join(10)


@pytest.mark.skipif(not hasattr(sys, "monitoring"), reason="sys.monitoring is 3.12+")
def test_the_monitoring_targets_are_replaced_never_changed_in_place():
    """Every thread reads the targets at every line while an interrupt is on its way, without a lock;
    on free-threaded builds a dict that changes size while another thread looks into it is a
    use-after-free class of CPython (gh-149816, gh-144295): arm and disarm put a new dict in place."""
    monitoring = thread_interrupt._MonitoringInterrupts()
    never = lambda: False  # noqa: E731 (nothing is raised: the callback sees it is not wanted)
    try:
        assert monitoring.arm(1, never)
        first = monitoring.targets
        assert monitoring.arm(2, never, MemoryError)
        second = monitoring.targets
        assert second is not first and set(first) == {1} and set(second) == {1, 2}
        monitoring.disarm(1)
        assert monitoring.targets is not second and set(second) == {1, 2}
        assert monitoring.targets == {2: (never, MemoryError)}
    finally:
        monitoring.disarm(1)
        monitoring.disarm(2)
    assert monitoring.targets == {} and monitoring._tool is None  # the tool id is given back
