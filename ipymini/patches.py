"""Everything ipymini changes outside its own objects, in one list, and how it is undone.

A kernel has to reach into the standard library and IPython in a few places (`input()` must ask the
client, a thread must inherit its cell's output routing, ...). Each such change is made with `patch`,
which refuses a target that is not declared in PATCHES below, remembers the original, and lets
`restore_all` (called at shutdown) put every original back. `after_import` defers a patch of a module
that user code may or may not import (pdb, ipykernel) until it is first imported, at no cost until then.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import threading
from dataclasses import dataclass

log = logging.getLogger("ipymini")

# target -> why ipymini changes it (and where). A class attribute is named by the class's own module.
PATCHES: dict[str, str] = {
    "sys.stdout": "stream output of the running request (kernel.py, output/streams.py)",
    "sys.stderr": "the same, for stderr",
    "sys.displayhook": "the shell's display hook installed once, for every thread (shell/zmqshell.py)",
    "builtins.input": "input() asks the request's client (scheduling/stdin.py, via bridge.py)",
    "getpass.getpass": "getpass() asks the request's client, as a password",
    "threading.Thread.start": "a thread inherits the request of the code that started it (output/routing.py)",
    "concurrent.futures.thread.ThreadPoolExecutor.submit": "a pool task inherits its submitter's request",
    "asyncio.run": "asyncio.run() works in a cell without top-level await (scheduling/cell_asyncio.py)",
    "asyncio.runners.run": "the same name, where asyncio itself refers to it",
    "asyncio.runners.Runner.run": "asyncio.Runner works in such a cell",
    "asyncio.base_events.BaseEventLoop.run_until_complete": "another loop (or the kernel's) runs in a cell",
    "asyncio.base_events.BaseEventLoop.run_forever": "the same, for run_forever",
    "os.system": "the captured fds are drained once the command ends (output/fdcapture.py)",
    "subprocess.Popen.wait": "the same, when a child process is waited for",
    "os.waitpid": "the same, when a forked child is waited for (os.fork, multiprocessing)",
    "comm.create_comm": "the comm package hands out ipymini's comms (comms.py)",
    "comm.get_comm_manager": "the comm package hands out ipymini's comm manager",
    "IPython.core.completerlib.module_list": "`import x<Tab>` module lists cached per directory mtime "
                                             "(shell/completion.py)",
    "jedi.inference.compiled.subprocess.functions.iter_module_names": "jedi's `import x<Tab>` module "
                                                                      "names cached per directory mtime",
    "parso.cache._save_to_file_system": "jedi's parse cache written atomically (shell/completion.py)",
    "parso.cache._load_from_file_system": "a damaged parse cache file read as a miss",
    "pygments.lexers.python.PythonLexer.__init_subclass__": "stack_data's per-frame lexer subclass "
                                                            "reuses the token tables (shell/tracebacks.py)",
    "stack_data.style_with_executing_node": "one executing-node style class per style (shell/tracebacks.py)",
    "sys.breakpointhook": "breakpoint() stops in an attached debugger (debugging/debugger.py)",
    "pdb.Pdb": "pdb that an interrupt can end (debugging/interruptible_pdb.py), once pdb is imported",
    "pdb.set_trace": "the same, for pdb.set_trace",
    "IPython.core.debugger.Pdb": "the same, for IPython's own debugger name",
    "sys.modules[ipykernel.zmqshell]": "the module libraries look for to detect a Jupyter kernel "
                                       "(shell/ipykernel_api.py)",
    "ipykernel.zmqshell": "the same module, should user code import the real ipykernel package",
}

_MISSING = object()


@dataclass
class Patch:
    """One applied change: `owner.name` (or `owner[name]` for a dict) was `original`, is `value`."""

    target: str
    owner: object
    name: str
    original: object
    value: object


_applied: list[Patch] = []
_lock = threading.Lock()


def _target(owner, name: str) -> str:
    if isinstance(owner, dict):
        return f"sys.modules[{name}]" if owner is sys.modules else f"<dict>[{name}]"
    if isinstance(owner, type):
        return f"{owner.__module__}.{owner.__qualname__}.{name}"
    return f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"


def patch(owner, name: str, value) -> None:
    """Set `owner.name` (an item, if `owner` is a dict) to `value`, remembering the original."""
    target = _target(owner, name)
    if target not in PATCHES:
        raise ValueError(f"{target} is not in ipymini's list of patches (patches.PATCHES)")
    with _lock:
        if isinstance(owner, dict):
            original = owner.get(name, _MISSING)
            owner[name] = value
        else:
            original = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(
                owner, name, _MISSING)
            setattr(owner, name, value)
        _applied.append(Patch(target, owner, name, original, value))


def applied() -> list[str]:
    """The targets patched so far, in order."""
    with _lock:
        return [p.target for p in _applied]


def restore_all() -> None:
    """Put every original back, newest first. A target changed again by someone else since we patched
    it is left as it is (their change wraps ours)."""
    with _lock:
        patches, _applied[:] = _applied[::-1], []
    for p in patches:
        try:
            if isinstance(p.owner, dict):
                if p.owner.get(p.name, _MISSING) is not p.value:
                    continue
                if p.original is _MISSING:
                    p.owner.pop(p.name, None)
                else:
                    p.owner[p.name] = p.original
                continue
            current = p.owner.__dict__.get(p.name) if isinstance(p.owner, type) else getattr(
                p.owner, p.name, _MISSING)
            if current is not p.value:
                continue
            if p.original is _MISSING:
                delattr(p.owner, p.name)
            else:
                setattr(p.owner, p.name, p.original)
        except Exception:  # a read-only attribute at shutdown: nothing more to do for it
            log.debug("could not restore %s", p.target, exc_info=True)


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
