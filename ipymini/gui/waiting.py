"""How a toolkit's event loop waits in the place of asyncio's selector.

`ToolkitSelector` wraps the selector of the kernel's loop while a GUI loop is active. Registrations go
to the wrapped selector unchanged. A `select` that would block first asks the wrapped selector without
waiting; if nothing is ready, the toolkit runs its own event loop until the wrapped selector's own
descriptor (epoll's, readable as soon as any registered descriptor is) becomes readable or the timeout
passes, then the wrapped selector is asked again. A `select(0)` (asyncio has callbacks ready) never
enters the toolkit, so a busy kernel pays nothing for the GUI.

`SignalWake`: a toolkit blocked in C does not return to Python when SIGINT arrives (Tcl waits on a
condition variable while its notifier thread polls; Qt retries an interrupted poll), so Python's
handler would run only after the next window event. With the signal wake-up descriptor pointed at a
socket the loop watches, SIGINT makes the selector's descriptor readable, the toolkit returns, and the
handler runs at once. A toolkit may watch that socket itself instead (`watch_signal_wake`): Tk drains
it with a C callable, so the handler also runs, in the user's code, while a cell sits in
`root.mainloop()`.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket

log = logging.getLogger("ipymini")


class ToolkitSelector(selectors.BaseSelector):
    """The loop's selector while a toolkit waits for it (see the module docstring).

    `wait(fd, timeout)` runs the toolkit until `fd` is readable or `timeout` seconds (None: no limit)
    have passed; it may return early. It runs inside `context` (a contextvars.Context), so output from
    toolkit callbacks goes where that context sends it.
    """

    def __init__(self, inner: selectors.BaseSelector, wait, context):
        self.inner = inner
        self._wait = wait
        self._context = context
        self._waiting = False
        self.failed = False  # the toolkit's wait raised: plain waiting from then on

    def register(self, fileobj, events, data=None):
        return self.inner.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self.inner.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self.inner.modify(fileobj, events, data)

    def get_key(self, fileobj):
        return self.inner.get_key(fileobj)

    def get_map(self):
        return self.inner.get_map()

    def fileno(self) -> int:
        return self.inner.fileno()

    def close(self) -> None:
        self.inner.close()

    def select(self, timeout=None):
        inner = self.inner
        ready = inner.select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if self.failed or self._waiting:  # (a toolkit callback that turns the loop: no nesting)
            return inner.select(timeout)
        self._waiting = True
        try:
            self._context.run(self._wait, inner.fileno(), timeout)
        except Exception:  # a broken toolkit must never wedge the kernel: wait without it
            log.exception("the GUI event loop failed; the kernel goes on without it")
            self.failed = True
        finally:
            self._waiting = False
        return inner.select(0)


class SignalWake:
    """While active, SIGINT (any signal Python handles) writes to a socket that the loop, or the
    toolkit itself, watches, which wakes a toolkit blocked in C (see the module docstring). Main
    thread only."""

    def __init__(self, loop):
        self._loop = loop
        self._rsock = self._wsock = None
        self._previous = -1
        self._unwatch = None

    def start(self, toolkit) -> None:
        if self._rsock is not None:
            return
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        watch = getattr(toolkit, "watch_signal_wake", None)
        if watch is not None:
            watch(self._rsock)
            self._unwatch = toolkit.unwatch_signal_wake
        else:
            self._loop.add_reader(self._rsock.fileno(), self._drain)
            self._unwatch = lambda sock: self._loop.remove_reader(sock.fileno())
        self._previous = signal.set_wakeup_fd(self._wsock.fileno(), warn_on_full_buffer=False)

    def _drain(self) -> None:
        try:
            while self._rsock.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass

    def stop(self) -> None:
        if self._rsock is None:
            return
        current = signal.set_wakeup_fd(self._previous)
        if current != self._wsock.fileno():  # someone else set it meanwhile: theirs stays
            signal.set_wakeup_fd(current)
        self._unwatch(self._rsock)
        self._rsock.close()
        self._wsock.close()
        self._rsock = self._wsock = None
