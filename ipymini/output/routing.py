"""Which request does a piece of output belong to.

The rules are ipykernel 7.4's (measured side by side; see pytests/test_thread_routing.py):
- The request being handled is `current_request`, a ContextVar set on its worker's thread; asyncio
  tasks copy it when they are created, so a task keeps the cell that created it.
- Code running outside any request (a thread the user started, a pool worker, a `threading.Timer`, a
  thread started by C code) writes to the latest shell request: the one running now, else the last
  one (`set_latest`). Libraries whose long-lived threads stream the results of later cells
  (ipyparallel, Ray, Bodo) rely on this.
- `set_parent` / `set_thread_parent` / `reset_thread_parent` let user code choose.
- Python's own rules for a thread's context are left alone: a new thread starts with an empty context,
  except where the interpreter makes threads inherit their starter's context
  (`sys.flags.thread_inherit_context`, the default on free-threaded 3.14+); there the thread keeps its
  starter's request, as under ipykernel on that interpreter.
- `IPYMINI_THREAD_OUTPUT=starter` (`use_starter_routing`) sends a thread's output to the request of the
  code that started it instead, and a pool task's to its submitter's. This is kept outside the user's
  context (a record per thread, read only when the thread has no request of its own), so what user
  code sees of contextvars does not change.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import weakref

from ipymini import patches

current_request: contextvars.ContextVar = contextvars.ContextVar("ipymini_request", default=None)

_latest = [None]  # the most recent shell request, for output produced outside any request
_starters: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # thread -> its starter's request
_pool_task = threading.local()  # .request: the submitter's request of the pool task running here
_by_starter = False


def set_latest(request) -> None:
    """Remember `request` as the parent of output produced outside any request."""
    _latest[0] = request


def outside_request():
    """The request that output of code with no request of its own belongs to (None before the first
    request)."""
    if _by_starter:
        request = getattr(_pool_task, "request", None) or _starters.get(threading.current_thread())
        if request is not None:
            return request
    return _latest[0]


def parent_request():
    """The request that output produced right now belongs to (or None before the first request)."""
    return current_request.get() or outside_request()


def latest():
    """The most recent shell request (or one given to `set_parent`)."""
    return _latest[0]


def start_outside_requests(thread: threading.Thread) -> None:
    """Start a kernel thread in an empty context, so that it belongs to no request whatever the
    interpreter's thread_inherit_context says (it would otherwise keep the request it was started in)."""
    contextvars.Context().run(thread.start)


# -- ipykernel's parent API on the shell: user code choosing where output goes --

def request_for(parent):
    """The request a parent given by user code stands for: a message or a header. The running
    request itself when it is that one (its output then stays in the same chunks and budget)."""
    from ipymini.protocol.messages import Request

    header = parent.get("header", parent) if isinstance(parent, dict) else None
    if not isinstance(header, dict) or not isinstance(header.get("msg_id"), str):
        raise ValueError("a parent is a message or a message header with a msg_id")
    for known in (current_request.get(), _latest[0]):
        if known is not None and known.header.get("msg_id") == header["msg_id"]:
            return known
    msg = parent if "header" in parent else {"header": header, "parent_header": {},
                                             "metadata": {}, "content": {}}
    return Request("shell", [], msg)


def set_parent(parent) -> None:
    """Output of the calling thread, and of code with no request of its own, goes to `parent`."""
    request = request_for(parent)
    current_request.set(request)
    _latest[0] = request


def set_thread_parent(parent):
    """Output of the calling thread only goes to `parent`; returns a token for reset_thread_parent."""
    return current_request.set(request_for(parent))


def reset_thread_parent(token) -> None:
    """Undo the set_thread_parent call that returned `token`."""
    current_request.reset(token)


def get_parent() -> dict:
    """The message the calling code's output goes to ({} before the first request)."""
    request = parent_request()
    return request.for_user_code() if request is not None else {}


def use_starter_routing() -> None:
    """IPYMINI_THREAD_OUTPUT=starter: a thread's output goes to the request of the code that started
    it, a thread-pool task's to the request of the code that submitted it (when they have none of
    their own)."""
    global _by_starter
    if _by_starter:
        return
    _by_starter = True

    thread_start = threading.Thread.start

    def start(self):
        request = parent_request()
        if request is not None:
            _starters[self] = request
        thread_start(self)

    patches.patch(threading.Thread, "start", start)

    pool_submit = concurrent.futures.ThreadPoolExecutor.submit

    def submit(self, fn, /, *args, **kwargs):
        return pool_submit(self, _as_task_of, parent_request(), fn, args, kwargs)

    patches.patch(concurrent.futures.ThreadPoolExecutor, "submit", submit)


def _as_task_of(request, fn, args, kwargs):
    """Run a pool task with its submitter's request as the fallback parent of its output."""
    previous = getattr(_pool_task, "request", None)
    _pool_task.request = request
    try:
        return fn(*args, **kwargs)
    finally:
        _pool_task.request = previous
