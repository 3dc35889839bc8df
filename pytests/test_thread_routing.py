"""Where output of threads goes (issue 25), through the real kernel, as ipykernel 7.4 routes it.

A thread with no parent of its own writes to the cell running now (else the latest one);
`set_parent` / `set_thread_parent` / `reset_thread_parent` choose otherwise; asyncio tasks keep the
cell that created them. Threads see Python's own contextvars rules (decimal contexts, user
ContextVars). `IPYMINI_THREAD_OUTPUT=starter` keeps a thread's output with the cell that started it,
without copying the user's context. pytests/test_differential.py runs the same cases against ipykernel.
"""

from __future__ import annotations

import ast
import sys
import textwrap

import pytest

from harness import KernelHarness, stream_text, value


@pytest.fixture(scope="module")
def starter_kernel():
    k = KernelHarness(env={"IPYMINI_THREAD_OUTPUT": "starter"})
    yield k
    k.stop()


class Cells:
    """Run cells one after another, keeping every output message with the cell it is parented to."""

    def __init__(self, kernel: KernelHarness):
        self.kernel = kernel
        self.ids: list[str] = []
        self.by_parent: dict[str, list] = {}

    def run(self, code: str) -> int:
        msg_id = self.kernel.kc.execute(textwrap.dedent(code))
        self.ids.append(msg_id)
        reply = self.kernel.shell_reply(msg_id)
        assert reply["content"]["status"] == "ok", reply["content"]
        for m in self.kernel.iopub_until_idle(msg_id, keep_all=True):
            if m["msg_type"] in ("stream", "display_data", "update_display_data"):
                self.by_parent.setdefault(m["parent_header"].get("msg_id"), []).append(m)
        return len(self.ids) - 1

    def stdout(self, cell: int) -> str:
        return stream_text(self.by_parent.get(self.ids[cell], []))

    def displays(self, cell: int) -> list:
        return [m["content"]["data"]["text/plain"] for m in self.by_parent.get(self.ids[cell], [])
                if m["msg_type"] in ("display_data", "update_display_data")]


# ipykernel 7.4's own test (tests/test_kernel.py::test_print_to_correct_cell_from_thread), rewritten
THREAD_CELL = """
from threading import Event, Thread
from IPython.display import display
explicit_parent = {how!r}
parent = get_ipython().get_parent()
cell_start_event, cell_end_event, ready = Event(), Event(), Event()
def thread_target():
    if explicit_parent == "global":
        get_ipython().set_parent(parent)
    elif explicit_parent == "thread-local":
        token = get_ipython().set_thread_parent(parent)
    print("before", flush=True)
    display(1)
    ready.set()
    cell_start_event.wait(timeout=10)
    cell_start_event.clear()
    print("during", flush=True)
    display(2)
    if explicit_parent == "thread-local":
        get_ipython().reset_thread_parent(token)
    cell_end_event.set()
    cell_start_event.wait(timeout=10)
    cell_start_event.clear()
    print("after", flush=True)
    display(3)
thread = Thread(target=thread_target)
thread.start()
ready.wait(10)
"""


@pytest.mark.parametrize("how", ["none", "global", "thread-local"])
def test_print_to_the_right_cell_from_a_thread(kernel, how):
    cells = Cells(kernel)
    first = cells.run(THREAD_CELL.format(how=how))
    second = cells.run("cell_start_event.set()\ncell_end_event.wait(timeout=10)")
    third = cells.run("cell_start_event.set()\nthread.join()")
    if how == "global":
        assert (cells.stdout(first), cells.displays(first)) == ("before\nduring\nafter\n", ["1", "2", "3"])
        assert cells.stdout(second) == cells.stdout(third) == ""
    elif how == "thread-local":
        assert (cells.stdout(first), cells.displays(first)) == ("before\nduring\n", ["1", "2"])
        assert cells.stdout(second) == "" and cells.displays(second) == []
        assert (cells.stdout(third), cells.displays(third)) == ("after\n", ["3"])
    else:
        assert (cells.stdout(first), cells.displays(first)) == ("before\n", ["1"])
        assert (cells.stdout(second), cells.displays(second)) == ("during\n", ["2"])
        assert (cells.stdout(third), cells.displays(third)) == ("after\n", ["3"])


