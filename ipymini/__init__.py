"""ipymini: a small, fast, pure-Python Jupyter kernel built on IPython."""

__version__ = "0.1.0"
from ipymini.protocol import PROTOCOL_VERSION  # noqa: E402, F401 (kept here for those who read it here)
