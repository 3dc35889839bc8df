"""`python -m ipymini`: run the kernel, or `python -m ipymini install` its kernelspec."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _drop_working_directory()
    if argv[:1] == ["install"]:
        from ipymini.kernelspec import main as install_main

        return install_main(argv[1:])
    from ipymini import settings

    if not settings.check():  # a bad IPYMINI_* value stops the kernel before it binds a socket
        return 2
    from ipymini.shell.app import run_kernel

    return run_kernel(argv)


def _drop_working_directory() -> None:
    """`python -m ipymini` puts the working directory first on sys.path; take it out, as ipykernel's
    launcher does, so a notebook folder's `random.py` cannot shadow the standard library. IPython puts
    '' back after the standard library (InteractiveShellApp.init_path)."""
    from pathlib import Path

    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]


if __name__ == "__main__":
    sys.exit(main())