def test_a_child_thread_with_a_thread_parent_prints_to_that_cell(kernel):
    """ipykernel's test_print_to_correct_cell_from_child_thread: a thread started by a thread sets its
    thread parent to the first cell and keeps printing there while later cells run."""
    first = kernel.kc.execute(textwrap.dedent("""
        from threading import Thread, Event
        import time
        parent = get_ipython().get_parent()
        go = Event()
        def child():
            get_ipython().set_thread_parent(parent)
            for i in range(5):
                print(i, end='', flush=True)
                time.sleep(0.05)
        def starter():
            go.wait(10)
            t = Thread(target=child); t.start(); t.join()
        Thread(target=starter).start()
    """))
    kernel.shell_reply(first)
    kernel.iopub_until_idle(first)
    second = kernel.kc.execute("go.set(); time.sleep(1)")
    kernel.shell_reply(second)
    msgs = kernel.iopub_until_idle(second, keep_all=True)
    printed = [m for m in msgs if m["msg_type"] == "stream"]
    assert "".join(m["content"]["text"] for m in printed) == "01234"
    assert {m["parent_header"]["msg_id"] for m in printed} == {first}


def test_a_library_thread_streams_the_results_of_later_cells_into_them(kernel):
    """As ipyparallel's %px, Ray and Bodo do: a long-lived thread made in one cell prints the results
    of later cells while they run; each result shows under its own cell."""
    cells = Cells(kernel)
    cells.run("""
        import queue, threading
        jobs, done = queue.Queue(), queue.Queue()
        def io_thread():
            while (job := jobs.get()) is not None:
                print(f'result of {job}', flush=True)
                done.put(job)
        threading.Thread(target=io_thread, daemon=True).start()
    """)
    later = [cells.run(f"jobs.put('job {i}'); done.get(timeout=10);") for i in range(3)]
    cells.run("jobs.put(None)")
    assert [cells.stdout(c) for c in later] == [f"result of job {i}\n" for i in range(3)]


def test_pools_timers_and_c_threads_write_to_the_running_cell(kernel):
    cells = Cells(kernel)
    cells.run("""
        import _thread, threading, concurrent.futures as cf
        from multiprocessing.pool import ThreadPool
        pool, tpool = cf.ThreadPoolExecutor(1), ThreadPool(1)
        gates = {k: threading.Event() for k in ('pool', 'timer', 'raw')}
        ends = {k: threading.Event() for k in gates}
        def waits(key, text):
            gates[key].wait(10); print(text, flush=True); ends[key].set()
        pool.submit(waits, 'pool', 'pool task')
        threading.Timer(0.01, waits, ('timer', 'timer fired')).start()
        _thread.start_new_thread(waits, ('raw', 'raw thread'))
        # a thread made by C code (pthread_create) that calls back into Python
        import ctypes
        gates['native'], ends['native'] = threading.Event(), threading.Event()
        native = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(lambda arg: waits('native', 'C thread'))
        native_id = ctypes.c_ulong()
        ctypes.CDLL(None).pthread_create(ctypes.byref(native_id), None, native, None)
        tpool.apply(print, ('thread pool, first cell',))
    """)
    outputs = {key: cells.stdout(cells.run(f"gates[{key!r}].set(); ends[{key!r}].wait(10);"))
               for key in ("pool", "timer", "raw", "native")}
    assert outputs == {"pool": "pool task\n", "timer": "timer fired\n", "raw": "raw thread\n",
                       "native": "C thread\n"}
    cells.run("ctypes.CDLL(None).pthread_join(native_id, None)")
    later = cells.run("tpool.apply(print, ('thread pool, later cell',)); pool.submit(print, 'reused').result()")
    assert cells.stdout(later) == "thread pool, later cell\nreused\n"
    assert "thread pool, first cell" in cells.stdout(0)


