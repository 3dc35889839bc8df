"""Everything ipymini changes outside its own objects, in one list, and how it is undone.

A kernel has to reach into the standard library and IPython in a few places (`input()` must ask the
client, a thread must inherit its cell's output routing, ...). Each such change is made with `patch`,
which refuses a target that is not declared in PATCHES below, remembers the original, and lets
`restore_all` (called at shutdown) put every original back; `unpatch` puts one back sooner (a change
that lasts while a completion runs or a GUI loop is entered). `assign` sets a declared target without
anything to undo (putting back what a library's import replaced, asyncio's own interrupt count).
`after_import` defers a patch of a module that user code may or may not import (pdb, ipykernel) until it
is first imported, at no cost until then. Nothing else in ipymini writes another library's attributes
(pytests/test_package_rules.py keeps it so).
Must not import: ipymini (everything else imports it).
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import threading
import types
from dataclasses import dataclass

log = logging.getLogger("ipymini")

# target -> why ipymini changes it (and where). A class attribute is named by the class's own module;
# an attribute of one object by a class of its type's MRO and `()`: `asyncio.runners.Runner()._x`.
PATCHES: dict[str, str] = {
    "sys.stdout": "stream output of the running request (kernel.py, output/streams.py); the process's "
                  "own again when the kernel stops on an error (__main__.py)",
    "sys.stderr": "the same, for stderr",
    "sys.displayhook": "the shell's display hook installed once, for every thread (shell/zmqshell.py)",
    "builtins.input": "input() asks the request's client (scheduling/stdin.py, via bridge.py)",
    "getpass.getpass": "getpass() asks the request's client, as a password",
    "threading.Thread.start": "IPYMINI_THREAD_OUTPUT=starter only: a thread's output goes to the request "
                              "of the code that started it (output/routing.py)",
    "concurrent.futures.thread.ThreadPoolExecutor.submit": "IPYMINI_THREAD_OUTPUT=starter only: a pool "
                                                           "task's output goes to its submitter's request",
    "asyncio.run": "asyncio.run() works in a cell without top-level await (scheduling/cell_asyncio.py)",
    "asyncio.runners.run": "the same name, where asyncio itself refers to it",
    "asyncio.runners.Runner.run": "asyncio.Runner works in such a cell",
    "asyncio.base_events.BaseEventLoop.run_until_complete": "another loop (or the kernel's) runs in a cell",
    "asyncio.base_events.BaseEventLoop.run_forever": "the same, for run_forever",
    "os.system": "the captured fds are drained once the command ends (output/fdcapture.py); the "
                 "memory guard's bound is lifted while it runs (memory/bound.py)",
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
    "sys.breakpointhook": "breakpoint() stops in an attached debugger (debugging/debugger.py); what "
                          "pydevd's import sets there is put back (debugging/dap.py)",
    "sys.excepthook": "while a completion runs, its timeout is not reported as a failing matcher "
                      "(shell/completion.py)",
    "sys.last_traceback": "dropped after a MemoryError, so the memory its frames hold comes back "
                          "(memory/recovery.py)",
    "IPython.core.completer.IPCompleter()._jedi_matches": "jedi sees the namespace without IPython's "
                                                          "`_iN` cell inputs (shell/completion.py)",
    "asyncio.selector_events.BaseSelectorEventLoop()._selector": "while a GUI toolkit's loop is entered, "
                                                                 "the toolkit waits in place of the "
                                                                 "kernel loop's selector (gui/loops.py)",
    "asyncio.runners.Runner()._interrupt_count": "an interrupt reaches code inside asyncio.run as "
                                                 "asyncio's own SIGINT handler delivers it "
                                                 "(scheduling/cell_asyncio.py)",
    "pdb.Pdb": "pdb that an interrupt can end (debugging/interruptible_pdb.py), once pdb is imported",
    "pdb.set_trace": "the same, for pdb.set_trace",
    "IPython.core.debugger.Pdb": "the same, for IPython's own debugger name",
    # the memory guard (memory/bound.py): children never inherit its RLIMIT_DATA bound
    "_posixsubprocess.fork_exec": "the memory bound is lifted while a child starts (subprocess, "
                                  "multiprocessing)",
    "subprocess._fork_exec": "the same, under the name subprocess imported it by",
    "os.posix_spawn": "the same, for posix_spawn",
    "os.posix_spawnp": "the same, for posix_spawnp",
    "threading.excepthook": "a thread's MemoryError while a cell runs stops the cell too (memory/watcher.py)",
    "threading._start_new_thread": "the memory bound is lifted while a thread's stack is mapped",
    "threading._start_joinable_thread": "the same, on 3.13+",
    "numpy.zeros": "a large np.zeros refused by the memory bound is retried without it (its pages "
                   "are not used until written)",
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
    if isinstance(owner, types.ModuleType):
        return f"{owner.__name__}.{name}"
    classes = type(owner).__mro__  # one object's attribute: by the class PATCHES declares it for
    named = [f"{cls.__module__}.{cls.__qualname__}().{name}" for cls in classes]
    return next((target for target in named if target in PATCHES), named[0])


def _declared(owner, name: str) -> str:
    target = _target(owner, name)
    if target not in PATCHES:
        raise ValueError(f"{target} is not in ipymini's list of patches (patches.PATCHES)")
    return target


def patch(owner, name: str, value) -> Patch:
    """Set `owner.name` (an item, if `owner` is a dict) to `value`, remembering the original."""
    target = _declared(owner, name)
    with _lock:
        if isinstance(owner, dict):
            original = owner.get(name, _MISSING)
            owner[name] = value
        else:
            original = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(
                owner, name, _MISSING)
            setattr(owner, name, value)
        applied = Patch(target, owner, name, original, value)
        _applied.append(applied)
    return applied


def unpatch(applied: Patch) -> None:
    """Put one patch's original back now, unless its target was changed again since, and forget it."""
    with _lock:
        for i in range(len(_applied) - 1, -1, -1):
            if _applied[i] is applied:
                del _applied[i]
                break
        else:
            return
    _restore(applied)


def assign(owner, name: str, value) -> None:
    """Set the declared target `owner.name` to `value`, with nothing to undo at shutdown."""
    _declared(owner, name)
    setattr(owner, name, value)


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
        _restore(p)


def _restore(p: Patch) -> None:
    try:
        if isinstance(p.owner, dict):
            if p.owner.get(p.name, _MISSING) is not p.value:
                return
            if p.original is _MISSING:
                p.owner.pop(p.name, None)
            else:
                p.owner[p.name] = p.original
            return
        current = p.owner.__dict__.get(p.name) if isinstance(p.owner, type) else getattr(
            p.owner, p.name, _MISSING)
        if current is not p.value:
            return
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
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load, then, finder = spec.loader.exec_module, self.then, self

        def exec_module(module):
            # only now: a probe (importlib.util.find_spec, as libraries check for numpy) loads nothing
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            load(module)
            then(module)

        spec.loader.exec_module = exec_module  # this spec's own loader instance only
        return spec


def after_import(name: str, then) -> None:
    """Call `then(module)` once the module `name` is imported (now, if it already is)."""
    if name in sys.modules:
        then(sys.modules[name])
    else:
        sys.meta_path.insert(0, _AfterImport(name, then))
