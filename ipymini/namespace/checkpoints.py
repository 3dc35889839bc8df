"""Namespace checkpoints on disk: `%checkpoint save [NAME] | restore NAME | list | delete NAME`.

A checkpoint survives a kernel restart or crash. Each user name is stored by the way it can be
re-created: imported modules by module name, functions and classes defined in cells by their source
(cellsource.py), everything else by value with pickle. Names that none of these can store (an open
socket, a lock, a generator, a lambda) are listed in the save report and in the file, never dropped
silently. Restoring builds every name in a scratch dict first and only then updates the namespace,
so a bad file leaves the namespace untouched.

File layout (`<dir>/<NAME>.ipyckpt`): a magic line, one JSON header line (format version, Python
version, modules, sources, names not saved, size and sha256 of the payload), then the payload: one
pickle of the by-value names. Saves write a temp file in the same directory, fsync it and
os.replace it over the old one, so a crash mid-save never damages an earlier checkpoint.

Directory: IPYMINI_CHECKPOINT_DIR, else `c.IPyMini.checkpoint_dir`, else `<profile>/checkpoints`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import sys
import time
import types
from pathlib import Path

from ipymini import settings
from ipymini.namespace import cellsource
from ipymini.namespace.transactions import is_machinery

MAGIC = b"IPYMINI-CHECKPOINT\n"
FORMAT = 1
SUFFIX = ".ipyckpt"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class CheckpointError(Exception):
    """A checkpoint that cannot be saved, found or restored; shown without a Python traceback."""

    def _render_traceback_(self):
        return [f"\x1b[0;31mCheckpointError\x1b[0m: {self}"]


class _Pickler(pickle.Pickler):
    """Notes the cell-defined functions and classes a value refers to (pickle stores them by name)."""

    def __init__(self, file, main_name: str):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.main_name = main_name
        self.main_refs: list = []

    def reducer_override(self, obj):
        if isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == self.main_name:
            self.main_refs.append(obj)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    """Resolves `__main__.X` to the re-created definitions before they are in the namespace."""

    def __init__(self, file, main_name: str, scratch: dict):
        super().__init__(file)
        self.main_name, self.scratch = main_name, scratch

    def find_class(self, module, name):
        if module == self.main_name and name in self.scratch:
            return self.scratch[name]
        return super().find_class(module, name)


def _dump(values: dict, main_name: str) -> tuple[bytes, list]:
    buf = io.BytesIO()
    p = _Pickler(buf, main_name)
    p.dump(values)
    return buf.getvalue(), p.main_refs


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Checkpoints:
    """Saves and restores a shell's user namespace."""

    def __init__(self, shell):
        self.shell = shell

    @property
    def directory(self) -> Path:
        configured = settings.value("IPYMINI_CHECKPOINT_DIR", config=self.shell.config)
        if configured:
            return Path(os.path.expanduser(str(configured)))
        return Path(self.shell.profile_dir.location) / "checkpoints"

    def path(self, name: str) -> Path:
        if not _NAME_RE.fullmatch(name):
            raise CheckpointError(f"bad checkpoint name {name!r}: use letters, digits, '_', '-' and '.'")
        return self.directory / (name + SUFFIX)

    # -- save --

    def user_names(self) -> dict:
        """The names a user defined: no IPython bookkeeping, nothing startup code put there unchanged."""
        hidden = self.shell.user_ns_hidden
        missing = object()
        return {k: v for k, v in self.shell.user_ns.items()
                if not is_machinery(k) and hidden.get(k, missing) is not v}

    def collect(self) -> tuple[dict, list, dict, bytes, list]:
        """(modules, sources, unsaved {name: reason}, pickled values, saved names) for the namespace."""
        main_name = self.shell.user_module.__name__
        modules, sources, unsaved, values = {}, {}, {}, {}
        for name, value in self.user_names().items():
            if isinstance(value, types.ModuleType):
                if sys.modules.get(value.__name__) is value:
                    modules[name] = value.__name__
                else:
                    unsaved[name] = f"module {value.__name__!r} cannot be imported by name"
            elif cellsource.is_cell_defined(value, main_name):
                if id(value) in sources:
                    sources[id(value)]["names"].append(name)
                    continue
                src = cellsource.source_of(value)
                if src is None:
                    unsaved[name] = ("a lambda (define it with def to make it saveable)"
                                     if value.__name__ == "<lambda>" else "its source code was not found")
                else:
                    sources[id(value)] = {"names": [name], "name": value.__name__, "source": src,
                                          "obj": value}
            else:
                values[name] = value
        by_source = {id(s["obj"]) for s in sources.values()}
        try:
            payload, refs = _dump(values, main_name)
            ok = all(id(r) in by_source for r in refs)
        except Exception:
            ok = False
        if not ok:  # find the culprits one by one, then store the rest together (shared references)
            for name, value in list(values.items()):
                try:
                    _, refs = _dump(value, main_name)
                except Exception as e:
                    unsaved[name] = f"cannot be pickled ({_describe(e)})"
                    del values[name]
                    continue
                lost = [r.__qualname__ for r in refs if id(r) not in by_source]
                if lost:
                    unsaved[name] = f"refers to {', '.join(lost)}, which could not be saved"
                    del values[name]
            payload, _ = _dump(values, main_name)
        source_list = [{k: v for k, v in s.items() if k != "obj"} for s in sources.values()]
        saved = [*modules, *(n for s in source_list for n in s["names"]), *values]
        return modules, source_list, unsaved, payload, saved

    def save(self, name: str) -> tuple[Path, dict, dict]:
        """Write the namespace to checkpoint `name` atomically; returns (path, header, unsaved)."""
        import hashlib

        path = self.path(name)
        modules, sources, unsaved, payload, names = self.collect()
        header = {
            "format": FORMAT, "name": name, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "python": sys.version.split()[0], "python_version": list(sys.version_info[:2]),
            "implementation": sys.implementation.name, "modules": modules, "sources": sources,
            "names": names, "unsaved": unsaved, "payload_size": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC)
                f.write(json.dumps(header).encode() + b"\n")
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        try:  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
        return path, header, unsaved

    # -- restore --

    def read(self, name: str, header_only: bool = False) -> tuple[dict, bytes]:
        """Header and payload of checkpoint `name`, checked; CheckpointError for anything wrong."""
        import hashlib

        path = self.path(name)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint named {name!r} in {self.directory}") from None
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {name!r}: {e}") from None
        with f:
            if f.read(len(MAGIC)) != MAGIC:
                raise CheckpointError(f"{path} is not an ipymini checkpoint")
            try:
                header = json.loads(f.readline())
                if not isinstance(header, dict):
                    raise ValueError("header is not an object")
            except ValueError:
                raise CheckpointError(f"checkpoint {name!r} is damaged (unreadable header)") from None
            if header.get("format") != FORMAT:
                raise CheckpointError(f"checkpoint {name!r} has format {header.get('format')!r}; "
                                      f"this ipymini reads format {FORMAT}")
            saved = header.get("python_version")
            if (header.get("implementation"), saved) != (sys.implementation.name, list(sys.version_info[:2])):
                raise CheckpointError(
                    f"checkpoint {name!r} was saved by {header.get('implementation')} {header.get('python')}; "
                    f"this kernel runs {sys.implementation.name} {sys.version.split()[0]} "
                    "(pickled values only restore on the same Python version)")
            if header_only:
                return header, b""
            payload = f.read()
        if len(payload) != header.get("payload_size") or \
                hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
            raise CheckpointError(f"checkpoint {name!r} is damaged (truncated or changed after saving)")
        return header, payload

    def build(self, header: dict, payload: bytes) -> dict:
        """Every saved name re-created in a new dict; CheckpointError listing what failed."""
        import importlib

        scratch: dict = {}
        failed = {}
        for binding, module in header["modules"].items():
            try:
                scratch[binding] = importlib.import_module(module)
            except Exception as e:
                failed[binding] = f"import {module}: {_describe(e)}"
        # definitions before values (instances need their classes); a second try for definitions whose
        # decorators use by-value names
        retry = self._run_sources(header["sources"], scratch)
        main_name = self.shell.user_module.__name__
        try:
            scratch.update(_Unpickler(io.BytesIO(payload), main_name, scratch).load())
        except Exception as e:
            failed["(pickled values)"] = f"unpickling failed ({_describe(e)})"
        for s, e in self._run_sources([s for s, _ in retry], scratch):
            for binding in s["names"]:
                failed[binding] = f"re-running its definition failed ({_describe(e)})"
        if failed:
            details = "; ".join(f"{k}: {v}" for k, v in failed.items())
            raise CheckpointError(f"checkpoint {header.get('name')!r} could not be restored; "
                                  f"the namespace is unchanged. {details}")
        return scratch

    def _run_sources(self, sources: list, scratch: dict) -> list:
        """Re-create saved definitions into `scratch`; returns [(source, exception)] for failures."""
        failures = []
        for s in sources:
            try:
                obj = cellsource.recreate(s["source"], s["name"], self.shell.user_ns, scratch)
            except Exception as e:
                failures.append((s, e))
                continue
            for binding in s["names"]:
                scratch[binding] = obj
        return failures

    def restore(self, name: str) -> dict:
        header, payload = self.read(name)
        scratch = self.build(header, payload)
        self.shell.user_ns.update(scratch)
        return header

    def names(self) -> list[str]:
        try:
            return sorted(p.name[:-len(SUFFIX)] for p in self.directory.iterdir()
                          if p.name.endswith(SUFFIX) and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    # -- the magic --

    def magic(self, line: str):
        """%checkpoint save [NAME] | restore NAME | list | delete NAME: the namespace on disk.

        save     writes every user name to NAME (default: a timestamp) in the checkpoint directory
                 (IPYMINI_CHECKPOINT_DIR, else c.IPyMini.checkpoint_dir, else <profile>/checkpoints).
                 Imported modules are stored by module name, functions and classes defined in cells
                 by their source, everything else by value (pickle). Names that cannot be stored
                 (sockets, locks, generators, lambdas, ...) are listed in the report.
        restore  re-creates the checkpoint's names and adds them to the namespace (other names stay).
                 If anything fails (unknown name, damaged file, other Python version) the namespace
                 is left unchanged.
        list     shows the saved checkpoints.
        delete   removes a checkpoint.
        Saves are atomic: a crash mid-save leaves any earlier checkpoint of that name intact.
        """
        from IPython.core.error import UsageError

        usage = "usage: %checkpoint save [NAME] | restore NAME | list | delete NAME"
        args = line.split()
        cmd, rest = (args[0], args[1:]) if args else ("", [])
        if cmd == "save" and len(rest) <= 1:
            name = rest[0] if rest else time.strftime("%Y%m%d-%H%M%S")
            path, header, unsaved = self.save(name)
            print(f"Saved checkpoint {name!r} ({len(header['names'])} names) to {path}")
            if unsaved:
                print(f"Not saved ({len(unsaved)}): "
                      + "; ".join(f"{k}: {v}" for k, v in unsaved.items()), file=sys.stderr)
        elif cmd == "restore" and len(rest) == 1:
            header = self.restore(rest[0])
            print(f"Restored checkpoint {rest[0]!r} ({len(header['names'])} names, "
                  f"saved {header['created']}).")
            if header.get("unsaved"):
                print("Not in this checkpoint (could not be saved): " + ", ".join(header["unsaved"]),
                      file=sys.stderr)
        elif cmd == "list" and not rest:
            names = self.names()
            if not names:
                print(f"No checkpoints in {self.directory}")
            for name in names:
                try:
                    h, _ = self.read(name, header_only=True)
                    print(f"{name}\t{h['created']}\t{len(h['names'])} names\t{len(h['unsaved'])} not saved")
                except CheckpointError as e:
                    print(f"{name}\t(unreadable: {e})")
        elif cmd == "delete" and len(rest) == 1:
            path = self.path(rest[0])
            try:
                path.unlink()
            except FileNotFoundError:
                raise CheckpointError(f"no checkpoint named {rest[0]!r} in {self.directory}") from None
            print(f"Deleted checkpoint {rest[0]!r}")
        else:
            raise UsageError(usage)


def install(shell) -> Checkpoints:
    """Register %checkpoint on `shell`."""
    cp = Checkpoints(shell)
    shell.register_magic_function(cp.magic, "line", "checkpoint")
    return cp
