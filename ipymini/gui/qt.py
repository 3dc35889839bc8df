"""Qt: a QEventLoop runs while the kernel's loop waits, woken by a socket notifier.

The binding is the one IPython's kernel loader picks (`IPython.external.qt_for_kernel`: an already
imported binding, else QT_API, else the first of PyQt6, PySide6, PyQt5, PySide2 that imports);
`%gui qt5` / `qt6` narrow the choice as ipykernel does, with its messages.
"""

from __future__ import annotations

import math
import os
import sys
from importlib.util import find_spec

_GUI_OF_API = {"pyqt5": "qt5", "pyside2": "qt5", "pyqt6": "qt6", "pyside6": "qt6"}
_BINDINGS = {"qt5": ("PyQt5", "PySide2"), "qt6": ("PyQt6", "PySide6")}


def choose_binding(gui: str) -> None:
    """Set QT_API for `%gui qt5` / `qt6` from what is installed (plain `qt` lets IPython choose);
    prints why a request cannot be followed, as ipykernel does."""
    from IPython.external.qt_loaders import loaded_api

    loaded = loaded_api()
    requested = os.environ.get("QT_API")
    if loaded is not None and gui != "qt" and _GUI_OF_API.get(loaded) != gui:
        print(f"Cannot switch Qt versions for this session; you must use {_GUI_OF_API.get(loaded)}.")
        return
    if requested is not None and gui != "qt":
        if _GUI_OF_API.get(requested) != gui:
            print(f'Request for "{gui}" will be ignored because `QT_API` environment variable is set '
                  f'to "{requested}"')
        return
    if gui == "qt":
        os.environ.pop("QT_API", None)
        return
    if gui not in _BINDINGS:
        print(f'Unrecognized Qt version: {gui}. Should be "qt5", "qt6", or "qt".')
        return
    found = [name for name in _BINDINGS[gui] if _installed(name)]
    os.environ["QT_API"] = (found or _BINDINGS[gui])[0].lower()


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ImportError:  # IPython refuses a second Qt binding once one is imported
        return False


def _enum(owner, scoped: str, name: str):
    """`owner.scoped.name` (Qt 6 and PySide) or `owner.name` (PyQt5)."""
    return getattr(getattr(owner, scoped, owner), name)


class QtLoop:
    """`%gui qt`, `qt5`, `qt6`."""

    name = "qt"

    def __init__(self, gui: str = "qt"):
        choose_binding(gui)
        try:
            from IPython.external.qt_for_kernel import QtCore
        except ImportError:
            if gui != "qt":
                os.environ.pop("QT_API", None)  # the next request chooses afresh
            raise
        from IPython.lib.guisupport import get_app_qt4

        if QtCore.QCoreApplication.instance() is None and sys.platform.startswith("linux") and not (
                os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM")):
            # Qt would abort the whole process (ipykernel's kernel dies here)
            raise RuntimeError("Qt needs a display: neither $DISPLAY nor $WAYLAND_DISPLAY is set "
                               "(QT_QPA_PLATFORM=offscreen runs Qt without one)")
        self.app = get_app_qt4([" "])
        self.app._in_event_loop = True  # IPython's guisupport: user code must not exec() it
        self._loop = QtCore.QEventLoop(self.app)
        self._timer = QtCore.QTimer()
        self._timer.setSingleShot(True)
        self._timer.setTimerType(_enum(QtCore.Qt, "TimerType", "PreciseTimer"))
        self._timer.timeout.connect(self._loop.quit)
        self._read = _enum(QtCore.QSocketNotifier, "Type", "Read")
        self._QtCore = QtCore
        self._notifier = None
        self._exec = getattr(self._loop, "exec", None) or self._loop.exec_

    def reenter(self, gui: str) -> None:
        """`%gui qt5` after `%gui`: the binding stays what it is; say so as ipykernel does."""
        choose_binding(gui)
        self.app._in_event_loop = True

    def wait(self, fd: int, timeout: float | None) -> None:
        notifier = self._notifier
        if notifier is None or notifier.socket() != fd:
            notifier = self._notifier = self._QtCore.QSocketNotifier(fd, self._read)
            notifier.activated.connect(self._loop.quit)
        notifier.setEnabled(True)
        if timeout is not None:
            self._timer.start(math.ceil(timeout * 1000))
        try:
            self._exec()  # returns once the notifier or the timer quits it
        finally:
            notifier.setEnabled(False)
            self._timer.stop()

    def leave(self) -> None:
        self.app._in_event_loop = False

    def shutdown(self) -> None:
        """The kernel stops: close the windows (their close events run) before the interpreter ends."""
        self.leave()
        try:
            self.app.closeAllWindows()
        except RuntimeError:  # the application is already gone
            pass
