"""IPython's DisplayFormatter with a shortcut for values only the text/plain formatter can answer.

For every display() and every cell result, IPython asks each of its ~12 formatters, and for a plain
int, str or list each of them answers "nothing" only after a failed printer lookup (a KeyError) and
an attribute probe: ~100 µs of a display() call's ~150. For a value of a built-in type whose
attributes are fixed (int, str, list, dict, ...: no instance attributes, no changeable class), which no
formatter has a printer for (by identity, by type along its MRO, or deferred by name), every formatter but text/plain
is certain to answer None; text/plain's answer is then the whole result, as IPython's loop would
build it. Anything else, or a formatter this cannot reason about, takes IPython's own path. For an
int or a str, text/plain's answer is its repr, computed without building IPython's pretty printer.

Named `DisplayFormatter` as IPython's is, so `%config DisplayFormatter` and `c.DisplayFormatter`
find it.
"""

from __future__ import annotations

from IPython.core import formatters
from IPython.lib import pretty

# built-in types whose instances have no attributes of their own and whose class attributes cannot
# change: whether a formatter's method (`_repr_html_`, ...) exists is decided here once and for all
_PLAIN_TYPES = frozenset({int, float, complex, bool, str, bytes, bytearray, list, tuple, dict, set,
                          frozenset, range, type(None)})


def _trait(formatter, name: str):
    """A formatter's trait value, read from traitlets' store when it is there: a trait read through
    its descriptor costs about a microsecond, and the check below makes ~60 of them."""
    values = formatter._trait_values
    return values[name] if name in values else getattr(formatter, name)


def _answers_none(formatter, obj, cls: type) -> bool:
    """Whether `formatter(obj)` is certain to return None (it has no printer and no method for it)."""
    try:
        if not _trait(formatter, "enabled"):
            return True
        if id(obj) in _trait(formatter, "singleton_printers"):
            return False
        type_printers, deferred = _trait(formatter, "type_printers"), _trait(formatter, "deferred_printers")
        for base in cls.__mro__:
            if base in type_printers or (base.__module__, base.__name__) in deferred:
                return False
        method = _trait(formatter, "print_method")
    except AttributeError:  # not a BaseFormatter: no telling what it does
        return False
    return not (isinstance(method, str) and hasattr(cls, method))


def _plain_text(plain, obj):
    """What the text/plain formatter answers. For an int or a str, IPython's pretty printer, unless
    told otherwise, writes its repr (one line, never broken), so that is what this returns without
    building a printer; a repr that raises (an int past Python's digit limit) goes the long way."""
    cls = type(obj)
    if ((cls is int or cls is str) and type(plain) is formatters.PlainTextFormatter and plain.enabled
            and plain.pprint and plain.type_printers.get(cls) is pretty._repr_pprint
            and id(obj) not in plain.singleton_printers):
        try:
            return repr(obj)
        except ValueError:
            pass
    return plain(obj)


class DisplayFormatter(formatters.DisplayFormatter):
    """IPython's DisplayFormatter, with the text/plain-only shortcut (see the module docstring)."""

    def format(self, obj, include=None, exclude=None):
        plain = self.formatters.get("text/plain")
        if plain is None or not self._only_plain_text(obj):
            return super().format(obj, include, exclude)
        if (include and "text/plain" not in include) or (exclude and "text/plain" in exclude):
            return {}, {}
        data, md = _plain_text(plain, obj), None
        if isinstance(data, tuple) and len(data) == 2:
            data, md = data
        return ({} if data is None else {"text/plain": data}), ({} if md is None else {"text/plain": md})

    def _only_plain_text(self, obj) -> bool:
        cls = type(obj)
        if cls not in _PLAIN_TYPES:
            return False
        if not (_answers_none(self.ipython_display_formatter, obj, cls)
                and _answers_none(self.mimebundle_formatter, obj, cls)):
            return False
        return all(_answers_none(f, obj, cls) for mime, f in self.formatters.items() if mime != "text/plain")
