"""The published peers, in a throw-away environment of their own: xeus-python and AnswerDotAI's ipymini.

AnswerDotAI's package is also called `ipymini`, so the peers live in a venv outside any checkout
(default ~/.cache/ipymini-bench/peers) and are started from a neutral directory (see kernels.py).
The venv is made once per set of pinned versions and reused.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from kernels import KernelDef

PINS = ["xeus-python==0.19.0", "ipymini==0.1.25"]
DEFAULT_VENV = Path.home() / ".cache" / "ipymini-bench" / "peers"


def ensure_venv(path: Path = DEFAULT_VENV) -> Path:
    """The peers' venv at `path`, created and filled from PyPI if its pins changed; returns its python."""
    python = path / "bin" / "python"
    stamp = path / "installed.txt"
    wanted = "\n".join(PINS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing the peers into {path} ({', '.join(PINS)}) ...", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True)
    stamp.write_text(wanted)
    return python


def peer_kernels(path: Path = DEFAULT_VENV) -> dict[str, KernelDef]:
    """xeus-python and AnswerDotAI's ipymini, as their own kernelspecs launch them."""
    python = str(ensure_venv(path))
    return {k.name: k for k in (
        KernelDef("xeus-python", [python, "-m", "xpython_launcher", "-f", "{connection_file}"]),
        KernelDef("aai-ipymini", [python, "-Xfrozen_modules=off", "-m", "ipymini", "-f",
                                  "{connection_file}"], ipython=True),
    )}