def test_an_asyncio_task_keeps_the_cell_that_created_it(kernel):
    first = kernel.kc.execute("import asyncio\nev = asyncio.Event()\n"
                              "async def later():\n    await ev.wait()\n    print('from the task')\n"
                              "task = asyncio.ensure_future(later())")
    kernel.shell_reply(first)
    kernel.iopub_until_idle(first)
    second = kernel.kc.execute("ev.set(); await asyncio.sleep(0.2)")
    kernel.shell_reply(second)
    msgs = kernel.iopub_until_idle(second, keep_all=True) + kernel.drain_iopub(0.3)
    [printed] = [m for m in msgs if m["msg_type"] == "stream"]
    assert printed["parent_header"]["msg_id"] == first


CONTEXT_CELL = """
import decimal, contextvars, threading, concurrent.futures as cf
decimal.getcontext().prec = 5
var = contextvars.ContextVar('var', default='unset')
var.set('cell')
seen = []
def look():
    seen.append((decimal.getcontext().prec, var.get()))
t = threading.Thread(target=look); t.start(); t.join()
with cf.ThreadPoolExecutor(1) as ex:
    ex.submit(look).result()
decimal.getcontext().prec = 28
print(seen)
"""


def python_answer() -> list:
    """What plain Python (this interpreter) answers for CONTEXT_CELL."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", CONTEXT_CELL], capture_output=True, text=True, timeout=60)
    return ast.literal_eval(out.stdout)


@pytest.mark.parametrize("mode", ["running", "starter"])
def test_threads_see_pythons_own_contextvars(kernel, starter_kernel, mode):
    """The issue's example: decimal precision and a user ContextVar in a new thread and a pool worker
    are what Python gives them (with the GIL on 3.11-3.13: a fresh context, [28, 'unset'])."""
    k = kernel if mode == "running" else starter_kernel
    seen = ast.literal_eval(stream_text(k.run_ok(CONTEXT_CELL)))
    assert seen == python_answer()
    if not getattr(sys.flags, "thread_inherit_context", 0):
        assert seen == [(28, "unset"), (28, "unset")]


def test_starter_setting_keeps_thread_output_with_its_cell(starter_kernel):
    k = starter_kernel
    cells = Cells(k)
    first = cells.run("""
        import threading, concurrent.futures as cf
        pool = cf.ThreadPoolExecutor(1)
        gate, end = threading.Event(), threading.Event()
        def later():
            gate.wait(10); print('thread of the first cell', flush=True)
            child = threading.Thread(target=print, args=('its child',)); child.start(); child.join()
            end.set()
        threading.Thread(target=later).start()
        pool_gate = threading.Event()
        fut = pool.submit(lambda: (pool_gate.wait(10), print('task of the first cell')))
    """)
    second = cells.run("gate.set(); end.wait(10); pool_gate.set(); fut.result(10)\n"
                       "pool.submit(print, 'task of the second cell').result()")
    assert cells.stdout(second) == "task of the second cell\n"
    applied = ast.literal_eval(value(k, "__import__('ipymini.patches').patches.applied()"))
    assert {"threading.Thread.start", "concurrent.futures.thread.ThreadPoolExecutor.submit"} <= set(applied)
    assert sorted(cells.stdout(first).splitlines()) == [
        "its child", "task of the first cell", "thread of the first cell"]


def test_starter_setting_leaves_explicit_parents_alone(starter_kernel):
    """set_thread_parent still wins; after reset_thread_parent the thread's output goes back to the
    cell that started it (not to the running cell, as by default)."""
    cells = Cells(starter_kernel)
    first = cells.run(THREAD_CELL.format(how="thread-local"))
    second = cells.run("cell_start_event.set()\ncell_end_event.wait(timeout=10)")
    third = cells.run("cell_start_event.set()\nthread.join()")
    assert cells.stdout(second) == cells.stdout(third) == ""
    assert (cells.stdout(first), cells.displays(first)) == ("before\nduring\nafter\n", ["1", "2", "3"])
