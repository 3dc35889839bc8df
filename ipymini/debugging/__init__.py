"""Debugging: Jupyter's debug protocol over debugpy, and pdb that an interrupt can end.

Owns: the debug_request handler (`debugger`), the DAP client to debugpy and debugpy's import (`dap`),
the file name every cell is compiled under so breakpoints find it (`cellfile`), the variable explorer
(`varexplorer`) and the interruptible pdb (`interruptible_pdb`).
Must not import: ipymini.kernel, ipymini.protocol, ipymini.scheduling (the kernel, the sockets, the
scheduling state). It is given the shell and a publisher.
"""
