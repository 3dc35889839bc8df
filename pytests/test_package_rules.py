"""The package rules, read from the source with `ast` (issue 28): what each package may import, no
cycles between packages, and no change to another library outside ipymini/patches.py.

A unit is a subpackage (`ipymini.output`) or a top-level module (`ipymini.kernel`, `ipymini.settings`;
the package's own `__init__` is `ipymini`). Each subpackage's docstring says what it must not import
in one line a person and this test both read:

    Must not import: IPython, ipymini.kernel, ipymini (except ipymini.settings).

The list ends at the first period followed by a space or a line's end. An item is a module name and
stands for it and everything under it; `ipymini` stands for every unit but the package's own; an item
may be followed by `(except name, ...)`, or by a parenthesis that only says more to the reader. A
top-level module may declare a rule the same way. Every import counts, at module level or inside a
function (and `__import__`/`importlib.import_module` of a constant name). No units import each other,
directly or around a cycle, and neither do the modules inside one package.

A change to another library is an assignment, `del`, `setattr` or `delattr` of an attribute of a name
bound by an import of another library (`sys.excepthook = ...`, `Completer.x = ...`), or of a private
attribute (`_name`) of any object but `self` (`loop._selector = ...`): it goes through `patches.patch`
or `patches.assign`, whose targets `patches.PATCHES` declares with their reasons. Not seen: a library's
list or dict changed through its methods, a public attribute of an object whose type the source does
not say. Markers ipymini leaves on others' objects are named `_ipymini...`; NOT_PATCHES lists the few
private writes that are not patches.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import ipymini

PACKAGE = Path(ipymini.__file__).parent
IMPORT_CALLS = ("__import__", "importlib.import_module")

# private attributes ipymini writes on objects it may: not patches, with the reason
NOT_PATCHES = {
    ("comms.py", "_closed"): "ipymini's own Comm (comm's BaseComm keeps its closed state there, as its "
                             "own CommManager sets it)",
    ("gui/qt.py", "_in_event_loop"): "IPython's guisupport protocol: the flag on the application that says "
                                     "its event loop runs, set as IPython's own event loops set it",
    ("gui/wx.py", "_in_event_loop"): "the same, for wx",
}


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package's `__init__` by the package's)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def unit_of(module: str) -> str:
    """The unit a module belongs to: its subpackage, or itself at the top level."""
    return ".".join(module.split(".")[:2])


def imports(tree: ast.Module, module: str, is_package: bool, known) -> list[tuple[int, str]]:
    """(line, module) for every import in a module's tree, relative ones resolved; `from a import b` is
    `a.b` when that is a module of the package (in `known`), else `a`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append((node.lineno, name if name in known else base))
        elif (isinstance(node, ast.Call) and _call_name(node.func) in IMPORT_CALLS and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return list(dict.fromkeys(found))  # `from a import b, c` is one import of `a`


def _call_name(func) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return f"{func.value.id}.{func.attr}"
    return ""


class Rule:
    """A unit's "Must not import:" list: (name, exceptions) pairs."""

    LINE = re.compile(r"^Must not import:(.*?)(?:\.(?=\s|$)|\Z)", re.M | re.S)
    ITEM = re.compile(r"([A-Za-z_][\w.]*)\s*(?:\((.*)\))?", re.S)

    def __init__(self, unit: str, items: list[tuple[str, frozenset]]):
        self.unit, self.items = unit, items

    @classmethod
    def parse(cls, unit: str, docstring: str | None) -> Rule | None:
        """The rule in a docstring, None if it has none; ValueError for one this test cannot read."""
        match = cls.LINE.search(docstring or "")
        if match is None:
            return None
        items = []
        for text in _split_top_level(match.group(1)):
            item = cls.ITEM.fullmatch(text.strip())
            if item is None:
                raise ValueError(f"{unit}: cannot read {text.strip()!r} in its 'Must not import:' line")
            name, note = item.group(1), (item.group(2) or "").strip()
            excepted = frozenset(n.strip() for n in note[len("except"):].split(",")) if note.startswith(
                "except ") else frozenset()
            items.append((name, excepted))
        if not items:
            raise ValueError(f"{unit}: its 'Must not import:' line names nothing")
        return cls(unit, items)

    def forbids(self, imported: str, imported_unit: str, root: str) -> bool:
        """Whether importing `imported` (a module of `imported_unit`, or of another library) breaks it."""
        if imported_unit == self.unit:
            return False
        for name, excepted in self.items:
            if any(imported == e or imported.startswith(e + ".") for e in excepted):
                continue
            if name == root and imported_unit.split(".")[0] == root:
                return True
            if imported == name or imported.startswith(name + "."):
                return True
        return False


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p for p in parts + [current] if p.strip()]


