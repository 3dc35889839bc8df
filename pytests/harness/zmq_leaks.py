"""ZMQ contexts a test module leaves open are destroyed when the module ends, and named.

A context dropped with sockets still open (a KernelManager whose kernel died, so nothing shut it down;
a client never stopped) is freed by the garbage collector later, in whatever test collects then. Its
finalizer calls `destroy()`, which closes the sockets it still knows of (a WeakSet, already emptied for
sockets in the same garbage) and then `term()`, which waits for every socket to close: for ever, in C,
where no timeout's signal handler can run. On free-threaded builds the collector finalized such a
context before its sockets, and the suite hung in an unrelated test's `gc.collect()` (DEVLOG, session
13). Destroying leaked contexts while their sockets are still reachable closes them first.
"""

from __future__ import annotations

import gc
import warnings

import pytest
import zmq


def open_contexts() -> list:
    """ZMQ contexts alive and not closed, besides those pyzmq keeps for the whole process: its global
    instance, and its garbage collector's (whose thread aborts the process if its socket is closed)."""
    from zmq.utils.garbage import gc as zmq_garbage

    kept = (zmq.Context._instance, zmq_garbage._context)
    found = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, zmq.Context) and not obj.closed and not any(obj is k for k in kept):
                found.append(obj)
        except ReferenceError:
            pass
    return found


@pytest.fixture(scope="module", autouse=True)
def no_leaked_zmq_contexts(request):
    """Autouse, set up before the module's other fixtures and so finalized after them."""
    before = open_contexts()  # (the objects, not their ids: a freed one's id may come back)
    yield
    leaked = [c for c in open_contexts() if not any(c is b for b in before)]
    del before
    for ctx in leaked:
        ctx.destroy(linger=0)
    if leaked:
        warnings.warn(pytest.PytestWarning(
            f"{request.module.__name__} left {len(leaked)} ZMQ context(s) open; destroyed at its end"))
