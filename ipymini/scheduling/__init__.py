"""Scheduling: who runs which request on which thread, and how running code is stopped.

Owns: the shell workers (the parent shell and each subshell, `workers`), the asyncio loop they serve on
and asyncio inside cells (`cell_asyncio`), interrupts (`interrupts`; a subshell's thread:
`thread_interrupt`; where they may land: `ipymini/kernelcode.py`, which every layer marks its code in),
`input()` prompts waiting for their reply (`stdin`), and the process lifecycle (`lifecycle`).
Must not import: IPython (except IPython.core.error), ipymini.kernel, ipymini.protocol.sockets,
ipymini.protocol.channel_thread (the kernel, the sockets). Cells are run through the callables it is
given; an `input()` the client cannot answer raises IPython's StdinNotImplementedError, as in ipykernel.
"""
