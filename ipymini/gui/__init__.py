"""GUI event loops: `%gui` and `%matplotlib tk|qt|...` toolkits sharing the main thread with the kernel.

The kernel's main loop stays asyncio. While a toolkit's loop is active, the loop's selector is wrapped
(`waiting.ToolkitSelector`): whenever asyncio would block waiting for its file descriptors, the
toolkit's own event loop runs instead, until the asyncio selector's one descriptor (epoll's) becomes
readable or asyncio's next timer is due. Requests, replies, timers and `call_soon_threadsafe` keep
their path and speed; window events, toolkit timers and redraws run whenever the kernel is idle or a
cell awaits; nothing polls.

Owns: the names `%gui` accepts and switching between loops (`loops`), the selector and the signal
wake-up that lets an interrupt reach a waiting toolkit (`waiting`), and one module per toolkit: `tk`,
`qt` (PySide6, PyQt6, PyQt5, PySide2, as IPython's loader picks), `gtk` (GTK 3 through PyGObject) and
`wx`.
Must not import: ipymini.kernel, ipymini.protocol, ipymini.output, ipymini.shell (the kernel, the
sockets, the output path, the shell package). It is given the main thread's event loop.
"""
