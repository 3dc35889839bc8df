"""Every IPYMINI_* environment setting, declared once and parsed one way.

`value(name)` reads a setting from the environment (or a given mapping) when its user asks for it, so a
kernel started with its own environment sees its own values. An unset or empty variable means the
default. A bad value raises `SettingError` naming the variable, the value and what is expected;
`problems()` lists every bad value; `python -m ipymini` and the remote launcher check them all before
they start (exit status 2).
Two settings may also come from `c.IPyMini.<key>` in ipython_kernel_config.py; the environment wins
when the variable is set at all.

`python -m ipymini.settings --markdown` prints README.md's table of settings.
This module imports only the standard library: every layer of ipymini may use it, the remote launcher
included (it never imports IPython).
Must not import: IPython, ipymini.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Callable, Mapping


class SettingError(ValueError):
    """An IPYMINI_* variable holds a value its setting cannot take."""


@dataclass(frozen=True)
class Kind:
    """How a setting's text becomes its value: `parse` raises ValueError on text it cannot take."""

    parse: Callable[[str], object]
    expected: str  # what a good value looks like, for the error message


def _flag(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise ValueError(text)
    return n


def _seconds(text: str) -> float:
    s = float(text)
    if not s >= 0:  # also refuses nan
        raise ValueError(text)
    return s


def _bytes(text: str) -> int:
    n = float(text)  # as before: "1e6" and "1000.0" are byte counts too
    if not 0 <= n < math.inf:
        raise ValueError(text)
    return int(n)


_SIZE = re.compile(r"(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
MIN_MEMORY_LIMIT = 64 << 20  # a kernel needs ~40 MiB to start: less could never run a cell


def _memory(text: str) -> int | float:
    """IPYMINI_MEMORY_LIMIT: bytes as an int (K/M/G/T: binary units, as Docker's --memory; 0: off),
    or a percentage of the detected limit as a float fraction."""
    t = text.strip()
    if t.endswith("%"):
        fraction = float(t[:-1]) / 100
        if not 0 < fraction <= 1:
            raise ValueError(text)
        return fraction
    match = _SIZE.fullmatch(t)
    if match is None:
        raise ValueError(text)
    n = float(match.group(1)) * (1 << (10 * " kmgt".index(match.group(2).lower() or " ")))
    if not (n == 0 or MIN_MEMORY_LIMIT <= n < math.inf):
        raise ValueError(text)
    return int(n)


def _level(text: str) -> str:
    name = text.strip().upper()
    if name not in logging.getLevelNamesMapping():
        raise ValueError(text)
    return name


BOOL = Kind(_flag, "0 or 1 (also true/false, yes/no, on/off)")
COUNT = Kind(_count, "a whole number ≥ 0")
SECONDS = Kind(_seconds, "a number of seconds ≥ 0")
BYTES = Kind(_bytes, "a number of bytes ≥ 0")
MEMORY = Kind(_memory, "0 (off), a size of at least 64M (bytes, or with K, M, G or T) or a percentage "
                        "such as 80%")
LEVEL = Kind(_level, "a log level name (DEBUG, INFO, WARNING, ERROR or CRITICAL)")
TEXT = Kind(str, "any text")


def _one_of(*words: str) -> Kind:
    def parse(text: str) -> str:
        word = text.strip().lower()
        if word not in words:
            raise ValueError(text)
        return word
    return Kind(parse, " or ".join(words))


@dataclass(frozen=True)
class Setting:
    """One IPYMINI_* variable: its kind, its default (as environment text; None: unset) and meaning."""

    name: str
    kind: Kind
    default: str | None
    meaning: str  # README.md's wording
    shown: str = ""  # README's default column when `default` is None
    config_key: str | None = None  # also settable as c.IPyMini.<config_key>

    def parse(self, text: str | None):
        """The value of the variable's text (None or empty: the default)."""
        if text is None or text.strip() == "":
            return None if self.default is None else self.kind.parse(self.default)
        try:
            return self.kind.parse(text)
        except (ValueError, OverflowError):
            raise SettingError(f"{self.name}={text!r} is not valid: expected {self.kind.expected}") from None

    def default_column(self) -> str:
        return f"`{self.default}`" if self.default is not None else self.shown


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("IPYMINI_CAPTURE_FD", BOOL, "1",
            "capture what subprocesses and C code write to fds 1/2 into the cell's output, and "
            "forked children's prints and displays"),
    Setting("IPYMINI_OUTPUT_LIMIT", BYTES, None,
            "per-cell stream output budget in bytes; past it, one notice says how much was omitted",
            shown="unset"),
    Setting("IPYMINI_IOPUB_STALL_TIMEOUT", SECONDS, "10",
            "seconds an iopub subscriber may stop reading before it (only it) starts missing messages"),
    Setting("IPYMINI_IOPUB_HWM", COUNT, "100", "iopub send high-water mark (messages per subscriber)"),
    Setting("IPYMINI_COMMS_ON_SUBSHELLS", BOOL, "0",
            "run comm messages on the subshell they arrive on instead of the parent shell"),
    Setting("IPYMINI_MEMORY_LIMIT", MEMORY, None,
            "the memory guard: the most the kernel may use (`2G`, `512M`, or `80%` of the cgroup's or "
            "machine's limit); near it a cell ends in MemoryError and the kernel lives on; `0`: off (a "
            "kernel that dies in a cell is still reported by the next)",
            shown="on: the cgroup's or machine's limit"),
    Setting("IPYMINI_THREAD_OUTPUT", _one_of("running", "starter"), "running",
            "where output of a thread with no parent of its own goes: `running`, the cell running now "
            "(else the last one), as ipykernel 7.1+; `starter`, the cell that started the thread "
            "(see below)"),
    Setting("IPYMINI_STACKS_SIGNAL", _one_of("sigusr1", "sigusr2"), None,
            "on this signal every thread's stack goes to the kernel's log: how a wedged kernel is "
            "diagnosed (`kill -USR2 PID`)", shown="off"),
    Setting("IPYMINI_LOG_LEVEL", LEVEL, "WARNING",
            "kernel log level (the log goes to the original stderr, never into cells)"),
    Setting("IPYMINI_COMPLETION_TIMEOUT", SECONDS, "1.5",
            "seconds a completion may take before it is cut off and answered with what is available "
            "(0: no limit)"),
    Setting("IPYMINI_USE_JEDI", BOOL, None, "`0`/`1`: completion with or without jedi", shown="IPython's"),
    Setting("IPYMINI_EXPERIMENTAL_COMPLETIONS", BOOL, "1",
            "`0` drops the `_jupyter_types_experimental` completion metadata"),
    Setting("IPYMINI_ROLLBACK", BOOL, "0", "`1`: every cell is transactional (as `%rollback on`)",
            config_key="rollback"),
    Setting("IPYMINI_CHECKPOINT_DIR", TEXT, None, "where `%checkpoint` stores namespaces",
            shown="profile dir `/checkpoints`", config_key="checkpoint_dir"),
    Setting("IPYMINI_DEBUG_TIMEOUT", SECONDS, "15",
            "seconds the control thread waits for the debugger on one request"),
    Setting("IPYMINI_DEBUG_JUST_MY_CODE", BOOL, "1",
            "default justMyCode for the debugger (an `attach` request's own value wins)"),
    Setting("IPYMINI_HANDSHAKE_TIMEOUT", SECONDS, "10",
            "seconds the kernel waits for the launcher's acknowledgement when started with a "
            "registration file (the kernel handshake of protocol 5.6); none in time: exit status 1 "
            "(0: no limit)"),
    Setting("IPYMINI_KERNEL_IP", TEXT, "0.0.0.0",
            "address the kernel binds when started by the remote launcher (`python -m ipymini.remote`; "
            "its `--ip` default)"),
)}