class Checker:
    """The three checks over one package tree (ipymini's, or one planted in a test)."""

    def __init__(self, package: Path):
        self.package, self.root = package, package.name
        self.modules = modules(package)
        self.trees = {name: ast.parse(path.read_text(), str(path)) for name, path in self.modules.items()}
        self.imports = {name: imports(self.trees[name], name, path.name == "__init__.py", self.modules)
                        for name, path in self.modules.items()}

    def where(self, module: str, line: int) -> str:
        """`ipymini/output/fdcapture.py:25`: a place in a module."""
        return f"{self.modules[module].relative_to(self.package.parent)}:{line}"

    def unit(self, module: str) -> str:
        return unit_of(module)

    def units(self) -> set[str]:
        return {self.unit(name) for name in self.modules}

    def is_subpackage(self, unit: str) -> bool:
        return unit != self.root and self.modules[unit].name == "__init__.py"

    def rules(self) -> dict[str, Rule | None]:
        """Every unit's rule (None where it declares none)."""
        return {unit: Rule.parse(unit, ast.get_docstring(self.trees[unit])) for unit in sorted(self.units())}

    def missing_rules(self) -> list[str]:
        return [unit for unit, rule in self.rules().items() if rule is None and self.is_subpackage(unit)]

    def forbidden_imports(self) -> list[str]:
        rules, found = self.rules(), []
        for module, imported in sorted(self.imports.items()):
            rule = rules.get(self.unit(module))
            for line, name in imported if rule else ():
                target_unit = self.unit(name) if name.split(".")[0] == self.root else name
                if rule.forbids(name, target_unit, self.root):
                    found.append(f"{self.where(module, line)}: imports {name}, which {rule.unit}'s "
                                 "docstring forbids")
        return found

    def edges(self, modules: bool = False) -> dict[str, dict[str, str]]:
        """unit -> unit it imports -> one place that does (a unit's imports of itself left out); with
        `modules`, module -> module of the same unit it imports."""
        node = (lambda name: name) if modules else self.unit
        graph: dict[str, dict[str, str]] = {node(name): {} for name in self.modules}
        for module, imported in sorted(self.imports.items()):
            for line, name in imported:
                if name.split(".")[0] != self.root or (modules and (
                        name not in self.modules or self.unit(name) != self.unit(module))):
                    continue
                source, target = node(module), node(name)
                if source != target:
                    graph[source].setdefault(target, f"{self.where(module, line)} imports {name}")
        return graph

    def cycles(self, modules: bool = False) -> list[str]:
        """One line per group of units (or of one unit's modules) that import each other, with the
        imports that close the cycle."""
        graph = self.edges(modules)
        found = []
        for group in _strongly_connected(graph):
            if len(group) > 1:
                why = [graph[a][b] for a in sorted(group) for b in sorted(graph[a]) if b in group]
                found.append(f"{' <-> '.join(sorted(group))}: {'; '.join(why)}")
        return found

    def patches_outside(self) -> list[str]:
        """Changes to another library's modules, classes or objects made outside patches.py."""
        found = []
        for module, tree in sorted(self.trees.items()):
            rel = self.modules[module].relative_to(self.package).as_posix()
            if rel == "patches.py":
                continue
            foreign = _foreign_names(tree, self.root)
            for node, target, attr in _attribute_writes(tree):
                base = _base_name(target)
                own = isinstance(target, ast.Name) and target.id in ("self", "cls")
                if base in foreign:
                    why = f"an attribute of {base} (imported from {foreign[base]})"
                elif _private(attr) and not own and (rel, attr) not in NOT_PATCHES:
                    why = f"the private attribute {attr} of another object"
                else:
                    continue
                statement = ast.unparse(node)[:80]
                found.append((module, node.lineno, f"{self.where(module, node.lineno)}: writes {why} "
                                                   f"({statement}): use patches.patch or patches.assign"))
        return [text for _, _, text in sorted(found)]


def _private(attr: str) -> bool:
    """A private attribute (`_x`), not a dunder and not one of ipymini's own markers (`_ipymini...`)."""
    return attr.startswith("_") and not attr.startswith(("__", "_ipymini"))


