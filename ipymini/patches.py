"""Run a function on a module right after it is first imported, at no cost until then.

ipymini adjusts a few modules that user code may or may not import (pdb, ipykernel); importing them at
start-up just to adjust them would cost start-up time and memory.
"""

from __future__ import annotations

import importlib.machinery
import sys


class _AfterImport:
    """A meta path finder that lets the normal finders load one module, then calls `then(module)`."""

    def __init__(self, name: str, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load, then = spec.loader.exec_module, self.then

        def exec_module(module):
            load(module)
            then(module)

        spec.loader.exec_module = exec_module  # this spec's own loader instance only
        return spec


def after_import(name: str, then) -> None:
    """Call `then(module)` once the top-level module `name` is imported (now, if it already is)."""
    if name in sys.modules:
        then(sys.modules[name])
    else:
        sys.meta_path.insert(0, _AfterImport(name, then))
