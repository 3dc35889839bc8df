"""ipykernel's public API, for the code in the wild that uses it.

Owns what `get_ipython().kernel` is (`IPyKernelAPI`: `session`, `iopub_socket`, `comm_manager`,
`shell`, `get_parent(channel)`, `_parent_ident`, `language_info`, ...), composed over the few parts of
the kernel it needs, kernel_info's `language_info`, and the content of `usage_request` replies.
Everything user code sends goes through the kernel's ordered IOPub queue: user code, on whatever
thread, never touches a ZMQ socket of the kernel's (sockets are not thread-safe).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from typing import Callable

from ipymini import patches
from ipymini.output import routing
from ipymini.patches import after_import
from ipymini.protocol.session import Session

IPYKERNEL_SHELL_MODULE = "ipykernel.zmqshell"


def language_info() -> dict:
    """kernel_info's language_info (and `kernel.language_info`), taken from the running interpreter."""
    return {
        "name": "python",
        "version": sys.version.split()[0],
        "mimetype": "text/x-python",
        "codemirror_mode": {"name": "ipython", "version": sys.version_info[0]},
        "pygments_lexer": f"ipython{sys.version_info[0]}",
        "nbconvert_exporter": "python",
        "file_extension": ".py",
    }


def present_as_ipykernel(shell_class) -> None:
    """Let the checks libraries make for "am I in a Jupyter kernel?" see one.

    tqdm.auto looks for `ipykernel.zmqshell` in sys.modules, plotly for a shell class whose module
    starts with `ipykernel.`; rich and many others for the class name `ZMQInteractiveShell`, which the
    shell has. So the class reports that module, and a module of that name holds it (without
    importing ipykernel, which need not be installed): `from ipykernel.zmqshell import
    ZMQInteractiveShell` then gives ipymini's shell, and isinstance checks against it hold. A module
    already loaded under that name (the real one, imported before the kernel started) is left alone.
    """
    import types

    shell_class.__module__ = IPYKERNEL_SHELL_MODULE
    if IPYKERNEL_SHELL_MODULE in sys.modules:
        return
    module = types.ModuleType(IPYKERNEL_SHELL_MODULE, "ipymini's stand-in: only ZMQInteractiveShell")
    module.ZMQInteractiveShell = shell_class

    def __getattr__(name):
        raise AttributeError(f"{IPYKERNEL_SHELL_MODULE} in ipymini has only ZMQInteractiveShell, "
                             f"not {name!r}")

    module.__getattr__ = __getattr__
    patches.patch(sys.modules, IPYKERNEL_SHELL_MODULE, module)
    # if user code imports the real ipykernel package, `ipykernel.zmqshell` is the stand-in there too
    after_import("ipykernel", lambda package: patches.patch(package, "zmqshell", module))


class IOPubSocket:
    """Stands in for ipykernel's `kernel.iopub_socket`: what is sent on it (usually by
    `kernel.session.send(kernel.iopub_socket, ...)`) joins the IOPub queue behind the output before it."""

    closed = False

    def __init__(self, output):
        self._output = output

    def send_multipart(self, frames, copy: bool = True, track: bool = False, **kwargs) -> None:
        """Queue signed frames (a topic or the delimiter first, as Session.serialize makes them)."""
        self._output.publish_frames([bytes(f) if not isinstance(f, bytes) else f for f in frames])


