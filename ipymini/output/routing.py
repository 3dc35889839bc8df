"""Which request does a piece of output belong to.

Owns the "current parent" of the running code: a ContextVar holding the request a cell is running for.
asyncio tasks copy it when they are created, and `install_context_propagation` makes threads and
`concurrent.futures` workers copy it too, so output from any of them is routed to the cell that started
them even after that cell has finished. Code that runs outside any request (a thread started before the
first cell, a C callback) falls back to the most recent request.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading

from ipymini import patches

current_request: contextvars.ContextVar = contextvars.ContextVar("ipymini_request", default=None)

_latest = [None]  # the most recent shell request, for output produced outside any request


def set_latest(request) -> None:
    """Remember `request` as the fallback parent for output produced outside any request."""
    _latest[0] = request


def parent_request():
    """The request that output produced right now belongs to (or None before the first request)."""
    return current_request.get() or _latest[0]


def latest():
    """The most recent shell request (or one given to `set_parent`)."""
    return _latest[0]


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
    """Output of the calling thread (and of threads with no request of their own) goes to `parent`."""
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
    return request.msg if request is not None else {}


_installed = False


def install_context_propagation() -> None:
    """Make new threads and thread-pool work items run in the context of the code that started them.

    Python starts threads with an empty context and thread pools reuse workers across submitters, so
    without this a print from a worker would lose track of its cell.
    """
    global _installed
    if _installed:
        return
    _installed = True

    thread_start = threading.Thread.start

    def start(self):
        ctx = contextvars.copy_context()
        run = self.run
        self.run = lambda: ctx.run(run)
        thread_start(self)

    patches.patch(threading.Thread, "start", start)

    pool_submit = concurrent.futures.ThreadPoolExecutor.submit

    def submit(self, fn, /, *args, **kwargs):
        return pool_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

    patches.patch(concurrent.futures.ThreadPoolExecutor, "submit", submit)
