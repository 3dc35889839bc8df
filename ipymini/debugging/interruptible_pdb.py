"""pdb that an interrupt can end: `pdb.set_trace()` and `breakpoint()` use IPython's InterruptiblePdb.

The standard Pdb catches KeyboardInterrupt at its prompt and asks again, so interrupting a cell that
waits in the debugger would leave it waiting for ever (and every cell queued behind it). ipykernel
swaps in IPython's InterruptiblePdb at startup; ipymini does the same when pdb is first imported
(pdb and IPython's debugger cost ~10 ms to import, which start-up does not pay).
"""

from __future__ import annotations

from ipymini import patches
from ipymini.patches import after_import


def make_interruptible(pdb_module) -> None:
    """Point pdb.Pdb and pdb.set_trace at IPython's interruptible debugger."""
    from IPython.core import debugger

    if hasattr(debugger, "InterruptiblePdb"):
        patches.patch(debugger, "Pdb", debugger.InterruptiblePdb)
        patches.patch(pdb_module, "Pdb", debugger.Pdb)
        patches.patch(pdb_module, "set_trace", debugger.set_trace)


def install() -> None:
    """Patch pdb now if it is loaded, else when it is first imported."""
    after_import("pdb", make_interruptible)
