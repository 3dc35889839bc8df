"""Knowing the limit: how much memory the kernel may use, where that comes from, how much is in use.

A `Budget` is one limit with its own measure of use:
- a memory cgroup on the kernel's path (v2 `memory.max`, v1 `memory.limit_in_bytes`; found through
  /proc/self/cgroup and /proc/self/mountinfo, every limited cgroup from the kernel's own up to the top
  of what is mounted): its usage, shared with whatever else runs in it (the Jupyter server, other
  kernels), less its file page cache, which the kernel reclaims before it kills anyone;
- the machine: its memory less what is still available (MemAvailable, which counts reclaimable cache);
  other programs use memory too;
- the IPYMINI_MEMORY_LIMIT setting: the kernel process's own anonymous memory (file mappings are not
  counted: a big mmap'ed file is page cache).
`Limits.sample()` reads them all (a few small files, kept open and read with pread: ~5 µs) and the
kernel's own statm. The budget with the least room is the one that matters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PAGE = os.sysconf("SC_PAGE_SIZE")
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as PAGE_COUNTER_MAX pages (~2**63)


def margin_for(limit: int) -> int:
    """What the guard keeps free below `limit`: a cell is stopped when less than this is left (the
    address-space bound refuses allocations at half of it), so the traceback, the kernel's own threads
    and the memory's return have room."""
    return min(max(limit // 16, 48 << 20), 512 << 20)


class _File:
    """A small kernel-made file (procfs, cgroupfs) kept open and read from the start each time."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self) -> bytes:
        return os.pread(self.fd, 16384, 0)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _field(text: bytes, name: bytes) -> int:
    """The number after `name` at the start of a line of a `key value` file (0 if absent)."""
    key = name + b" "
    if text.startswith(key):
        at = 0
    else:
        at = text.find(b"\n" + key)
        if at < 0:
            return 0
        at += 1
    end = text.find(b"\n", at)
    return int(text[at + len(key):end if end >= 0 else None])


class Budget:
    """One limit: `limit` bytes, `used()` bytes in use against it, described by `source`."""

    kind = ""
    limit = 0
    source = ""

    def used(self) -> int:
        raise NotImplementedError

    def oom_kills(self) -> int | None:
        """How many processes this limit's OOM killer has killed so far (None: not known)."""
        return None

    def close(self) -> None:
        pass


class CgroupBudget(Budget):
    """A memory cgroup with a limit (v1 or v2)."""

    kind = "cgroup"

    def __init__(self, path: str, version: int, limit: int, name: str):
        self.path, self.version, self.limit = path, version, limit
        v1 = version == 1
        self.source = f"cgroup {name}, {'memory.limit_in_bytes' if v1 else 'memory.max'}"
        self._usage = _File(os.path.join(path, "memory.usage_in_bytes" if v1 else "memory.current"))
        self._stat = _File(os.path.join(path, "memory.stat"))
        self._prefix = b"total_" if v1 else b""  # v1's hierarchical counters (its children included)
        events = os.path.join(path, "memory.oom_control" if v1 else "memory.events")
        self._events = _File(events) if os.path.exists(events) else None

    def used(self) -> int:
        stat = self._stat.read()
        cache = (_field(stat, self._prefix + b"active_file") + _field(stat, self._prefix + b"inactive_file"))
        return max(int(self._usage.read()) - cache, 0)

    def oom_kills(self) -> int | None:
        if self._events is None:
            return None
        text = self._events.read()
        return _field(text, b"oom_kill") if b"oom_kill " in text else None

    def close(self) -> None:
        for f in (self._usage, self._stat, self._events):
            if f is not None:
                f.close()


class MachineBudget(Budget):
    """The machine's memory, of which MemTotal - MemAvailable is in use."""

    kind = "machine"
    source = "the machine's memory, /proc/meminfo"

    def __init__(self, meminfo: str):
        self._meminfo = _File(meminfo)
        text = self._meminfo.read()
        self.limit = _kib(text, b"MemTotal:")
        self._has_available = b"MemAvailable:" in text

    def used(self) -> int:
        text = self._meminfo.read()
        if self._has_available:
            return max(self.limit - _kib(text, b"MemAvailable:"), 0)
        free = sum(_kib(text, key) for key in (b"MemFree:", b"Buffers:", b"Cached:"))
        return max(self.limit - free, 0)

    def close(self) -> None:
        self._meminfo.close()


class SettingBudget(Budget):
    """IPYMINI_MEMORY_LIMIT: the kernel's own anonymous memory (statm resident less shared)."""

    kind = "setting"

    def __init__(self, limit: int, of: Budget | None = None):
        self.limit = limit
        self.source = f"IPYMINI_MEMORY_LIMIT={human(limit)}" + (
            f", {round(100 * limit / of.limit)}% of {of.source}" if of is not None else "")
        self.kernel_anon = 0  # set by Limits.sample before used() is asked

    def used(self) -> int:
        return self.kernel_anon


def _kib(text: bytes, key: bytes) -> int:
    at = text.find(key)
    if at < 0:
        return 0
    return int(text[at + len(key):text.find(b"kB", at)]) * 1024


@dataclass
class Sample:
    """One reading: each budget's use (in `Limits.budgets` order), and the kernel process's own."""

    used: list  # bytes in use against each budget
    kernel_anon: int  # the kernel's resident anonymous memory (statm resident - shared)
    resident: int  # the kernel's resident memory, and its highest so far (VmHWM)
    peak_resident: int
    data: int  # the kernel's data segment and private writable mappings (statm data): what
    # RLIMIT_DATA is compared with
    worst: int  # index of the budget with the least room before its margin
    spare: int  # bytes left in that budget before the guard stops a cell (negative: past it)


class Limits:
    """The budgets that apply to this kernel, read together by `sample()`."""

    def __init__(self, budgets: list[Budget], proc_self: str):
        self.budgets = budgets
        self.margins = [margin_for(b.limit) for b in budgets]
        self._statm = _File(os.path.join(proc_self, "statm"))
        self._status = _File(os.path.join(proc_self, "status"))

    def sample(self) -> Sample:
        fields = self._statm.read().split()
        resident, shared, data = int(fields[1]) * PAGE, int(fields[2]) * PAGE, int(fields[5]) * PAGE
        anon = max(resident - shared, 0)
        used = []
        worst, spare = 0, None
        for i, budget in enumerate(self.budgets):
            if budget.kind == "setting":
                budget.kernel_anon = anon
            u = budget.used()
            used.append(u)
            left = budget.limit - u - self.margins[i]
            if spare is None or left < spare:
                worst, spare = i, left
        # what is mapped, again: the thread sampling may wait for the GIL between its reads while
        # threads of the user's allocate or free hundreds of MiB. Read before the budgets' use, it
        # is at most what the room was measured against (allocations meanwhile only lower the
        # room); read after, it has lost what was freed meanwhile (which the use no longer
        # counts). The bound (mapped + room) takes the lower of the two.
        data = min(data, self.mapped())
        peak = _kib(self._status.read(), b"VmHWM:")
        return Sample(used, anon, resident, peak, data, worst, spare if spare is not None else UNLIMITED)

    def mapped(self) -> int:
        """The kernel's data segment and private writable mappings now (statm's data)."""
        return int(self._statm.read().split()[5]) * PAGE

    def room_for_allocations(self, sample: Sample) -> int:
        """Bytes the kernel may still map before the bound refuses: the least room of any budget,
        down to half of its margin."""
        return min(b.limit - u - m // 2 for b, u, m in zip(self.budgets, sample.used, self.margins))

    def close(self) -> None:
        for budget in self.budgets:
            budget.close()
        self._statm.close()
        self._status.close()


# -- finding the budgets --

def _mounts(mountinfo: str) -> list[tuple[str, str, str, str]]:
    """(fstype, mount root, mount point, super options) of every cgroup mount."""
    found = []
    with open(mountinfo) as f:
        for line in f:
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
                point = fields[4].replace("\\040", " ")
                found.append((tail[0], fields[3], point, tail[2]))
    return found


def memory_cgroup(root: str = "/") -> tuple[int, str, str, str] | None:
    """(version, the kernel's cgroup directory, the mount point above which nothing is visible, the
    cgroup's name as /proc/self/cgroup says) of the kernel's memory cgroup, or None."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
        mounts = _mounts(os.path.join(root, "proc/self/mountinfo"))
    except OSError:
        return None
    v1 = v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    for version, path in ((1, v1), (2, v2)):
        if path is None:
            continue
        for fstype, mount_root, point, options in mounts:
            if version == 1 and (fstype != "cgroup" or "memory" not in options.split(",")):
                continue
            if version == 2 and fstype != "cgroup2":
                continue
            rel = os.path.relpath(path, mount_root) if path.startswith(mount_root) else None
            if rel is None or rel.startswith(".."):
                continue
            top = os.path.join(root, point.lstrip("/"))
            here = os.path.normpath(os.path.join(top, "" if rel == "." else rel))
            limit_file = "memory.limit_in_bytes" if version == 1 else "memory.stat"
            if os.path.exists(os.path.join(here, limit_file)) or version == 1:
                return version, here, top, path
    return None


def _read_limit(path: str, version: int) -> int | None:
    try:
        with open(os.path.join(path, "memory.limit_in_bytes" if version == 1 else "memory.max")) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    n = int(text)
    return n if n < UNLIMITED else None


def cgroup_budgets(root: str = "/") -> list[CgroupBudget]:
    """A budget for every limited memory cgroup from the kernel's own up to the top that is visible."""
    found = memory_cgroup(root)
    if found is None:
        return []
    version, here, top, name = found
    budgets = []
    while True:
        limit = _read_limit(here, version)
        if limit is not None:
            budgets.append(CgroupBudget(here, version, limit, name or "/"))
        if os.path.normpath(here) == os.path.normpath(top) or len(here) <= len(top):
            return budgets
        here, name = os.path.dirname(here), os.path.dirname(name)


def detect(setting, root: str = "/") -> Limits | None:
    """The kernel's budgets: every limited cgroup, the machine, and IPYMINI_MEMORY_LIMIT (`setting`:
    its parsed value, None when unset; 0 turns the guard off and gives None)."""
    if setting == 0:
        return None
    budgets: list[Budget] = cgroup_budgets(root)
    machine = MachineBudget(os.path.join(root, "proc/meminfo"))
    budgets.append(machine)
    if setting is not None:
        if isinstance(setting, float):  # a fraction of the detected limit
            detected = min(budgets, key=lambda b: b.limit)
            budgets.append(SettingBudget(int(detected.limit * setting), detected))
        else:
            budgets.append(SettingBudget(int(setting)))
    return Limits(budgets, os.path.join(root, "proc/self"))


def human(n: int) -> str:
    """A byte count for people: `812 MiB`, `1.02 GiB`."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{n} bytes"
