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

Settings, read once at startup from the environment:
- IPYMINI_USE_JEDI=0|1: override IPython's `Completer.use_jedi` (default: IPython's own setting);
- IPYMINI_EXPERIMENTAL_COMPLETIONS=0|1: add `metadata._jupyter_types_experimental` (default 1);
- IPYMINI_COMPLETION_TIMEOUT=SECONDS: the budget (default 1.5; 0 disables it).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings

from .subshells import calls_user_code, in_kernel_code

log = logging.getLogger("ipymini")

JEDI_SHARE = 2 / 3  # of the budget, when jedi is on; the rest is for the non-jedi fallback
TICK = 0.02  # once the budget is spent, the timeout is raised again this often (seconds)
# one completion at a time: IPython's completer is one object for every shell (use_jedi is toggled
# below) and warnings.catch_warnings changes process-wide filters (two at once on subshells restored
# each other's and turned IPython's provisional-API warning into an error reply)
_completing = threading.Lock()


class CompletionTimeout(KeyboardInterrupt):
    """Raised inside a completion that ran past its budget."""


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


class Completer:
    """Answers complete_request content from an IPython shell's completer."""

    def __init__(self, shell):
        self.shell = shell
        use_jedi = _env_flag("IPYMINI_USE_JEDI")
        if use_jedi is not None:
            shell.Completer.use_jedi = use_jedi
        self.experimental = _env_flag("IPYMINI_EXPERIMENTAL_COMPLETIONS") is not False
        _cache_module_lists()
        _save_jedi_cache_whole()
        try:
            self.budget = max(0.0, float(os.environ.get("IPYMINI_COMPLETION_TIMEOUT", "1.5")))
        except ValueError:
            log.warning("IPYMINI_COMPLETION_TIMEOUT is not a number; using 1.5 s")
            self.budget = 1.5

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
        metadata = {"_jupyter_types_experimental": experimental} if self.experimental else {}
        return {"matches": matches, "cursor_start": start, "cursor_end": end, "metadata": metadata,
                "status": "ok"}


MODULE_LIST_TTL = 30.0  # seconds a sys.path directory's module list is reused while its mtime holds


def _cache_module_lists() -> None:
    """`import x<Tab>`: IPython lists the modules of every sys.path entry by walking it (~7 ms per
    completion here), keeping nothing unless the walk took over 2 s. Reuse each directory's list while
    its mtime is unchanged (a new module or package shows at once) for up to MODULE_LIST_TTL seconds
    (a package made inside an existing directory shows by then)."""
    from IPython.core import completerlib

    scan = completerlib.module_list
    if getattr(scan, "_ipymini_cached", False):
        return
    cache: dict = {}

    @calls_user_code  # the completion budget may cut a slow directory walk
    def module_list(path: str) -> list:
        try:
            stamp = os.stat(path or ".").st_mtime_ns
        except OSError:
            return scan(path)
        now = time.monotonic()
        hit = cache.get(path)
        if hit is None or hit[0] != stamp or now - hit[1] > MODULE_LIST_TTL:
            hit = cache[path] = (stamp, now, scan(path))
        return list(hit[2])  # the caller edits the list it gets

    module_list._ipymini_cached = True
    module_list.__doc__ = scan.__doc__
    completerlib.module_list = module_list


def _save_jedi_cache_whole() -> None:
    """jedi (parso) pickles each parsed module into ~/.cache, writing the file in place. A completion
    budget's alarm landing mid-write, or two kernels writing at once, left a truncated file, and from
    then on every completion in every kernel came back empty (parso's load fails, IPython hides it).
    Saving goes through here instead: whole files only (a temporary file renamed over the old one),
    and being the kernel's own code, the budget's alarm never lands in it."""
    try:
        import pickle

        from parso import cache
        hashed_path = cache._get_hashed_path
        if getattr(cache._save_to_file_system, "_ipymini", False):
            return
    except (ImportError, AttributeError):
        return

    def save(hashed_grammar, path, item, cache_path=None):
        target = hashed_path(hashed_grammar, path, cache_path=cache_path)
        partial = f"{target}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(partial, "wb") as f:
                pickle.dump(item, f, pickle.HIGHEST_PROTOCOL)
            os.replace(partial, target)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)

    save._ipymini = True
    cache._save_to_file_system = save


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
        sys.excepthook = self._excepthook
        self._started = time.monotonic()
        self.armed = True
        self._old_timer = signal.setitimer(signal.ITIMER_REAL, self.budget, TICK)

    def stop(self) -> bool:
        """Disarm; returns whether the budget ran out."""
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old_handler)
        sys.excepthook = self._old_hook
        delay, interval = self._old_timer
        if delay:  # someone's alarm was pending: put back what is left of it
            left = delay - (time.monotonic() - self._started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), interval)
        return self.fired
