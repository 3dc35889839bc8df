"""`python -m ipymini`: run the kernel, or `python -m ipymini install` its kernelspec."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install"]:
        from .kernelspec import main as install_main

        return install_main(argv[1:])
    from .app import run_kernel

    return run_kernel(argv)


if __name__ == "__main__":
    sys.exit(main())
