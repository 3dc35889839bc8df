"""The memory guard: a cell that runs out of memory ends in MemoryError, and the kernel lives on.

Owns: knowing the limit (`limits`: cgroups, the machine, IPYMINI_MEMORY_LIMIT), bounding allocations
(`bound`: RLIMIT_DATA, lifted for children and for a large np.zeros), watching and stopping cells
(`watcher`), giving memory back after (`recovery`), and the record that tells the next kernel which cell
was running when this one died (`lastcell`).
Must not import: IPython, ipymini.kernel, ipymini.protocol, ipymini.scheduling (the kernel, the
sockets, the scheduling package). The kernel hands it `cells_computing()` and `stop_cells(threads)`, and the
bridge calls `describe` and `after_memory_error`.
"""

from __future__ import annotations

import logging
import sysconfig
from typing import Callable

from ipymini import settings
from ipymini.memory.lastcell import LastCell, path_for
from ipymini.memory.limits import detect
from ipymini.memory.watcher import MemoryGuard

log = logging.getLogger("ipymini")

# Free-threaded CPython allocates through mimalloc, which maps and reserves its own segments: an
# RLIMIT_DATA bound at "what is mapped plus the room left" killed kernels at start-up there and its
# memory is not given back by malloc_trim (measured on 3.13t). The guard is off on such builds; the
# record of the running cell (the death notice) stays.
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

__all__ = ["MemoryGuard", "guard_for", "off"]


def guard_for(connection_file: str, cells_computing: Callable[[], bool],
              stop_cells: Callable[[list], None], stop_pending: Callable[[], bool]) -> MemoryGuard:
    """The kernel's guard, not started yet: its limits from the cgroups, the machine and the setting;
    its record beside `connection_file` (none without one). See MemoryGuard for the callables."""
    record = None
    if connection_file:
        try:
            record = LastCell(path_for(connection_file))
        except OSError as e:
            log.warning("no record of running cells (%s): a death will not be reported", e)
    setting = settings.value("IPYMINI_MEMORY_LIMIT")
    limits = None
    if FREE_THREADED:
        log.info("the memory guard is off on a free-threaded build (mimalloc's address space)")
        return MemoryGuard(None, record, cells_computing, stop_cells, stop_pending)
    try:
        limits = detect(setting)
    except (OSError, ValueError) as e:
        log.warning("the memory guard is off: its limits could not be read (%s)", e)
    return MemoryGuard(limits, record, cells_computing, stop_cells, stop_pending)


def off() -> MemoryGuard:
    """A guard that does nothing (before the kernel runs; in-process tests)."""
    return MemoryGuard(None, None, lambda: False, lambda threads: None)