class IPyKernelAPI:
    """What user code sees as `get_ipython().kernel`: the attributes of ipykernel's Kernel that
    libraries use (which ones: DEVLOG, session 11), never the kernel itself.

    Given the wire (its session id and signing), the output front (iopub), the stdin broker, the comm
    manager, two callables: `shell()` (None until the shell exists) and `control_request()` (the
    request the control thread handles now, or its latest), and the application's Config (read as
    `kernel.config["IPKernelApp"]["connection_file"]`).
    """

    int_id = -1  # ipyparallel's engine number; none here

    def __init__(self, wire, output, stdin, comm_manager, shell: Callable[[], object],
                 control_request: Callable[[], object], config=None):
        self.iopub_socket = IOPubSocket(output)
        self.config = config  # the application's traitlets Config, as ipykernel's kernel has it
        self.session = Session(wire)  # jupyter_client's Session API (protocol/session.py)
        self.comm_manager = comm_manager
        self._wire, self._stdin = wire, stdin
        self._shell, self._control = shell, control_request

    @property
    def shell(self):
        """The IPython shell (`get_ipython()`)."""
        return self._shell()

    @property
    def ident(self) -> str:
        """This kernel's identity (the `engine` of execute_reply metadata)."""
        return self._wire.session_id

    @property
    def user_ns(self) -> dict:
        return self.shell.user_ns

    @property
    def execution_count(self) -> int:
        return self.shell.execution_count

    @property
    def log(self):
        return logging.getLogger("ipymini")

    def raw_input(self, prompt: str = "") -> str:
        """input() through the frontend (an `input_request` on stdin)."""
        return self._stdin.request_input(str(prompt), password=False)

    def getpass(self, prompt: str = "") -> str:
        """getpass() through the frontend."""
        return self._stdin.request_input(str(prompt), password=True)

    def set_parent(self, ident, parent: dict, channel: str = "shell") -> None:
        """ipykernel's Kernel.set_parent: output of the calling code goes to `parent` (shell only; the
        control channel's parent is always the request being handled)."""
        if channel == "shell":
            routing.set_parent(parent)

    def _request_on(self, channel: str | None):
        if channel is None:
            current = routing.current_request.get()
            channel = current.channel if current is not None else "shell"
        if channel == "control":
            return self._control()
        req = routing.parent_request()
        return req if req is not None and req.channel == "shell" else routing.latest()

    def get_parent(self, channel: str | None = None) -> dict:
        """The request the running code belongs to, as a message dict ({} before the first one).

        channel "control" gives the control channel's latest request; None picks the calling code's
        channel. ipywidgets' Output widget reads the `msg_id` of this to capture output."""
        req = self._request_on(channel)
        return req.for_user_code() if req is not None else {}

    @property
    def _parent_header(self) -> dict:
        """ipykernel 5's name for get_parent(), still read by older libraries (ipywidgets' Output widget
        falls back to it); deprecated since ipykernel 6, with ipykernel's own warning."""
        warnings.warn("Kernel._parent_header is deprecated in ipykernel 6. Use .get_parent()",
                      DeprecationWarning, stacklevel=2)
        return self.get_parent()

    @property
    def language_info(self) -> dict:
        """kernel_info's language_info (ipykernel's class attribute)."""
        return language_info()

    @property
    def _parent_ident(self) -> dict:
        """Routing identities of the current shell and control requests (private in ipykernel, used
        by JupyterLab extensions)."""
        return {channel: (req.idents if req is not None else b"")
                for channel, req in (("shell", self._request_on("shell")),
                                     ("control", self._control()))}


def usage_content(processes: dict) -> dict:
    """usage_reply content. `processes` keeps psutil's Process objects between requests: CPU percent
    is measured since the previous call on the same object."""
    content = {"hostname": socket.gethostname(), "pid": os.getpid()}
    try:
        import psutil
    except ImportError:
        content["cpu_count"] = os.cpu_count()
        return content
    me = psutil.Process()
    try:
        family = [me, *me.children(recursive=True)]
    except psutil.Error:
        family = [me]
    current = {p.pid: processes.get(p.pid, p) for p in family}
    processes.clear()
    processes.update(current)
    content["kernel_cpu"] = sum(_metric(p, "cpu_percent") for p in current.values())
    kind = "pss" if hasattr(_metric(me, "memory_full_info"), "pss") else "rss"
    content["kernel_memory"] = sum(getattr(_metric(p, "memory_full_info"), kind, 0)
                                   for p in current.values())
    host_cpu = psutil.cpu_percent()
    if host_cpu:  # the first call measures nothing and says 0.0 (ipykernel leaves it out then)
        content["host_cpu_percent"] = host_cpu
    content["cpu_count"] = psutil.cpu_count(logical=True)
    content["host_virtual_memory"] = dict(psutil.virtual_memory()._asdict())
    return content


def _metric(process, name: str):
    try:
        return getattr(process, name)()
    except Exception:  # the process ended meanwhile
        return 0
