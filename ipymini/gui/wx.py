"""wx: wxPython's event loop runs while the kernel's loop waits, looking at it every 10 ms.

wxPython has no way to wake its loop on a file descriptor, so the wait dispatches wx events with a
10 ms timeout and checks the kernel loop's descriptor between them (ipykernel polls at the same
interval, with a wx.Timer).
"""

from __future__ import annotations

import select
import signal
import time

POLL = 0.01  # seconds between looks at the kernel loop's descriptor


class WxLoop:
    """`%gui wx`."""

    name = "wx"

    def __init__(self):
        handler = signal.getsignal(signal.SIGINT)
        try:
            import wx

            self.app = wx.App.Get() or wx.App(redirect=False)
        finally:  # importing wx (GTK) takes SIGINT over, behind Python's back: the kernel's again
            signal.signal(signal.SIGINT, handler)
        self._wx = wx
        self.app._in_event_loop = True  # IPython's guisupport: user code must not start MainLoop
        self._loop = wx.GUIEventLoop()

    def wait(self, fd: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        activator = self._wx.EventLoopActivator(self._loop)
        try:
            while not select.select([fd], [], [], 0)[0]:
                left = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                if left <= 0:
                    return
                if not self._loop.Pending():
                    self._loop.ProcessIdle()  # idle handlers: wx.CallAfter, matplotlib's redraws
                self._loop.DispatchTimeout(max(1, int(left * 1000)))
        finally:
            del activator

    def leave(self) -> None:
        self.app._in_event_loop = False

    def shutdown(self) -> None:
        """The kernel stops: close the top-level windows."""
        self.leave()
        for window in self._wx.GetTopLevelWindows():
            window.Destroy()
