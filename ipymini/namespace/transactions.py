"""Transactional cells: `%rollback on|off` and `%%transaction` undo a failing cell's name bindings.

A transaction is a shallow copy of the user namespace taken before the cell runs. If the cell fails,
names it added are removed and names it rebound get their old objects back; a line appended to the
error's traceback says so. Objects changed in place (`lst.append(1)`, `d[k] = v`, attributes) are NOT
restored: only the bindings are. IPython's own bookkeeping names (`_`, `_iN`, `Out`, ...) are left
alone so history and output caching stay consistent.

Rollback for every cell can also be switched on kernel-wide: `IPYMINI_ROLLBACK=1` in the kernel's
environment, or `c.IPyMini.rollback = True` in ipython_kernel_config.py.
"""

from __future__ import annotations

import re
import sys
import threading

from ipymini import settings
from ipymini.kernelcode import calls_user_code

# IPython's bookkeeping: output cache (_, __, ___, _N), input cache (_i, _ii, _iii, _iN), dunders
_MACHINERY_RE = re.compile(r"_{1,3}|_i{1,3}|_i?\d+|__\w+__")
_MACHINERY = frozenset({"In", "Out", "_ih", "_oh", "_dh", "exit", "quit", "get_ipython", "open",
                        "_exit_code"})
_MISSING = object()
_TRANSACTION_LINE = "%%transaction"
_TRANSACTION_CELL = re.compile(r"\s*%%transaction[ \t]*(?:\r?\n|$)")  # how a %%transaction cell starts


def is_machinery(name: str) -> bool:
    """True for names IPython itself maintains in the user namespace."""
    return name in _MACHINERY or _MACHINERY_RE.fullmatch(name) is not None


def _names(names: list) -> str:
    shown = ", ".join(names[:10])
    return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "")


class _ThreadState(threading.local):
    """A transaction belongs to the thread running its cell (subshells run cells on their own threads)."""

    snapshot: dict | None = None  # the namespace before the running transaction
    owner = None  # the ExecutionInfo whose post_run_cell ends it (None: a magic ends it)
    failed = False
    noted = False  # the rollback note was appended to a traceback


class Transactions:
    """Snapshots the namespace before transactional cells and restores it when they fail."""

    def __init__(self, shell):
        self.shell = shell
        self.enabled = settings.value("IPYMINI_ROLLBACK", config=shell.config)
        self.state = _ThreadState()

    # -- lifecycle --

    def begin(self, owner=None) -> None:
        st = self.state
        st.snapshot = dict(self.shell.user_ns)  # shallow: bindings only
        st.owner, st.failed, st.noted = owner, False, False

    def end(self, failed: bool) -> None:
        """Close the running transaction, rolling back if it failed."""
        st = self.state
        snapshot, st.snapshot, st.owner = st.snapshot, None, None
        if snapshot is None or not (failed or st.failed):
            return
        removed, restored = self.rollback(snapshot)
        if not st.noted:  # failed without a traceback (a UsageError, say): say it on stderr
            print(self._note(removed, restored), file=sys.stderr)

    def diff(self, snapshot: dict) -> tuple[list, list]:
        """(names added since the snapshot, names rebound or deleted since)."""
        ns = self.shell.user_ns
        added = [k for k in ns if k not in snapshot and not is_machinery(k)]
        changed = [k for k, v in snapshot.items() if ns.get(k, _MISSING) is not v and not is_machinery(k)]
        return added, changed

    def rollback(self, snapshot: dict) -> tuple[list, list]:
        """Put the namespace's bindings back as they were in `snapshot`."""
        ns = self.shell.user_ns
        added, changed = self.diff(snapshot)
        for k in added:
            ns.pop(k, None)
        for k in changed:
            ns[k] = snapshot[k]
        return added, changed

    @staticmethod
    def _note(removed: list, restored: list) -> str:
        if not removed and not restored:
            return "Rolled back: this cell changed no name bindings (objects changed in place are not undone)."
        parts = ([f"removed {_names(removed)}"] if removed else []) + (
            [f"restored {_names(restored)}"] if restored else [])
        return ("Rolled back the namespace to before this cell: " + "; ".join(parts)
                + ". Objects changed in place are not undone.")

    # -- IPython hooks --

    def pre_run_cell(self, info) -> None:
        if self.state.snapshot is not None:
            return  # a cell run from inside a transaction (%%capture, say) belongs to it
        if self.enabled or _TRANSACTION_CELL.match(info.raw_cell):
            self.begin(owner=info)

    def post_run_cell(self, result) -> None:
        if self.state.snapshot is None:
            return
        if result is None:  # the bridge lost the cell (interrupt): whatever is running failed
            self.end(failed=True)
        elif self.state.owner is not None and result.info is self.state.owner:
            self.end(failed=not result.success)

    def decorate_traceback(self, stb: list) -> list:
        """Called as the error is shown: mark the transaction failed and append the rollback note."""
        if self.state.snapshot is None:
            return stb
        self.state.failed = self.state.noted = True
        return [*stb, "", self._note(*self.diff(self.state.snapshot))]

    def strip_transaction_line(self, lines: list) -> list:
        """Input transformer: a `%%transaction` cell runs its body as a normal cell (await works)."""
        if lines and lines[0].rstrip() == _TRANSACTION_LINE:
            return lines[1:]
        return lines

    # -- magics --

    def rollback_magic(self, line: str):
        """%rollback [on|off]: make every following cell transactional (or stop), or show the setting.

        With rollback on, a cell that raises leaves the namespace's name bindings as they were before
        it ran: names it added are removed and names it rebound get their old objects back. Objects
        mutated in place (list.append, dict updates, attribute assignments) are NOT restored.
        Kernel-wide default: IPYMINI_ROLLBACK=1 or c.IPyMini.rollback = True.
        """
        from IPython.core.error import UsageError

        arg = line.strip().lower()
        if arg in ("on", "off"):
            self.enabled = arg == "on"
        elif arg:
            raise UsageError("usage: %rollback [on|off]")
        print(f"Rollback on error is {'on' if self.enabled else 'off'}.")

    @calls_user_code  # an interrupt must reach the cell it runs
    def transaction_magic(self, line: str, cell: str):
        """%%transaction: run this cell transactionally; if it raises, its name bindings are undone.

        Names the cell added are removed and names it rebound get their old objects back. Objects
        mutated in place (list.append, dict updates, attribute assignments) are NOT restored.
        """
        from IPython.core.error import UsageError

        if line.strip():
            raise UsageError("%%transaction takes no arguments")
        if self.state.snapshot is not None:  # already inside a transaction
            return self.shell.run_cell(cell)
        self.begin()
        result = None
        try:
            result = self.shell.run_cell(cell)
        finally:
            failed = result is None or not result.success
            self.end(failed=failed)
            if failed:  # the error was shown by the inner run; the cell that ran it failed too
                self.shell.failed_without_raising = True


def install(shell) -> Transactions:
    """Register %rollback and %%transaction and the hooks that run transactions on `shell`."""
    tx = Transactions(shell)
    shell.register_magic_function(tx.rollback_magic, "line", "rollback")
    shell.register_magic_function(tx.transaction_magic, "cell", "transaction")
    shell.input_transformers_cleanup.append(tx.strip_transaction_line)
    shell.events.register("pre_run_cell", tx.pre_run_cell)
    shell.events.register("post_run_cell", tx.post_run_cell)
    shell.traceback_filters = (*shell.traceback_filters, tx.decorate_traceback)  # shell/zmqshell.py
    shell.transactions = tx
    return tx
