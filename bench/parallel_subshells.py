"""Two subshells computing at once, against one: do they run in parallel?

    python bench/parallel_subshells.py [--n LOOPS] [--rounds R]

Starts ipymini with the running interpreter, creates two subshells and runs the same pure-Python loop
in one of them alone, then in both at once. Each cell reports its own thread CPU time. Printed per
round: the wall times, throughput (2 x one / both) and parallelism (the two cells' CPU seconds per
wall second while both ran, over one cell's alone: about 1 with a GIL, up to 2 on a free-threaded build
with two cores to spare).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pytests"))

from kernel_harness import KernelHarness, stream_text  # noqa: E402
from test_subshells import create, execute, wait_all  # noqa: E402

WORK = ("import time\ndef work(n):\n    t = 0\n    for i in range(n):\n        t += i * i % 7\n    return t\n"
        "def timed(n):\n    c, w = time.thread_time(), time.monotonic()\n    work(n)\n"
        "    print(json.dumps([time.thread_time() - c, w, time.monotonic()]))\nimport json\n")


def run_cells(kernel, n: int, shells: list) -> list:
    """Run `timed(n)` on each subshell at once; [(cpu, start, end)] per cell (kernel clock)."""
    ids = [execute(kernel, f"timed({n})", s) for s in shells]
    _, iopub = wait_all(kernel, ids, timeout=600)
    return [json.loads(stream_text(iopub[i])) for i in ids]


def measure(kernel, n: int) -> dict:
    """One round: the loop on one subshell, then on two at once."""
    a, b = kernel.subshells
    [(cpu1, s1, e1)] = run_cells(kernel, n, [a])
    both = run_cells(kernel, n, [a, b])
    start, end = min(s for _, s, _ in both), max(e for _, _, e in both)
    overlap = min(e for _, _, e in both) - max(s for _, s, _ in both)
    # CPU seconds per wall second, relative to one cell alone (on a busy machine a cell gets less than
    # a whole core; what matters is whether two cells get twice what one gets)
    share_one = cpu1 / (e1 - s1)
    share_both = sum(c for c, _, _ in both) / (end - start)
    return {"one": e1 - s1, "both": end - start, "throughput": 2 * (e1 - s1) / (end - start),
            "parallelism": share_both / share_one, "overlap": overlap / (end - start)}


def start_kernel() -> KernelHarness:
    kernel = KernelHarness()
    kernel.run_ok(WORK)
    kernel.subshells = [create(kernel), create(kernel)]
    return kernel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(f"Python {sys.version.split()[0]}, {'GIL' if gil else 'free-threaded, no GIL'}")
    kernel = start_kernel()
    try:
        for _ in range(args.rounds):
            r = measure(kernel, args.n)
            print(f"one {r['one']:.2f} s, both {r['both']:.2f} s: throughput {r['throughput']:.2f}x, "
                  f"parallelism {r['parallelism']:.2f}")
            time.sleep(0.2)
    finally:
        kernel.stop()


if __name__ == "__main__":
    main()
