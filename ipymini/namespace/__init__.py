"""Namespace state: undoing a failing cell's bindings and saving the namespace to disk.

Owns: `%rollback` / `%%transaction` (`transactions`), `%checkpoint` (`checkpoints`) and the source of
functions and classes defined in cells (`cellsource`).
Must not import: the kernel, the sockets or the output path; it works on the shell's user namespace.
"""
