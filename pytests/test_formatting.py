"""ipymini's DisplayFormatter shortcut (ipymini/shell/formatting.py) gives what IPython's gives."""

import collections
import datetime
import decimal
import fractions

import pytest
from IPython.core.formatters import DisplayFormatter as IPythonDisplayFormatter

from ipymini.shell.formatting import DisplayFormatter

VALUES = [0, 1, -5, 10**40, 3.5, float("nan"), 1e300, True, False, None, "s", "x" * 200, "a\nb", "é",
          b"b", bytearray(b"x"), [1, 2], list(range(100)), {"a": 1}, {"k": [1, {2: 3}]}, (1,), {1}, frozenset(),
          1j, range(3), Ellipsis, NotImplemented, len, fractions.Fraction(1, 3), decimal.Decimal("1.5"),
          datetime.date(2020, 1, 1), collections.OrderedDict(a=1), type, object()]
SELECTIONS = [(None, None), ({"text/plain"}, None), (None, {"text/plain"}), ({"text/html"}, None),
              (None, {"text/html"})]


@pytest.fixture(scope="module")
def formatters():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    return DisplayFormatter(parent=shell), IPythonDisplayFormatter(parent=shell)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_same_result_as_ipython(formatters, value):
    ours, ipython = formatters
    for include, exclude in SELECTIONS:
        assert ours.format(value, include, exclude) == ipython.format(value, include, exclude)


def test_the_shortcut_is_taken_for_builtins_and_not_for_others(formatters):
    ours, _ = formatters
    assert all(ours._only_plain_text(v) for v in (1, "s", [1], {"a": 1}, None, 2.5))
    assert not any(ours._only_plain_text(v) for v in (len, object(), decimal.Decimal(1), type))


def test_a_registered_printer_turns_the_shortcut_off(formatters):
    ours, ipython = formatters
    for f in (ours, ipython):
        f.formatters["text/html"].for_type(int, lambda n: f"<b>{n}</b>")
        f.formatters["text/plain"].for_type(str, lambda s, p, cycle: p.text("S:" + s))
    try:
        assert not ours._only_plain_text(7)
        assert ours.format(7) == ipython.format(7) == ({"text/plain": "7", "text/html": "<b>7</b>"}, {})
        assert ours.format("x") == ipython.format("x") == ({"text/plain": "S:x"}, {})
    finally:
        for f in (ours, ipython):
            f.formatters["text/html"].pop(int)
            f.formatters["text/plain"].pop(str)
    assert ours._only_plain_text(7) and ours.format(7) == ({"text/plain": "7"}, {})


def test_a_disabled_plain_text_formatter_or_an_object_printer(formatters):
    ours, ipython = formatters
    for f in (ours, ipython):
        f.formatters["text/plain"].enabled = False
    try:
        assert ours.format(5) == ipython.format(5)  # (IPython's text/plain formatter ignores it)
    finally:
        for f in (ours, ipython):
            f.formatters["text/plain"].enabled = True
    for f in (ours, ipython):
        f.formatters["text/markdown"].for_type(object, lambda o: "*any*")
    try:
        assert ours.format(5) == ipython.format(5)
        assert ours.format(5)[0]["text/markdown"] == "*any*"
    finally:
        for f in (ours, ipython):
            f.formatters["text/markdown"].pop(object)


def test_display_and_results_in_a_kernel_use_it(kernel):
    from harness import value

    assert value(kernel, "type(get_ipython().display_formatter).__module__") == "'ipymini.shell.formatting'"
    msgs = kernel.run_ok("get_ipython().display_formatter.formatters['text/html'].for_type(int, "
                         "lambda n: f'<i>{n}</i>')\ndisplay(3)\n4")
    shown = [m["content"]["data"] for m in msgs if m["msg_type"] in ("display_data", "execute_result")]
    assert shown == [{"text/plain": "3", "text/html": "<i>3</i>"}, {"text/plain": "4", "text/html": "<i>4</i>"}]
    kernel.run_ok("get_ipython().display_formatter.formatters['text/html'].pop(int)")
    msgs = kernel.run_ok("display(3)\n[1, 2]")
    shown = [m["content"]["data"] for m in msgs if m["msg_type"] in ("display_data", "execute_result")]
    assert shown == [{"text/plain": "3"}, {"text/plain": "[1, 2]"}]
