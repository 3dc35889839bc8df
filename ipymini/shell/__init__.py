"""The IPython side: IPython's extension points filled in for a kernel, and what libraries detect.

Owns: the shell, display hook and display publisher subclasses (`zmqshell`), the IPython application
and its configuration (`app`), completion under a time budget (`completion`), ipykernel's kernel magics
(`kernel_magics`), ipykernel's public API for user code (`ipykernel_api`) and the cost of
tracebacks (`tracebacks`).
Must not import: ipymini.kernel, ipymini.bridge, ipymini.scheduling, ipymini.protocol.sockets,
ipymini.protocol.channel_thread (the hubs, the scheduling state, the sockets). It publishes through
the publisher it is given. The bridge (`ipymini/bridge.py`) is this package's hub.
"""
