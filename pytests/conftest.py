"""Shared fixtures: one real ipymini kernel per test module (see harness/)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness.fixtures import client_send_rearmed, kernel  # noqa: E402, F401
from harness.zmq_leaks import no_leaked_zmq_contexts  # noqa: E402, F401
