"""Scheduling: who runs which request on which thread, and how running code is stopped.

Owns: the shell workers (the parent shell and each subshell, `workers`), the asyncio loop they serve on
and asyncio inside cells (`cell_asyncio`), interrupts (`interrupts`) and where an asynchronous exception
may land (`guard`), `input()` prompts waiting for their reply (`stdin`), and the process lifecycle
(`lifecycle`).
Must not import: IPython (cells are run through the callables it is given), or the sockets.
"""
