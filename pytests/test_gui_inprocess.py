"""ToolkitSelector in-process, with a fake toolkit: when the toolkit waits and what select returns
(the real toolkits are driven through the kernel in test_gui.py)."""

import asyncio
import contextvars
import selectors
import socket
import threading

from ipymini.gui.waiting import ToolkitSelector

current = contextvars.ContextVar("current", default=None)


class FakeToolkit:
    """Waits as a toolkit would: blocks on the descriptor with select(), recording each call."""

    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail

    def wait(self, fd, timeout):
        self.calls.append((timeout, current.get()))
        if self.fail:
            raise RuntimeError("toolkit broke")
        import select
        select.select([fd], [], [], timeout)


def make(fail=False):
    inner = selectors.DefaultSelector()
    toolkit = FakeToolkit(fail)
    ctx = contextvars.copy_context()
    ctx.run(current.set, "enabling cell")
    return inner, toolkit, ToolkitSelector(inner, toolkit.wait, ctx)


def test_ready_descriptors_and_zero_timeouts_never_enter_the_toolkit():
    inner, toolkit, sel = make()
    r, w = socket.socketpair()
    sel.register(r, selectors.EVENT_READ, "data")
    assert sel.get_key(r).data == "data" and r in sel.get_map()
    assert sel.select(0) == [] and toolkit.calls == []
    w.send(b"x")
    [(key, events)] = sel.select(5)
    assert key.fileobj is r and events == selectors.EVENT_READ and toolkit.calls == []
    sel.unregister(r)
    assert r not in inner.get_map()
    sel.close()


def test_a_blocking_select_waits_in_the_toolkit_in_the_enabling_context():
    _, toolkit, sel = make()
    r, w = socket.socketpair()
    sel.register(r, selectors.EVENT_READ)
    threading.Timer(0.05, w.send, (b"x",)).start()
    [(key, _)] = sel.select(None)
    assert key.fileobj is r
    assert toolkit.calls == [(None, "enabling cell")]  # the toolkit's callbacks see that context
    assert sel.select(5) and len(toolkit.calls) == 1  # still readable: answered without waiting


def test_a_failing_toolkit_falls_back_to_plain_waiting():
    _, toolkit, sel = make(fail=True)
    r, w = socket.socketpair()
    sel.register(r, selectors.EVENT_READ)
    assert sel.select(0.01) == [] and sel.failed
    threading.Timer(0.05, w.send, (b"x",)).start()
    [(key, _)] = sel.select(5)
    assert key.fileobj is r and len(toolkit.calls) == 1


def test_an_asyncio_loop_runs_timers_and_threadsafe_calls_through_it():
    loop = asyncio.new_event_loop()
    toolkit = FakeToolkit()
    loop._selector = ToolkitSelector(loop._selector, toolkit.wait, contextvars.copy_context())
    done = []
    loop.call_later(0.05, done.append, "timer")
    threading.Timer(0.1, loop.call_soon_threadsafe, (done.append, "threadsafe")).start()
    loop.call_later(0.3, loop.stop)
    loop.run_forever()
    loop.close()
    assert done == ["timer", "threadsafe"] and toolkit.calls
