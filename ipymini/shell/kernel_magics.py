"""The magics a kernel adds to IPython's, as ipykernel has them: %clear, %less/%more, %man,
%connect_info, %autosave, %qtconsole and %subshell. Each works through the shell (its pager, its
system(), display) and the kernel facts it is given; none touches a socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

from IPython.core import page
from IPython.core.error import UsageError


def install(shell, connection_file: str, subshell_ids) -> None:
    """Register the kernel magics on `shell`. subshell_ids(): the ids of the running subshells."""

    def clear(line: str = ""):
        """Clear the terminal."""
        shell.system("clear" if os.name == "posix" else "cls")

    def less(line: str = ""):
        """Show a file through the pager. Files ending in .py are syntax-highlighted."""
        if not line:
            raise UsageError("Missing filename.")
        text = Path(line).read_text()
        page.page(shell.pycolorize(text) if line.endswith(".py") else text)

    def man(line: str = ""):
        """Find the man page for the given command and display it in the pager."""
        page.page(shell.getoutput(f"man {line} | col -b", split=False))

    def connect_info(line: str = ""):
        """Print this kernel's connection file, to connect other clients to it."""
        try:
            info = Path(connection_file).read_text()
        except OSError as e:
            warnings.warn(f"Could not get connection info: {e!r}", stacklevel=2)
            return
        name = connection_file
        try:
            from jupyter_core.paths import jupyter_runtime_dir

            if Path(jupyter_runtime_dir()) == Path(connection_file).parent:
                name = Path(connection_file).name
        except Exception:
            pass
        print(info + "\n")
        print(f"Paste the above JSON into a file, and connect with:\n"
              f"    $> jupyter <app> --existing <file>\n"
              f"or, if you are local, you can connect with just:\n"
              f"    $> jupyter <app> --existing {name}\n"
              f"or even just:\n"
              f"    $> jupyter <app> --existing\n"
              f"if this is the most recent Jupyter kernel you have started.")

    def qtconsole(line: str = ""):
        """Open a qtconsole connected to this kernel."""
        try:
            subprocess.Popen([sys.executable, "-m", "qtconsole", "--existing", connection_file,
                              *line.split()], start_new_session=True)
        except Exception as e:
            warnings.warn(f"Could not start qtconsole: {e!r}", stacklevel=2)

    def autosave(line: str = ""):
        """Set the autosave interval in the classic notebook (in seconds; 0 disables it)."""
        from IPython.display import Javascript, display

        try:
            interval = int(line)
        except ValueError:
            raise UsageError(f"%autosave requires an integer, got {line!r}") from None
        display(Javascript(f"IPython.notebook.set_autosave_interval({1000 * interval})"),
                include=["application/javascript"])
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")

    def subshell(line: str = ""):
        """List the current subshells, and which one this cell runs on."""
        from ipymini.output.routing import parent_request

        request = parent_request()
        print(f"subshell id: {request.subshell_id if request is not None else None}")
        print(f"thread id: {threading.get_ident()}")
        print(f"main thread id: {threading.main_thread().ident}")
        print(f"pid: {os.getpid()}")
        print(f"thread count: {threading.active_count()}")
        print(f"subshell list: {subshell_ids()}")

    magics = {"clear": clear, "less": less, "more": less, "man": man, "connect_info": connect_info,
              "qtconsole": qtconsole, "autosave": autosave, "subshell": subshell}
    for name, fn in magics.items():
        shell.register_magic_function(fn, "line", name)

