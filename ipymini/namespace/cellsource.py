"""Source code of functions and classes defined in cells, and re-creating them from it.

`inspect.getsource` cannot find a class defined in a cell (it looks for a file of the `__main__`
module), so this module reads the cell text IPython keeps in `linecache` (under the cell's code name,
e.g. `<ipython-input-3-…>`) and cuts the definition out with `ast`, decorators included. Re-created
definitions are registered in `linecache` too, so a restored function can be saved again.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import linecache
import textwrap
import types

from ipymini.debugging import cellfile

# cell code names (IPython's, and the cell files the kernel compiles under: cellfile.py), and the
# names given to definitions re-created from a checkpoint
_PREFIXES = ("<ipython-input-", cellfile.tmp_prefix(), "<ipymini-checkpoint-")
_counter = itertools.count(1)


def is_cell_defined(obj, main_name: str = "__main__") -> bool:
    """A function or class defined by cell code (which pickle could only store by reference)."""
    if getattr(obj, "__module__", None) != main_name:
        return False
    if isinstance(obj, (type, types.FunctionType)):
        return True
    return hasattr(obj, "__wrapped__") and isinstance(inspect.unwrap(obj), types.FunctionType)


def _parse(filename: str):
    lines = linecache.getlines(filename)
    if not lines:
        return None, None
    try:
        return lines, ast.parse("".join(lines))
    except SyntaxError:  # a cell with IPython syntax: only its transformed text parses, which we lack
        return lines, None


def _segment(lines: list, node) -> str:
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return textwrap.dedent("".join(lines[start - 1:node.end_lineno]))


def _defs(tree, name: str, kinds):
    return [n for n in ast.walk(tree) if isinstance(n, kinds) and n.name == name]


def _function_source(func) -> str | None:
    code = func.__code__
    lines, tree = _parse(code.co_filename)
    if tree is None:
        return None
    for node in _defs(tree, func.__name__, (ast.FunctionDef, ast.AsyncFunctionDef)):
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if start == code.co_firstlineno or node.lineno == code.co_firstlineno:
            return _segment(lines, node)
    return None


def _method_lines(cls):
    """(filename, line) of the functions in a class body: where the class was defined."""
    for value in vars(cls).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        code = getattr(value, "__code__", None)
        if code is not None and code.co_filename.startswith(_PREFIXES):
            yield code.co_filename, code.co_firstlineno


def _class_source(cls) -> str | None:
    firstlineno = getattr(cls, "__firstlineno__", None)  # Python >= 3.13
    for filename, line in _method_lines(cls):
        lines, tree = _parse(filename)
        if tree is None:
            continue
        for node in _defs(tree, cls.__name__, ast.ClassDef):
            if node.lineno <= line <= node.end_lineno and firstlineno in (None, node.lineno):
                return _segment(lines, node)
    # no methods to locate it: the newest cell defining a class of that name
    for filename in reversed([f for f in list(linecache.cache) if f.startswith(_PREFIXES)]):
        lines, tree = _parse(filename)
        if tree is None:
            continue
        nodes = _defs(tree, cls.__name__, ast.ClassDef)
        if nodes:
            return _segment(lines, nodes[-1])
    return None


def source_of(obj) -> str | None:
    """The definition (with decorators) of a cell-defined function or class, or None if not found."""
    if "<locals>" in getattr(obj, "__qualname__", "<locals>"):
        return None  # a closure: its source alone would not re-create it
    if isinstance(obj, type):
        return _class_source(obj)
    func = obj if isinstance(obj, types.FunctionType) else inspect.unwrap(obj)
    return _function_source(func) if isinstance(func, types.FunctionType) else None


def recreate(source: str, name: str, user_ns: dict, local_ns) -> object:
    """Run a saved definition and return the object it binds to `name`.

    It runs with the user namespace as globals (so re-created functions see the namespace they will
    live in) and `local_ns` as locals, so the definition itself binds nothing in the user namespace.
    """
    filename = f"<ipymini-checkpoint-{next(_counter)}>"
    lines = source.splitlines(keepends=True)
    linecache.cache[filename] = (len(source), None, lines, filename)  # mtime None: never evicted
    scratch: dict = {}
    from collections import ChainMap

    exec(compile(source, filename, "exec"), user_ns, ChainMap(scratch, local_ns))
    if name not in scratch:
        raise NameError(f"the saved source does not define {name!r}")
    return scratch[name]
