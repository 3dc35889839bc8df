"""pdb that an interrupt can end: `pdb.set_trace()` and `breakpoint()` use IPython's InterruptiblePdb.

The standard Pdb catches KeyboardInterrupt at its prompt and asks again, so interrupting a cell that
waits in the debugger would leave it waiting for ever (and every cell queued behind it). ipykernel
swaps in IPython's InterruptiblePdb at startup; ipymini does the same when pdb is first imported
(pdb and IPython's debugger cost ~10 ms to import, which start-up does not pay).
"""

from __future__ import annotations

import importlib.machinery
import sys


def make_interruptible(pdb_module) -> None:
    """Point pdb.Pdb and pdb.set_trace at IPython's interruptible debugger."""
    from IPython.core import debugger

    if hasattr(debugger, "InterruptiblePdb"):
        debugger.Pdb = debugger.InterruptiblePdb
        pdb_module.Pdb = debugger.Pdb
        pdb_module.set_trace = debugger.set_trace


class _WhenPdbImported:
    """A meta path finder that lets the normal finders load pdb, then patches it, once."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "pdb":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            make_interruptible(module)

        spec.loader.exec_module = exec_module  # this spec's own loader instance only
        return spec


def install() -> None:
    """Patch pdb now if it is loaded, else when it is first imported."""
    if "pdb" in sys.modules:
        make_interruptible(sys.modules["pdb"])
    elif not any(isinstance(f, _WhenPdbImported) for f in sys.meta_path):
        sys.meta_path.insert(0, _WhenPdbImported())
