"""Cell file names: the file name a cell's code is compiled under, shared by the shell and the debugger.

A debugger frontend (JupyterLab, VS Code) sets breakpoints in a cell by path, computing that path itself
from `debugInfo`: tmpFilePrefix + murmur2(code, hashSeed) + tmpFileSuffix. The kernel must compile the
cell under exactly that name, so that the code objects it runs carry the path the breakpoints name, and
`dumpCell` writes the cell's source there so the debugger can show it. The scheme (MurmurHash2, 32-bit,
seed 0xc70f6907, over the UTF-8 bytes of the cell) is ipykernel's, which JupyterLab implements too.

Every cell gets this name, debugger or not: a function defined before the debugger was switched on must
still match a breakpoint set in its cell afterwards.
"""

from __future__ import annotations

import os
import tempfile

HASH_SEED = 0xC70F6907
SUFFIX = ".py"
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes, seed: int = HASH_SEED) -> int:
    """MurmurHash2 (32-bit, little-endian blocks) of `data`."""
    length = len(data)
    h = (seed ^ length) & _MASK
    blocks = length & ~3
    # one int.from_bytes per 4-byte block: the hot loop stays small for large cells
    from_bytes = int.from_bytes
    for i in range(0, blocks, 4):
        k = (from_bytes(data[i:i + 4], "little") * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        h ^= from_bytes(data[blocks:], "little")
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def tmp_directory() -> str:
    """The directory cell files go to: one per kernel process."""
    return os.path.join(tempfile.gettempdir(), f"ipymini_{os.getpid()}")


def tmp_prefix() -> str:
    """debugInfo's tmpFilePrefix: cell file names are this + hash + SUFFIX."""
    return tmp_directory() + os.sep


_names: dict[str, str] = {}  # a cell's code -> its file name; cells are often run again unchanged


def cell_filename(code: str) -> str:
    """The file name a cell with this source is compiled under (and dumped to).

    IPYKERNEL_CELL_NAME, when set (VS Code's Interactive Window, nbclient's tests), names every cell,
    as in ipykernel: tracebacks then read `File <name>:LINE`."""
    fixed = os.environ.get("IPYKERNEL_CELL_NAME")
    if fixed is not None:
        return fixed
    name = _names.get(code)
    if name is None:
        name = f"{tmp_prefix()}{murmur2(code.encode('utf-8', 'surrogatepass'))}{SUFFIX}"
        if len(_names) > 1000:
            _names.clear()
        _names[code] = name
    return name


def is_cell_file(filename: str) -> bool:
    """Whether `filename` names a cell of this kernel."""
    return filename.startswith(tmp_prefix()) and filename.endswith(SUFFIX)

