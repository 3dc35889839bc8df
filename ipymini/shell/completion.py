"""complete_request: IPython's completer under a time budget.

Owns turning a (code, cursor_pos) into complete_reply content. Positions are unicode code points on both
sides (Python string indices), so non-ASCII text before the cursor needs no conversion.

A completion may run user code (`__dir__`, `__getattr__`, properties) or make jedi infer a huge object, so
it gets a time budget. On the main thread a SIGALRM timer raises `CompletionTimeout` inside whatever is
slow once the budget is spent, and keeps raising every few milliseconds: IPython runs each matcher under
`except BaseException` (so the timeout ends that matcher and the next one runs), and `completions()` ends
quietly on a KeyboardInterrupt, which `CompletionTimeout` is. The reply carries what was collected by then.
With jedi on, jedi gets part of the budget; if it runs out, the rest goes to IPython's own (non-jedi)
matchers.

With jedi on, IPython takes the names of the namespace from jedi alone (its own name matcher is left
out), so a jedi that fails, raises or comes back empty leaves `al<Tab>` with only `%alias`. The
kernel adds IPython's own name matches for a plain name outside strings (`namespace_names`); jedi's
entry wins where both have a name (it knows the type). One way jedi comes back empty for good: a
truncated pickle in its on-disk parse cache (a write cut off by this budget or a killed process), on
which parso raises in every later completion of that Python version; `_safe_parso_cache` makes those
writes atomic and reads a damaged file as a miss.

Settings, read once at startup from the environment:
- IPYMINI_USE_JEDI=0|1: override IPython's `Completer.use_jedi` (default: IPython's own setting);
- IPYMINI_EXPERIMENTAL_COMPLETIONS=0|1: add `metadata._jupyter_types_experimental` (default 1);
- IPYMINI_COMPLETION_TIMEOUT=SECONDS: the budget (default 1.5; 0 disables it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings

from ipymini import patches, settings
from ipymini.kernelcode import calls_user_code, in_kernel_code

log = logging.getLogger("ipymini")

JEDI_SHARE = 2 / 3  # of the budget, when jedi is on; the rest is for the non-jedi fallback
TICK = 0.02  # once the budget is spent, the timeout is raised again this often (seconds)
# one completion at a time: IPython's completer is one object for every shell (use_jedi is toggled
# below) and warnings.catch_warnings changes process-wide filters (two at once on subshells restored
# each other's and turned IPython's provisional-API warning into an error reply)
_completing = threading.Lock()


class CompletionTimeout(KeyboardInterrupt):
    """Raised inside a completion that ran past its budget."""


class Completer:
    """Answers complete_request content from an IPython shell's completer."""

    def __init__(self, shell):
        self.shell = shell
        use_jedi = settings.value("IPYMINI_USE_JEDI")
        if use_jedi is not None:
            shell.Completer.use_jedi = use_jedi
        self.experimental = settings.value("IPYMINI_EXPERIMENTAL_COMPLETIONS")
        _cache_module_lists()
        shell.Completer.custom_matchers.append(namespace_names(shell.Completer))
        _hide_cell_inputs_from_jedi(shell.Completer)
        self.budget = settings.value("IPYMINI_COMPLETION_TIMEOUT")

    def complete(self, code: str, cursor_pos: int | None) -> dict:
        """complete_reply content for the cursor at `cursor_pos` (code points) in `code`."""
        if cursor_pos is None:
            cursor_pos = len(code)
        cursor_pos = max(0, min(int(cursor_pos), len(code)))
        completions: list = []
        # a completion on a subshell has no alarm and may overrun its budget: never wait for it
        # longer than our own budget (the parent shell would wait with it), answer with nothing
        if not _completing.acquire(timeout=self.budget or -1):
            log.warning("a completion was answered empty: another one ran past its time budget")
            return self._reply(code, cursor_pos, completions)
        try:
            self._complete_into(code, cursor_pos, completions)
        finally:
            _completing.release()
        return self._reply(code, cursor_pos, completions)

    def _complete_into(self, code: str, cursor_pos: int, completions: list) -> None:
        ipc = self.shell.Completer
        if ipc.use_jedi:
            _safe_parso_cache()  # (imports parso and jedi, as jedi is about to: not at startup)
            _cache_jedi_module_names()
        try:
            if ipc.use_jedi and self.budget:
                timed_out = self._collect(code, cursor_pos, self.budget * JEDI_SHARE, completions)
                if timed_out:  # jedi (or what it touches) is slow: answer from IPython's own matchers
                    ipc.use_jedi = False
                    try:
                        self._collect(code, cursor_pos, self.budget * (1 - JEDI_SHARE), completions)
                    finally:
                        ipc.use_jedi = True
            else:
                self._collect(code, cursor_pos, self.budget, completions)
        except CompletionTimeout:  # a late alarm while the timer was being disarmed
            pass

    @calls_user_code
    def _collect(self, code: str, cursor_pos: int, budget: float, out: list) -> bool:
        """Append IPython's completions to `out` until done or out of time; returns whether time ran out."""
        from IPython.core.completer import provisionalcompleter

        deadline = time.monotonic() + budget if budget else None
        timer = _Timer(budget) if budget and threading.current_thread() is threading.main_thread() else None
        timed_out = False
        try:
            if timer:
                timer.start()
            with provisionalcompleter(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for c in self.shell.Completer.completions(code, cursor_pos):
                    out.append(c)
                    if timer is None and deadline is not None and time.monotonic() > deadline:
                        timed_out = True
                        break
        except CompletionTimeout:
            timed_out = True
        finally:
            if timer:
                timed_out = timer.stop() or timed_out
        return timed_out

    def _reply(self, code: str, cursor_pos: int, completions: list) -> dict:
        if completions:
            start = min(c.start for c in completions)
            end = max(c.end for c in completions)
        else:
            start = end = cursor_pos
        matches, experimental = [], []
        seen = set()
        for c in completions:
            # every match replaces the same span [start, end), as the protocol has one span per reply
            text = code[start:c.start] + c.text + code[c.end:end]
            if text in seen:
                continue
            seen.add(text)
            matches.append(text)
            experimental.append({"start": start, "end": end, "text": text, "type": c.type,
                                 "signature": c.signature})
        if matches and code[start:start + 1] == "." and all(m.startswith(".") for m in matches):
            # IPython's own attribute matcher answers `obj.na` with `.name` from the dot, jedi (and so
            # ipykernel, which always waits for jedi) with `name` after it: the same edit, spelled
            # one way whichever answered (jedi may have run out of its time budget)
            start += 1
            matches = [m[1:] for m in matches]
            for e, text in zip(experimental, matches):
                e.update(start=start, text=text)
        metadata = {"_jupyter_types_experimental": experimental} if self.experimental else {}
        return {"matches": matches, "cursor_start": start, "cursor_end": end, "metadata": metadata,
                "status": "ok"}


def namespace_names(ipc):
    """An IPython matcher: the user's (and builtin) names starting with a plain name being typed,
    while jedi is on (without jedi, IPython's own python_matcher does this already)."""
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher()
    def ipymini_namespace_names(context):
        token = context.token
        names = []
        if ipc.use_jedi and token.isidentifier() and not _after_dot(context.text_until_cursor, token):
            in_string = getattr(ipc, "_is_in_string_or_comment", None)  # IPython 9's own test
            if in_string is None or in_string(context.text_until_cursor) == (False, False):
                names = ipc.global_matches(token)
        return {"completions": [SimpleCompletion(text=n, type="variable") for n in names],
                "suppress": False}

    return ipymini_namespace_names


_CELL_INPUT_NAME = re.compile(r"\b_i\d+\b")


def _is_cell_input(name: str) -> bool:
    """IPython's `_iN`: the input of cell N, one name per cell for the whole session."""
    return name[:2] == "_i" and name[2:].isdigit()


def _hide_cell_inputs_from_jedi(ipc) -> None:
    """jedi makes an object for every name of the namespace on every completion, and IPython adds a
    `_iN` per cell: after ~30,000 cells each completion spent its whole budget there (and a kernel
    answering a soak slowed to a few requests a second). jedi gets the namespace without the `_iN`
    the code does not mention; IPython's own matchers (`_i<Tab>`) still see them all."""
    jedi_matches = ipc._jedi_matches

    @calls_user_code  # jedi runs user code (`__dir__`, properties): the budget's alarm may land there
    def _jedi_matches_without_cell_inputs(cursor_column, cursor_line, text):
        full, global_ns = ipc.namespace, ipc.global_namespace
        mentioned = set(_CELL_INPUT_NAME.findall(text))
        view = {k: v for k, v in full.items() if not _is_cell_input(k) or k in mentioned}
        ipc.namespace = view
        if global_ns is full:
            ipc.global_namespace = view
        try:
            return jedi_matches(cursor_column, cursor_line, text)
        finally:
            ipc.namespace, ipc.global_namespace = full, global_ns

    patches.patch(ipc, "_jedi_matches", _jedi_matches_without_cell_inputs)


def _after_dot(text: str, token: str) -> bool:
    """Whether `token`, which ends `text`, is an attribute (`obj.tok`), not a name."""
    return text[:len(text) - len(token)].rstrip().endswith(".")


MODULE_LIST_TTL = 30.0  # seconds a sys.path directory's module list is reused while its mtime holds


class _PerDirectory:
    """`scan(path)`'s list, reused while the directory's mtime is unchanged (a new module or package
    shows at once) for up to MODULE_LIST_TTL seconds (a package made inside an existing directory
    shows by then)."""

    def __init__(self, scan):
        self.scan = scan
        self.cache: dict = {}

    @calls_user_code  # the completion budget may cut a slow directory walk
    def __call__(self, path: str) -> list:
        try:
            stamp = os.stat(path or ".").st_mtime_ns
        except OSError:
            return list(self.scan(path))
        now = time.monotonic()
        hit = self.cache.get(path)
        if hit is None or hit[0] != stamp or now - hit[1] > MODULE_LIST_TTL:
            hit = self.cache[path] = (stamp, now, list(self.scan(path)))
        return list(hit[2])  # the caller edits the list it gets


def _cache_module_lists() -> None:
    """`import x<Tab>`: IPython lists the modules of every sys.path entry by walking it (~7 ms per
    completion here), keeping nothing unless the walk took over 2 s. Each directory's list is reused
    (`_PerDirectory`)."""
    from IPython.core import completerlib

    scan = completerlib.module_list
    if isinstance(scan, _PerDirectory):
        return
    patches.patch(completerlib, "module_list", _PerDirectory(scan))


def _cache_jedi_module_names() -> None:
    """jedi answers `import x<Tab>` too, listing every sys.path directory again for each completion
    (~500 entries, most of the request's time): each directory's names are reused (`_PerDirectory`)."""
    try:
        from jedi.inference.compiled.subprocess import functions
    except ImportError:
        return
    scan = functions.iter_module_names
    if isinstance(getattr(scan, "__self__", None), _JediModuleNames):
        return
    patches.patch(functions, "iter_module_names", _JediModuleNames(scan).names)


class _JediModuleNames:
    """jedi's `iter_module_names(inference_state, paths)` from per-directory lists."""

    def __init__(self, scan):
        self.per_directory = _PerDirectory(lambda path: scan(None, [path]))

    def names(self, inference_state, paths) -> list:
        return [name for path in paths for name in self.per_directory(path)]


def _safe_parso_cache() -> None:
    """jedi keeps parsed modules (typeshed's builtins too) as pickles on disk, written in place: a
    completion cut off by the budget (or a kernel killed) mid-write leaves a truncated file, and parso
    raises EOFError on it in every later completion of every kernel of that Python, so jedi gives
    nothing. Write the pickles atomically and read a damaged one as a cache miss."""
    import pickle

    try:
        from parso import cache
    except ImportError:
        return
    save, load = cache._save_to_file_system, cache._load_from_file_system
    if getattr(save, "_ipymini", False):
        return

    def save_atomically(hashed_grammar, path, item, cache_path=None):
        target = cache._get_hashed_path(hashed_grammar, path, cache_path=cache_path)
        tmp = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as f:
                pickle.dump(item, f, pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def load_or_miss(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        except (EOFError, pickle.UnpicklingError, AttributeError, ValueError):
            return None

    save_atomically._ipymini = True
    patches.patch(cache, "_save_to_file_system", save_atomically)
    patches.patch(cache, "_load_from_file_system", load_or_miss)


class _Timer:
    """A SIGALRM budget for code on the main thread (restores whatever alarm was set before)."""

    def __init__(self, budget: float):
        self.budget = budget
        self.fired = False
        self.armed = False

    def _on_alarm(self, signum, frame):
        # never inside the kernel's own code (a print from a matcher): the next tick tries again
        if self.armed and not in_kernel_code(frame):
            self.fired = True
            raise CompletionTimeout

    def _excepthook(self, etype, value, tb):
        if not issubclass(etype, CompletionTimeout):  # IPython reports a failing matcher through it
            self._old_hook(etype, value, tb)

    def start(self) -> None:
        self._old_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        self._old_hook = sys.excepthook
        self._hook_patch = patches.patch(sys, "excepthook", self._excepthook)
        self._started = time.monotonic()
        self.armed = True
        self._old_timer = signal.setitimer(signal.ITIMER_REAL, self.budget, TICK)

    def stop(self) -> bool:
        """Disarm; returns whether the budget ran out."""
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old_handler)
        patches.unpatch(self._hook_patch)
        delay, interval = self._old_timer
        if delay:  # someone's alarm was pending: put back what is left of it
            left = delay - (time.monotonic() - self._started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), interval)
        return self.fired
