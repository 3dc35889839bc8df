"""The last cell: what the kernel was running, kept where its death cannot erase it.

A small file beside the connection file, mapped into the kernel's memory. When a cell starts and ends
the kernel writes into the mapping (a store into memory, no system call), and the memory watcher
writes its latest sample there. A process that is killed (the OOM killer, SIGKILL, a crash in C code)
leaves what it wrote in the page cache, so the next kernel started on the same connection file (a
restart keeps it) finds the cell that was running, says so in the output of the first cell it runs, and
starts its own record. A clean shutdown removes the file.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time

from ipymini.memory.limits import human

log = logging.getLogger("ipymini")

MAGIC = b"IPYMCELL"
SIZE = 2048
_HEADER = struct.Struct("<8sII")  # magic, version, pid
_SAMPLE = struct.Struct("<dQQQq")  # time, used, limit, kernel's anonymous memory, OOM kills (-1: ?)
_SAMPLE_AT = 16
_SOURCE_AT, _SOURCE_MAX = 56, 190  # u16 length, then the limit's source (utf-8)
_KILLS_AT_START = struct.Struct("<q")  # at 248: the OOM kills of the last sample when a cell began
_KILLS_AT_START_AT = 248
_CELL = struct.Struct("<IIdH")  # state (1: running), execution count, started (time.time()), length
_SLOTS = (256, 768)  # the parent shell's cell, the latest subshell cell
_LINE_MAX = 400
_RUNNING = 1


def path_for(connection_file: str) -> str:
    """Where the record of the kernel on `connection_file` lives."""
    folder, name = os.path.split(os.path.abspath(connection_file))
    return os.path.join(folder, f".{name}.ipymini-cell")


def first_line(code: str) -> str:
    """The cell's first line that is not blank."""
    for line in code.split("\n", 20)[:20]:
        if line.strip():
            return line.strip()
    return ""


class LastCell:
    """This kernel's record (see the module docstring); `notice` is what the previous kernel left."""

    def __init__(self, path: str):
        self.path = path
        self._map = None
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self.previous = os.pread(fd, SIZE, 0)
            os.ftruncate(fd, 0)
            os.ftruncate(fd, SIZE)
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        _HEADER.pack_into(self._map, 0, MAGIC, 1, os.getpid())
        for at in (_SAMPLE_AT + 32, _KILLS_AT_START_AT):  # no kill count known yet
            _KILLS_AT_START.pack_into(self._map, at, -1)
        self._source = b""

    def notice(self, oom_kills_now: dict[str, int] | None = None) -> str | None:
        """What to tell the user about the previous kernel on this connection file, if it died while
        running a cell (`oom_kills_now`: each limit's OOM kill count now, by its source, where known)."""
        return _notice(self.previous, oom_kills_now or {})

    def cell_started(self, slot: int, count: int, code: str) -> None:
        line = first_line(code).encode("utf-8", "replace")[:_LINE_MAX]
        at = _SLOTS[slot]
        m = self._map
        # the kill count as the cell begins (no system call: the last sample's): should the last
        # sample before a death already count the kill, the notice still says it happened
        m[_KILLS_AT_START_AT:_KILLS_AT_START_AT + 8] = m[_SAMPLE_AT + 32:_SAMPLE_AT + 40]
        m[at + _CELL.size:at + _CELL.size + len(line)] = line
        _CELL.pack_into(m, at, _RUNNING, count, time.time(), len(line))

    def cell_ended(self, slot: int) -> None:
        self._map[_SLOTS[slot]] = 0

    def sample(self, used: int, limit: int, kernel: int, oom_kills: int | None, source: str) -> None:
        m = self._map
        _SAMPLE.pack_into(m, _SAMPLE_AT, time.time(), used, limit, kernel, -1 if oom_kills is None else oom_kills)
        if source is not self._source:
            data = source.encode("utf-8", "replace")[:_SOURCE_MAX]
            m[_SOURCE_AT + 2:_SOURCE_AT + 2 + len(data)] = data
            struct.pack_into("<H", m, _SOURCE_AT, len(data))
            self._source = source

    def close(self) -> None:
        """A clean shutdown: nothing to tell the next kernel."""
        try:
            self._map.close()
            os.unlink(self.path)
        except (OSError, ValueError):
            pass


def _notice(data: bytes, oom_kills_now: dict[str, int]) -> str | None:
    """What to tell the user about the kernel that left `data`, if it died running a cell."""
    if len(data) < SIZE or not data.startswith(MAGIC):
        return None
    cells = []
    for slot, at in enumerate(_SLOTS):
        state, count, started, length = _CELL.unpack_from(data, at)
        if state == _RUNNING:
            line = data[at + _CELL.size:at + _CELL.size + length].decode("utf-8", "replace")
            cells.append((slot, count, started, line))
    if not cells:
        return None
    slot, count, started, line = cells[0]
    cell = f"cell [{count}]" if slot == 0 else f"a subshell's cell [{count}]"
    text = f"[ipymini] The previous kernel died while running {cell}: {line}"
    stamp, used, limit, kernel, kills = _SAMPLE.unpack_from(data, _SAMPLE_AT)
    if stamp:
        (n,) = struct.unpack_from("<H", data, _SOURCE_AT)
        source = data[_SOURCE_AT + 2:_SOURCE_AT + 2 + n].decode("utf-8", "replace")
        text += (f"\n  At its last memory sample ({max(stamp - started, 0):.1f} s into the cell) the kernel "
                 f"held {human(kernel)}, and {human(used)} of the {human(limit)} limit ({source}) "
                 "was in use.")
        (at_start,) = _KILLS_AT_START.unpack_from(data, _KILLS_AT_START_AT)
        before = min((k for k in (kills, at_start) if k >= 0), default=-1)
        now = oom_kills_now.get(source)
        if now is not None and 0 <= before < now:
            text += (f" Since then the cgroup's OOM killer has killed {now - before} "
                     f"process{'es' if now - before > 1 else ''}.")
    text += "\n  Its variables are gone: this is a new kernel.\n"
    return text
