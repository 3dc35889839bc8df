"""Namespace state: undoing a failing cell's bindings and saving the namespace to disk.

Owns: `%rollback` / `%%transaction` (`transactions`), `%checkpoint` (`checkpoints`) and the source of
functions and classes defined in cells (`cellsource`).
Must not import: ipymini.kernel, ipymini.protocol, ipymini.output (the kernel, the sockets, the output
path). It works on the shell's user namespace.
"""
