"""The old name of harness/kernel.py, kept for bench/ (bench/memory.py, bench/parallel_subshells.py)."""

from harness.kernel import KERNEL_NAME, REPO, TIMEOUT, KernelHarness, use_repo_kernelspec, value  # noqa: F401
from harness.messages import of_type, stream_text  # noqa: F401
