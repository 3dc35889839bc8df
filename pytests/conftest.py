"""Shared fixtures: one real ipymini kernel per test module (see kernel_harness.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kernel_harness import KernelHarness  # noqa: E402


@pytest.fixture(scope="module")
def kernel():
    """A kernel shared by the tests of one module; tests must not depend on each other's state."""
    k = KernelHarness()
    yield k
    k.stop()
