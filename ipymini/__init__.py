"""ipymini: a small, fast, pure-Python Jupyter kernel built on IPython."""

__version__ = "0.1.0"
PROTOCOL_VERSION = "5.5"  # subshells (JEP 91), kernel_info on control
