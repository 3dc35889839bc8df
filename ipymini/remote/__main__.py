"""`python -m ipymini.remote`: the Enterprise Gateway kernel launcher (see launcher.py)."""

import sys

from .launcher import main

if __name__ == "__main__":
    sys.exit(main())
