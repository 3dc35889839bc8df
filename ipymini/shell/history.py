"""history_request: one implementation, for IPython's history and for a subshell's own.

`history_reply` answers tail, range and search requests from a store that has IPython's
HistoryManager query methods (`get_tail`, `get_range`, `search`, `session_number`,
`output_hist_reprs`): the parent shell's HistoryManager, or a subshell's `CellLog`, which keeps the
cells that subshell ran (a subshell leaves IPython's history alone).

Each shell's worker holds the book of its cells, its execution count and history, one interface for
both kinds: `IPythonCells` for the parent shell (IPython's own), `SubshellCells` for a subshell.
"""

from __future__ import annotations

import fnmatch

from ipymini.protocol.messages import error_reply


def history_reply(content: dict, store) -> dict:
    """history_reply content for tail, range and search requests.

    Entries carry real session numbers whichever access type asked (IPython's get_range numbers the
    current session 0), and outputs of the current session come from memory for all three (the
    database only has them when `HistoryManager.db_log_output` is on).
    """
    output = bool(content.get("output", False))
    raw = bool(content.get("raw", True))
    kind = content["hist_access_type"]
    try:
        n = _opt_int(content, "n")
        if kind == "tail":
            hist = store.get_tail(10 if n is None else n, raw=raw, output=output, include_latest=True)
        elif kind == "range":
            start = _opt_int(content, "start")
            hist = store.get_range(_opt_int(content, "session") or 0, 1 if start is None else start,
                                   _opt_int(content, "stop"), raw=raw, output=output)
        elif kind == "search":
            pattern = content.get("pattern") or "*"
            if not isinstance(pattern, str):
                raise ValueError("pattern must be a string")
            hist = store.search(pattern, raw=raw, output=output, n=n,
                                unique=bool(content.get("unique", False)))
        else:
            raise ValueError(f"unknown hist_access_type {kind!r}")
        current = store.session_number
        entries = []
        for session, line, item in hist:
            if session == 0:
                session = current
            if line == 0 and session == current:
                continue  # IPython's placeholder before the first cell, not a cell
            if output and session == current and item[1] is None:
                item = (item[0], store.output_hist_reprs.get(line))
            entries.append([session, line, list(item) if output else item])
    except (ValueError, TypeError) as e:
        return error_reply(type(e).__name__, str(e), history=[])
    return {"status": "ok", "history": entries}


def _opt_int(content: dict, name: str) -> int | None:
    value = content.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"history_request field {name!r} must be an integer")
    return value


class IPythonCells:
    """The parent shell's cells: IPython counts and stores each cell it runs."""

    own = False  # (so IPython's count, history, Out and _ are the ones used)

    def __init__(self, shell):
        self._shell = shell

    @property
    def next_count(self) -> int:
        return self._shell.execution_count

    def ran(self, code: str, stored: bool) -> None:
        """A cell ran (IPython has counted and stored it already)."""

    def history(self, content: dict) -> dict:
        return history_reply(content, self._shell.history_manager)


class SubshellCells:
    """A subshell's cells: its own execution count and history, IPython's left alone."""

    own = True

    def __init__(self):
        self.next_count = 1
        self._ran: list[tuple[int, str]] = []  # (count, code)

    def ran(self, code: str, stored: bool) -> None:
        """A cell ran: a stored one is counted and kept, as IPython does with the parent's."""
        if stored:
            self._ran.append((self.next_count, code))
            self.next_count += 1

    def history(self, content: dict) -> dict:
        return history_reply(content, CellLog(self._ran))


class CellLog:
    """A subshell's history: the (execution count, code) of each cell it ran, queried as IPython's
    HistoryManager is. Its session is 0 (this kernel's run); it keeps no outputs."""

    session_number = 0
    output_hist_reprs: dict = {}

    def __init__(self, cells: list[tuple[int, str]]):
        self.cells = cells

    def _rows(self, rows, output: bool):
        return [(0, count, (code, None) if output else code) for count, code in rows]

    def get_tail(self, n: int, raw=True, output=False, include_latest=True):
        return self._rows(self.cells[-n:] if n else [], output)

    def get_range(self, session=0, start=1, stop=None, raw=True, output=False):
        return self._rows([c for c in self.cells if c[0] >= start and (stop is None or c[0] < stop)],
                          output)

    def search(self, pattern="*", raw=True, output=False, n=None, unique=False):
        rows = [c for c in self.cells if fnmatch.fnmatchcase(c[1], pattern)]
        if unique:  # the latest of each distinct code, in order
            seen: set = set()
            rows = [c for c in reversed(rows) if not (c[1] in seen or seen.add(c[1]))][::-1]
        if n:
            rows = rows[-n:]
        return self._rows(rows, output)
