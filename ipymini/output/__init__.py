"""Output: everything user code writes, on its way to iopub, in order and never lost.

Owns: the one front the kernel and the IO thread use (`front.OutputFront`: before a message, before a
reply, the timer, at exit, after a fork), `sys.stdout`/`sys.stderr` (`streams`), capture of fds 1
and 2 (`fdcapture`), what forked children print and display (`childpipe`), the ordered, coalescing,
bounded iopub queue (`iopub`), and which request a piece of output belongs to (`routing`).
Must not import: IPython, ipymini.kernel, ipymini.scheduling, ipymini.shell. It is given a queue to
publish on and knows requests only as the records `protocol.messages` defines.
"""
