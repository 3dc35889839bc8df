"""pdb that an interrupt can end: `pdb.set_trace()` and `breakpoint()` use IPython's InterruptiblePdb.

The standard Pdb catches KeyboardInterrupt at its prompt and asks again, so interrupting a cell that
waits in the debugger would leave it waiting for ever (and every cell queued behind it). ipykernel
swaps in IPython's InterruptiblePdb at startup; ipymini does the same when pdb is first imported
(pdb and IPython's debugger cost ~10 ms to import, which start-up does not pay).
"""

from __future__ import annotations

import sys

from ipymini import patches
from ipymini.patches import after_import


def make_interruptible(debugger) -> None:
    """Point pdb.Pdb and pdb.set_trace at IPython's interruptible debugger (`debugger` is
    IPython.core.debugger, fully imported)."""
    import pdb

    if hasattr(debugger, "InterruptiblePdb"):
        patches.patch(debugger, "Pdb", debugger.InterruptiblePdb)
        patches.patch(pdb, "Pdb", debugger.Pdb)
        patches.patch(pdb, "set_trace", debugger.set_trace)


def _pdb_imported(pdb_module) -> None:
    # IPython's debugger imports pdb itself: when it is the importer (%debug, %pdb), it is only half
    # made now, and its own hook below patches pdb once it is done
    if "IPython.core.debugger" not in sys.modules:
        import IPython.core.debugger  # noqa: F401  (its hook patches pdb)


def install() -> None:
    """Patch pdb once both it and IPython's debugger are imported, whichever comes first."""
    after_import("IPython.core.debugger", make_interruptible)
    after_import("pdb", _pdb_imported)
