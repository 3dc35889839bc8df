"""The namespace package in-process: transactions (`%rollback`, `%%transaction`) on a stand-in shell,
and the source of cell-defined functions and classes that checkpoints save and re-create. Through the
real kernel: test_transactions.py and test_checkpoints.py."""

import linecache
import threading
from types import SimpleNamespace

from ipymini.namespace import cellsource
from ipymini.namespace.transactions import Transactions, is_machinery


class FakeShell:
    """What Transactions uses of IPython's shell: the user namespace and the configuration."""

    def __init__(self, **names):
        self.user_ns = dict(names)
        self.config = {}


def _cell(raw: str):
    return SimpleNamespace(raw_cell=raw)


def _result(info, success: bool):
    return SimpleNamespace(info=info, success=success)


def test_a_failed_transactional_cell_gets_its_bindings_back_and_in_place_changes_stay():
    shell = FakeShell(a=1, items=[1], _=5, _i3="x = 1")
    tx = Transactions(shell)
    info = _cell("%%transaction\nb = 2\na = 10\nitems.append(2)\n_ = 6")
    tx.pre_run_cell(info)
    ns = shell.user_ns
    ns["b"], ns["a"], ns["_"] = 2, 10, 6
    ns["items"].append(2)
    note = tx.decorate_traceback(["Traceback", "ValueError: no"])[-1]
    assert "removed b" in note and "restored a" in note
    tx.post_run_cell(_result(info, success=False))
    assert ns == {"a": 1, "items": [1, 2], "_": 6, "_i3": "x = 1"}  # bindings back; IPython's own kept


def test_a_cell_that_succeeds_or_is_not_transactional_keeps_what_it_did():
    shell = FakeShell(a=1)
    tx = Transactions(shell)
    info = _cell("%%transaction\na = 2")
    tx.pre_run_cell(info)
    shell.user_ns["a"] = 2
    tx.post_run_cell(_result(info, success=True))
    plain = _cell("a = 3")
    tx.pre_run_cell(plain)  # rollback off: no snapshot
    shell.user_ns["a"] = 3
    tx.post_run_cell(_result(plain, success=False))
    assert shell.user_ns["a"] == 3 and tx.state.snapshot is None


def test_rollback_on_makes_every_cell_transactional_and_a_lost_cell_counts_as_failed(capsys):
    shell = FakeShell(a=1)
    tx = Transactions(shell)
    tx.rollback_magic("on")
    info = _cell("a = 2")
    tx.pre_run_cell(info)
    shell.user_ns["a"] = 2
    tx.post_run_cell(None)  # the bridge lost the cell (an interrupt): it failed
    assert shell.user_ns["a"] == 1
    assert "Rolled back the namespace to before this cell: restored a" in capsys.readouterr().err


def test_a_transaction_belongs_to_the_thread_running_its_cell():
    """Subshells run cells on their own threads: one thread's transaction is not another's."""
    shell = FakeShell(a=1)
    tx = Transactions(shell)
    tx.begin()
    seen = []
    t = threading.Thread(target=lambda: seen.append(tx.state.snapshot))
    t.start()
    t.join(10)
    assert seen == [None] and tx.state.snapshot == {"a": 1}
    tx.end(failed=False)


def test_ipythons_bookkeeping_names_are_machinery():
    assert all(is_machinery(n) for n in ("_", "__", "___", "_i", "_ii", "_i7", "_7", "Out", "In",
                                         "__name__", "get_ipython"))
    assert not any(is_machinery(n) for n in ("a", "_private", "data_1", "__x"))


def test_the_source_of_a_cell_defined_class_and_function_and_their_re_creation():
    filename = "<ipython-input-99-abc>"
    source = ("import functools\n"
              "@functools.lru_cache\n"
              "def square(x):\n"
              "    return x * x\n"
              "class Point:\n"
              "    def norm(self):\n"
              "        return 3\n")
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    ns: dict = {"__name__": "__main__"}
    try:
        exec(compile(source, filename, "exec"), ns)
        fn_source = cellsource.source_of(ns["square"])
        class_source = cellsource.source_of(ns["Point"])
    finally:
        del linecache.cache[filename]
    assert fn_source.startswith("@functools.lru_cache\ndef square(x):")
    assert class_source.startswith("class Point:") and "def norm" in class_source
    user_ns = {"functools": __import__("functools")}
    square = cellsource.recreate(fn_source, "square", user_ns, {})
    point = cellsource.recreate(class_source, "Point", user_ns, {})
    assert square(7) == 49 and point().norm() == 3
    assert "square" not in user_ns and "Point" not in user_ns  # re-creating binds nothing itself
    assert cellsource.source_of(square).startswith("@functools.lru_cache")  # and can be saved again


def test_a_closure_has_no_source_to_save():
    def outer():
        def inner():
            return 1
        return inner
    assert cellsource.source_of(outer()) is None
