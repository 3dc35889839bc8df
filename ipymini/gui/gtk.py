"""GTK 3 (PyGObject): GLib's default main context runs while the kernel's loop waits.

`%gui gtk` names PyGTK 2 (Python 2 only), as in ipykernel: it needs the `gobject` module, which on
Python 3 only pygtkcompat provides; both names then wait the same way, through GLib.
"""

from __future__ import annotations

import math


class GtkLoop:
    """`%gui gtk3` (and `%gui gtk` where a `gobject` module imports)."""

    def __init__(self, name: str = "gtk3"):
        if name == "gtk":
            import gobject  # noqa: F401  (ImportError as in ipykernel: PyGTK 2 is Python 2's)
        import gi

        gi.require_version("Gtk", "3.0")
        from gi.repository import GLib, Gtk  # noqa: F401  (Gtk 3 must be there, as ipykernel asks)

        self.name = name
        self._GLib = GLib
        self._context = GLib.MainContext.default()
        self._woken = False

    def _wake(self, *_args) -> bool:
        self._woken = True
        return False  # GLib detaches the source: never destroyed again below

    def wait(self, fd: int, timeout: float | None) -> None:
        GLib = self._GLib
        self._woken = False
        watch = GLib.unix_fd_add_full(GLib.PRIORITY_DEFAULT, fd, GLib.IOCondition.IN, self._wake)
        timer = GLib.timeout_add(math.ceil(timeout * 1000), self._wake) if timeout is not None else None
        try:
            while not self._woken:
                self._context.iteration(True)  # blocks (without the GIL) until one dispatch
        finally:
            for source in (watch, timer):
                if source is not None:
                    found = self._context.find_source_by_id(source)
                    if found is not None and not found.is_destroyed():
                        found.destroy()

    def leave(self) -> None:
        """The loop is no longer entered; windows stay."""

    def shutdown(self) -> None:
        """The kernel stops: nothing to do."""
