"""`python -m ipymini`: run the kernel, or `python -m ipymini install` its kernelspec.

The kernel runner lives here, above everything it starts (the shell package's IPython application,
then the kernel), so no package imports the kernel to run it.
"""

from __future__ import annotations

import json
import logging
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
    return run_kernel(argv)


def setup_logging() -> None:
    """Kernel logs go to the process's real stderr (the server's log), never into a cell's output."""
    from ipymini import settings

    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter("[ipymini %(levelname)s %(asctime)s] %(message)s"))
    log = logging.getLogger("ipymini")
    log.addHandler(handler)
    log.setLevel(settings.value("IPYMINI_LOG_LEVEL"))
    log.propagate = False


def dump_stacks_on_signal() -> None:
    """IPYMINI_STACKS_SIGNAL=SIGUSR2: on that signal every thread's stack goes to the kernel's log.
    Registered before fd capture takes fd 2, on a copy of the real stderr, so a dump never lands in a
    cell's output."""
    from ipymini import settings

    name = settings.value("IPYMINI_STACKS_SIGNAL")
    if name is None:
        return
    import faulthandler
    import os
    import signal

    log_file = os.fdopen(os.dup(2), "w")
    faulthandler.register(getattr(signal, name.upper()), file=log_file, all_threads=True)
    _kept.append(log_file)  # faulthandler writes to its fd; the file must stay open


_kept: list = []


def run_kernel(argv: list[str]) -> int:
    """Parse the command line and IPython configuration, then serve until shutdown."""
    from ipymini.shell.app import IPKernelApp

    setup_logging()
    dump_stacks_on_signal()
    app = IPKernelApp()
    app.initialize(argv)
    if not app.connection_file:
        print("usage: python -m ipymini -f CONNECTION_FILE [--Class.trait=value ...]\n"
              "       python -m ipymini install [--user | --sys-prefix | --prefix DIR]", file=sys.stderr)
        return 2
    with open(app.connection_file) as f:
        conn = json.load(f)
    from ipymini.kernel import Kernel
    from ipymini.protocol.handshake import HandshakeError

    try:
        kernel = Kernel(conn, app)
    except HandshakeError as e:
        logging.getLogger("ipymini").error("kernel handshake failed, stopping: %s", e)
        return 1
    try:
        return kernel.run()
    except BaseException:
        from ipymini import patches

        patches.assign(sys, "stdout", sys.__stdout__)
        patches.assign(sys, "stderr", sys.__stderr__)
        logging.getLogger("ipymini").exception("the kernel stopped on an error")
        return 1


def _drop_working_directory() -> None:
    """`python -m ipymini` puts the working directory first on sys.path; take it out, as ipykernel's
    launcher does, so a notebook folder's `random.py` cannot shadow the standard library. IPython puts
    '' back after the standard library (InteractiveShellApp.init_path)."""
    from pathlib import Path

    if sys.path and (sys.path[0] == "" or Path(sys.path[0]) == Path.cwd()):
        del sys.path[0]


if __name__ == "__main__":
    sys.exit(main())
