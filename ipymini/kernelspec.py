"""Kernelspec installation: `python -m ipymini install [--user | --sys-prefix | --prefix DIR]`."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ipymini.protocol import PROTOCOL_VERSION

KERNEL_NAME = "ipymini"


def kernel_json() -> dict:
    """The kernelspec, as shipped in share/jupyter/kernels/ipymini/kernel.json."""
    return {
        "argv": ["python", "-m", "ipymini", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipymini)",
        "language": "python",
        "interrupt_mode": "signal",
        "metadata": {"debugger": True, "supported_encryption": ["curve"]},
        "kernel_protocol_version": PROTOCOL_VERSION,
    }


def install(user: bool = False, prefix: str | None = None) -> str:
    """Install the kernelspec with jupyter_client; returns the directory it went to."""
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / KERNEL_NAME
        path.mkdir()
        (path / "kernel.json").write_text(json.dumps(kernel_json(), indent=2) + "\n")
        return KernelSpecManager().install_kernel_spec(str(path), KERNEL_NAME, user=user, prefix=prefix)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipymini install",
                                     description="Install the ipymini kernelspec.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help="install into sys.prefix (a venv)")
    where.add_argument("--prefix", help="install into PREFIX/share/jupyter/kernels")
    args = parser.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    dest = install(user=args.user, prefix=prefix)
    print(f"Installed kernelspec {KERNEL_NAME} in {dest}")
    return 0


