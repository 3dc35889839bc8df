"""ipymini: a small, fast, pure-Python Jupyter kernel built on IPython."""

__version__ = "0.1.0"
PROTOCOL_VERSION = "5.4"
