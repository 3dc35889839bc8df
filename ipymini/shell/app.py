"""The kernel's IPython application: the command line and configuration `python -m ipymini` reads.

IPython's own application classes do the configuration work, exactly as for ipykernel: the profile's
`ipython_kernel_config.py`, `--Class.trait=value` options (nbclient passes
`--HistoryManager.hist_file=:memory:`), startup files, `exec_lines` and extensions. The application is
a thin IPython subclass because that is how IPython's config system is used; the kernel itself is a
plain class (kernel.py), run by `ipymini/__main__.py`.
"""

from __future__ import annotations

from IPython.core.application import BaseIPythonApplication, base_aliases, base_flags
from IPython.core.profiledir import ProfileDir
from IPython.core.shellapp import InteractiveShellApp, shell_aliases, shell_flags
from traitlets import Unicode

from ipymini.shell.zmqshell import ZMQInteractiveShell

aliases = {**base_aliases, **shell_aliases, "f": "IPKernelApp.connection_file"}
flags = {**base_flags, **shell_flags}


class IPKernelApp(BaseIPythonApplication, InteractiveShellApp):
    """IPython's configuration for a kernel (config file name: ipython_kernel_config.py).

    Named as ipykernel's application is: `c.IPKernelApp.exec_lines`, `.extensions` and the like in a
    user's ipython_kernel_config.py apply unchanged, and libraries (tqdm.auto, transformers) decide
    they run in a Jupyter kernel by `"IPKernelApp" in get_ipython().config`.
    """

    name = "ipython-kernel"
    description = "ipymini: a Jupyter kernel for Python built on IPython"
    aliases = aliases
    flags = flags
    classes = [ZMQInteractiveShell, ProfileDir]
    connection_file = Unicode("", help="JSON connection file written by the kernel's launcher").tag(
        config=True)

    def init_crash_handler(self):
        pass  # a kernel reports errors as messages, not with IPython's crash report

    def init_shell(self):
        pass  # the bridge creates the shell once the kernel can publish
