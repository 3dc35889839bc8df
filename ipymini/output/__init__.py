"""Output: everything user code writes, on its way to iopub, in order and never lost.

Owns: `sys.stdout`/`sys.stderr` (`streams`), capture of fds 1 and 2 (`fdcapture`), what forked children
print and display (`childpipe`), the ordered,
coalescing, bounded iopub queue (`iopub`), and which request a piece of output belongs to (`routing`).
Must not import: IPython, or the kernel, scheduling or shell packages; it is given a queue to
publish on and knows requests only as the records `protocol.messages` defines.
"""
