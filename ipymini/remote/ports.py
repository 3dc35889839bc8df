"""Port selection inside Enterprise Gateway's `--port-range LO..HI` ("0..0" or none: any free port)."""

from __future__ import annotations

import os
import random
import socket


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value and value.strip().isdigit():
            return int(value)
    return default


def min_range_size() -> int:
    """EG passes EG_MIN_PORT_RANGE_SIZE to the launcher; a non-empty range must be at least this big."""
    return _env_int(("MIN_PORT_RANGE_SIZE", "EG_MIN_PORT_RANGE_SIZE"), 1000)


def max_retries() -> int:
    return _env_int(("MAX_PORT_RANGE_RETRIES", "EG_MAX_PORT_RANGE_RETRIES"), 5)


def parse_port_range(text: str | None) -> tuple[int, int]:
    """`"LO..HI"` → (LO, HI); empty or missing → (0, 0) (no range). Raises ValueError when invalid."""
    if not text:
        return 0, 0
    lo_text, sep, hi_text = text.partition("..")
    if not sep:
        raise ValueError(f"port range {text!r} is not of the form LO..HI")
    lo, hi = int(lo_text), int(hi_text)
    if (lo, hi) == (0, 0):
        return 0, 0
    if not 0 < lo < hi <= 65535:
        raise ValueError(f"port range {text!r} is not inside 1..65535 with LO < HI")
    if hi - lo < min_range_size():
        raise ValueError(f"port range {text!r} is smaller than {min_range_size()} ports "
                         "(EG_MIN_PORT_RANGE_SIZE)")
    return lo, hi


def bind_socket(host: str, port_range: tuple[int, int]) -> socket.socket:
    """A TCP socket bound to `host` on a free port inside `port_range` (any free port for (0, 0))."""
    lo, hi = port_range
    attempts = 1 if (lo, hi) == (0, 0) else max_retries() + 1
    last_error: OSError | None = None
    for _ in range(attempts):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((host, 0 if (lo, hi) == (0, 0) else random.randint(lo, hi)))
            return sock
        except OSError as e:
            sock.close()
            last_error = e
    raise RuntimeError(f"no free port in {lo}..{hi} on {host} after {attempts} attempts: {last_error}")


def pick_ports(count: int, host: str, port_range: tuple[int, int]) -> list[int]:
    """`count` distinct free ports (all held bound at once, then released for the kernel to bind)."""
    socks = []
    try:
        for _ in range(count):
            socks.append(bind_socket(host, port_range))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