def value(name: str, environ: Mapping[str, str] | None = None, config=None, default: str | None = None):
    """The setting `name` from `environ` (default: os.environ), parsed by its kind.

    `config`: IPython's config object, for a setting also settable as `c.IPyMini.<key>` (used when the
    variable is not set at all). `default`: the environment text to use instead of the declared default
    (the remote launcher logs at INFO). Raises SettingError for a bad value.
    """
    setting = SETTINGS[name]
    env = os.environ if environ is None else environ
    if name not in env and config is not None and setting.config_key:
        section = config.get("IPyMini", None)
        configured = section.get(setting.config_key, None) if section is not None else None
        return _from_config(setting, configured)
    text = env.get(name)
    if default is not None and (text is None or text.strip() == ""):
        text = default
    return setting.parse(text)


def _from_config(setting: Setting, configured):
    """A c.IPyMini value, taken as ipymini always took it: a flag is on for 1/true/yes/on, else off."""
    if setting.kind is BOOL:
        return str(configured).strip().lower() in ("1", "true", "yes", "on")
    return configured or None


def problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """One message per setting whose value in `environ` (default: os.environ) is bad."""
    found = []
    for name in SETTINGS:
        try:
            value(name, environ)
        except SettingError as e:
            found.append(str(e))
    return found


def check(environ: Mapping[str, str] | None = None) -> bool:
    """At startup: print every bad setting to stderr as `ipymini: ...`; False if there was one."""
    found = problems(environ)
    for message in found:
        print(f"ipymini: {message}", file=sys.stderr)
    return not found


def markdown() -> str:
    """README.md's table of settings."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.default_column()} | {s.meaning} |" for s in SETTINGS.values()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m ipymini.settings --markdown")
    sys.stdout.write(markdown())
