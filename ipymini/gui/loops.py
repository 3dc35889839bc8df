"""Which GUI event loop is active, and switching between them (what `shell.enable_gui` drives).

The names and rules are ipykernel's: `inline`, `nbagg`, `webagg`, `notebook`, `ipympl`, `widget` and
None need no loop (and leave an active one); `qt`/`qt5`/`qt6`, `tk`, `wx`, `gtk`, `gtk3`,
`osx`/`macosx` and `asyncio` name one; another name is a ValueError listing the valid ones, and a
second, different loop is refused while one is active. `asyncio` is the kernel's own loop, always
running: `%gui asyncio` only records it.

Unlike ipykernel, a loop that cannot start (its binding does not import, no display) fails in the
cell that asked for it, and leaves nothing behind; ipykernel reports it only in the kernel's log and
keeps the broken loop (the next `%gui` says "Cannot activate multiple GUI eventloops").
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading

from ipymini import patches
from ipymini.gui.waiting import SignalWake, ToolkitSelector

log = logging.getLogger("ipymini")

# the names `%gui` takes -> the loop they stand for (ipykernel's names, in its order)
LOOPS = {"inline": None, "nbagg": None, "webagg": None, "notebook": None, "ipympl": None,
         "widget": None, None: None, "qt": "qt", "qt5": "qt", "qt6": "qt", "wx": "wx", "tk": "tk",
         "gtk": "gtk", "gtk3": "gtk3", "osx": "osx", "macosx": "osx", "asyncio": "asyncio"}


def start_toolkit(name: str, gui: str):
    """A toolkit's loop, ready to wait (imports its binding: ImportError if it is not installed)."""
    if name == "tk":
        from ipymini.gui.tk import TkLoop

        return TkLoop()
    if name == "qt":
        from ipymini.gui.qt import QtLoop

        return QtLoop(gui)
    if name in ("gtk", "gtk3"):
        from ipymini.gui.gtk import GtkLoop

        return GtkLoop(name)
    if name == "wx":
        from ipymini.gui.wx import WxLoop

        return WxLoop()
    if sys.platform != "darwin":
        raise ImportError(f"the {gui!r} event loop is macOS's (Cocoa); this is {sys.platform}")
    raise NotImplementedError("ipymini has no Cocoa (osx) event loop integration yet; "
                              "%matplotlib qt or tk open figure windows on macOS too")


class GuiLoops:
    """The GUI event loop sharing the main thread with the kernel's asyncio loop `loop`."""

    def __init__(self, loop):
        self._loop = loop
        self.active: str | None = None  # the active loop's name: "tk", "qt", "asyncio", ...
        self._toolkit = None
        self._toolkits: dict = {}  # started ones, kept when left (a QApplication is made once)
        self._selector: ToolkitSelector | None = None
        self._selector_patch = None  # the loop's selector replaced by ours while a toolkit is entered
        self._wake = SignalWake(loop)

    def enable(self, gui) -> None:
        """Enter the loop `gui` names, or leave the active one (None, "inline", ...).

        Output of the toolkit's callbacks goes to the calling code's request (the cell that enabled
        the loop), as in ipykernel, unless they run inside a later cell."""
        if gui not in LOOPS:
            raise ValueError(f"Invalid GUI request {gui!r}, valid ones are:{LOOPS.keys()}")
        name = LOOPS[gui]
        if name is not None and self.active not in (None, name):
            raise RuntimeError("Cannot activate multiple GUI eventloops")
        if name is None:
            self.leave()
            return
        if name == self.active:
            return
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("GUI event loops run on the main thread: enable them from the parent "
                               "shell, not a subshell")
        if name == "asyncio":
            self.active = name
            return
        toolkit = self._toolkits.get(name)
        if toolkit is None:
            toolkit = self._toolkits[name] = start_toolkit(name, gui)
        elif hasattr(toolkit, "reenter"):
            toolkit.reenter(gui)
        self._enter(name, toolkit)

    def _enter(self, name: str, toolkit) -> None:
        loop = self._loop
        inner = loop._selector  # asyncio's selector, which the wrapper shares registrations with
        if not hasattr(inner, "fileno"):
            raise RuntimeError(f"the event loop's selector ({type(inner).__name__}) has no descriptor "
                               "a GUI toolkit could wait on")
        self._selector = ToolkitSelector(inner, toolkit.wait, contextvars.copy_context())
        self._selector_patch = patches.patch(loop, "_selector", self._selector)
        self._wake.start(toolkit)
        self._toolkit = toolkit
        self.active = name

    def leave(self) -> None:
        """Stop entering the active loop; its windows stay open, served again if it is re-entered."""
        toolkit, self._toolkit = self._toolkit, None
        self.active = None
        if toolkit is None:
            return
        patches.unpatch(self._selector_patch)  # asyncio's own selector back, unless replaced since
        self._selector = self._selector_patch = None
        self._wake.stop()
        toolkit.leave()

    def shutdown(self) -> None:
        """The kernel stops (main thread, before IPython clears the user's namespace): leave the loop,
        close matplotlib's figures and let each toolkit close its windows. Closed later, at exit,
        matplotlib's Tk windows run pending events (`update()`), and a user's timer callback then
        fails on the emptied namespace."""
        if not self._toolkits:
            return
        self.leave()
        pyplot = sys.modules.get("matplotlib.pyplot")
        closers = [toolkit.shutdown for toolkit in self._toolkits.values()]
        if pyplot is not None:
            closers.insert(0, lambda: pyplot.close("all"))
            if "tk" in self._toolkits:
                managers = pyplot._pylab_helpers.Gcf.get_all_fig_managers()
                closers.insert(0, lambda: self._toolkits["tk"].cancel_figure_timers(managers))
        for close in closers:
            try:
                close()
            except Exception:  # shutting down goes on whatever a toolkit does
                log.exception("closing GUI windows at shutdown")
