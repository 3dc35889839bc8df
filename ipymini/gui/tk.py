"""Tk: the Tcl notifier waits for the kernel's loop while it serves Tk's windows and timers.

A Tcl interpreter of our own, with Tk loaded and its main window withdrawn (so `%gui tk` fails at once
without a display, and `tkinter._default_root` stays the user's). Tcl's event queue is per thread, so
waiting on it serves every Tk window of the main thread: the user's `tkinter.Tk()` roots and
matplotlib's figure windows.
"""

from __future__ import annotations

import math
import os


class TkLoop:
    """`%gui tk`."""

    name = "tk"

    def __init__(self):
        import tkinter

        self._tkinter = tkinter
        interp = tkinter.Tcl()
        interp.tk.call("package", "require", "Tk")  # TclError without a display, as Tk() says it
        interp.tk.call("wm", "withdraw", ".")
        self._tk = interp.tk
        self._woken = False

    def _wake(self, *_args) -> None:
        self._woken = True

    def wait(self, fd: int, timeout: float | None) -> None:
        tk = self._tk
        self._woken = False
        tk.createfilehandler(fd, self._tkinter.READABLE, self._wake)
        timer = None
        if timeout is not None:
            timer = tk.createtimerhandler(math.ceil(timeout * 1000), self._wake)
        try:
            while not self._woken:
                tk.dooneevent(0)  # blocks (without the GIL) until one event has been served
        finally:
            tk.deletefilehandler(fd)
            if timer is not None:
                timer.deletetimerhandler()

    def watch_signal_wake(self, sock) -> None:
        """Tcl reads the signal wake-up socket itself, with `os.read` (C: no Python frame runs, so a
        pending SIGINT's handler runs where control returns to Python: in `root.mainloop()`, the
        cell's own frame, which it interrupts; in `wait`, ours, which is idle). Tkinter calls it as
        `os.read(fd, mask)`: at most 2 bytes (READABLE) a call, again while more are there."""
        self._tk.createfilehandler(sock.fileno(), self._tkinter.READABLE, os.read)

    def unwatch_signal_wake(self, sock) -> None:
        self._tk.deletefilehandler(sock.fileno())

    def leave(self) -> None:
        """The loop is no longer entered (`%gui`); windows stay as they are, as in ipykernel."""

    @staticmethod
    def cancel_figure_timers(figure_managers) -> None:
        """Cancel the pending `after` callbacks of matplotlib's Tk figure windows (each has a Tcl
        interpreter of its own), the figures' timers among them. Closing such a window outside
        `mainloop` runs `update()`, which serves events until none is pending: a timer whose
        callback (a redraw) takes longer than its interval is always pending, and `update()` never
        returns (seen on 3.13t, where drawing is slower than a 10 ms timer)."""
        for manager in figure_managers:
            tk = getattr(getattr(manager, "window", None), "tk", None)
            if tk is None or not hasattr(tk, "splitlist"):
                continue
            try:
                for pending in tk.splitlist(tk.call("after", "info")):
                    tk.call("after", "cancel", pending)
            except Exception:  # (a window already destroyed)
                pass

    def shutdown(self) -> None:
        """The kernel stops: nothing to do (the process's exit closes the display connection)."""
