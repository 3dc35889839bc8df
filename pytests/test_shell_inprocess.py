"""The shell package in-process: each worker's book of its cells, and the running cell's record the
IPython side reads. Through the real kernel: test_subshells.py, test_inspect_history.py, test_execute.py."""

import asyncio
import sys
import threading

from ipymini.shell.history import SubshellCells
from ipymini.shell.zmqshell import RunningCell, _subshell_count, running_cell


def test_a_subshells_book_counts_and_keeps_only_stored_cells():
    """A subshell's execution count and history are its worker's own (shell/history.py), answered
    with the same history_reply as IPython's."""
    cells = SubshellCells()
    assert cells.own and cells.next_count == 1
    cells.ran("a = 1", stored=True)
    cells.ran("silent()", stored=False)  # (silent, or store_history False): neither counted nor kept
    cells.ran("b = 2", stored=True)
    assert cells.next_count == 3
    tail = cells.history({"hist_access_type": "tail", "n": 10, "output": False, "raw": True})
    assert tail == {"status": "ok", "history": [[0, 1, "a = 1"], [0, 2, "b = 2"]]}
    found = cells.history({"hist_access_type": "search", "pattern": "b*", "output": False, "raw": True})
    assert found["history"] == [[0, 2, "b = 2"]]



def test_the_running_cells_record_follows_its_context_not_its_thread():
    """The bridge sets the record around a cell; the display hook and showtraceback read it. An
    awaiting cell's task sees it (tasks copy the context); a thread the cell starts does not (a new
    thread starts with an empty context), so its output is the parent shell's, as under ipykernel."""
    assert _subshell_count() is None
    cell = RunningCell(own_count=4)
    token = running_cell.set(cell)
    try:
        assert _subshell_count() == 4

        async def in_a_task():
            return _subshell_count()
        assert asyncio.run(in_a_task()) == 4
        seen = []
        t = threading.Thread(target=lambda: seen.append(_subshell_count()))
        t.start()
        t.join(10)
        inherits = getattr(sys.flags, "thread_inherit_context", False)
        assert seen == [4 if inherits else None]
    finally:
        running_cell.reset(token)
    assert _subshell_count() is None