def _foreign_names(tree: ast.Module, root: str) -> dict[str, str]:
    """Names bound anywhere in the module by an import of another library -> what they import."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != root:
                    names[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module.split(".")[0] != root:
            if node.module == "__future__":
                continue
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _attribute_writes(tree: ast.Module):
    """(statement, object, attribute) for every attribute written or deleted, directly or by
    setattr/delattr with a constant name."""
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and _call_name(node.func) in ("setattr", "delattr") and node.args[1:]:
            name = node.args[1].value if isinstance(node.args[1], ast.Constant) else ""
            yield node, node.args[0], str(name)
            continue
        while targets:
            target = targets.pop()
            if isinstance(target, (ast.Tuple, ast.List)):
                targets += target.elts
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
            elif isinstance(target, ast.Attribute):
                yield node, target.value, target.attr


def _base_name(expr) -> str:
    """The name an attribute chain starts from (`a` in `a.b.c`), "" if it starts elsewhere."""
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else ""


def _strongly_connected(graph: dict[str, dict]) -> list[set[str]]:
    """Tarjan's strongly connected components."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


@pytest.fixture(scope="module")
def checker():
    return Checker(PACKAGE)


def test_every_package_declares_its_rule(checker):
    assert checker.missing_rules() == []


def test_no_package_imports_what_its_rule_forbids(checker):
    assert checker.forbidden_imports() == []


def test_no_cycles_between_packages(checker):
    assert checker.cycles() == []


def test_no_cycles_between_the_modules_of_a_package(checker):
    assert checker.cycles(modules=True) == []


def test_no_other_library_is_changed_outside_patches(checker):
    assert checker.patches_outside() == []


def test_the_not_patches_list_names_only_writes_that_exist(checker):
    """An entry of NOT_PATCHES whose write is gone is dropped from the list (it would excuse a new one)."""
    written = {(checker.modules[m].relative_to(PACKAGE).as_posix(), attr)
               for m, tree in checker.trees.items() for _, _, attr in _attribute_writes(tree)}
    assert set(NOT_PATCHES) <= written


def test_the_checks_catch_planted_violations(tmp_path):
    """A small package with one of each violation: the checks find each, and only those."""
    root = tmp_path / "pkg"

    def write(rel: str, text: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)

    write("__init__.py", '"""The root."""\n')
    write("settings.py", '"""Settings.\n\nMust not import: pkg.\n"""\n')
    write("low/__init__.py", '"""Low.\n\nMust not import: IPython, pkg (except pkg.settings).\n"""\n')
    write("low/a.py", "from pkg import settings\nfrom pkg.high import b\n")  # forbidden, and a cycle
    write("low/c.py", "def f():\n    import IPython.core\n")  # forbidden, inside a function
    write("high/__init__.py", '"""High.\n\nMust not import: pkg.kernel (the hub).\n"""\n')
    write("high/b.py", "import sys\nfrom asyncio import Runner\nfrom pkg.low import a\n"
                       "def g(loop):\n    sys.excepthook = None\n    setattr(Runner, 'run', None)\n"
                       "    loop._selector = None\n    loop._ipymini = True\n")
    write("high/d.py", "from .. import kernel\nfrom .e import x\n")  # relative, forbidden
    write("high/e.py", "def f():\n    from pkg.high import d\n")  # a cycle inside pkg.high
    write("kernel.py", "import pkg.low.a\n")
    write("norule/__init__.py", '"""No rule here."""\n')
    write("patches.py", "import sys\nsys.excepthook = None\n")  # allowed: it is patches.py
    check = Checker(root)
    assert check.missing_rules() == ["pkg.norule"]
    forbidden = check.forbidden_imports()
    assert [f.split(": ", 1)[0] for f in forbidden] == ["pkg/high/d.py:1", "pkg/low/a.py:2", "pkg/low/c.py:2"]
    assert "imports pkg.kernel, which pkg.high's docstring forbids" in forbidden[0]
    cycles = check.cycles()
    assert len(cycles) == 1 and cycles[0].startswith("pkg.high <-> pkg.kernel <-> pkg.low: ")
    assert check.cycles(modules=True) == ["pkg.high.d <-> pkg.high.e: pkg/high/d.py:2 imports pkg.high.e; "
                                          "pkg/high/e.py:2 imports pkg.high.d"]
    patched = check.patches_outside()
    assert [p.split(": ", 1)[0] for p in patched] == ["pkg/high/b.py:5", "pkg/high/b.py:6", "pkg/high/b.py:7"]
    with pytest.raises(ValueError, match="cannot read"):
        Rule.parse("pkg.x", "Must not import: the sockets, or the kernel.")
