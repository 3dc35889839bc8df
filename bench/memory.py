"""Memory over a long session: RSS growth of ipymini and ipykernel over the same cells (issue 16).

Every cell calls display() and returns a 100-item list; requests are pipelined in batches and every
reply and iopub message is read. Growth is RSS at the end minus RSS after a warm-up of 500 cells.
`python bench/memory.py [--cells 20000] [--kernels ipymini,python3]`
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pytests"))
from kernel_harness import use_repo_kernelspec  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernels import rss_mib as rss_mb  # noqa: E402  (the benchmark's one reader of /proc)

CELL = "display('x'); list(range(100))"


def run_cells(kc, count: int) -> None:
    ids = {kc.execute(CELL) for _ in range(count)}
    while ids:
        ids.discard(kc.get_shell_msg(timeout=120)["parent_header"].get("msg_id"))
        while True:
            try:
                kc.get_iopub_msg(timeout=0)
            except queue.Empty:
                break


def measure(kernel_name: str, cells: int, batch: int = 200) -> dict:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        pid = km.provisioner.process.pid
        run_cells(kc, 500)
        time.sleep(1)
        start, t0 = rss_mb(pid), time.monotonic()
        for done in range(0, cells, batch):
            run_cells(kc, min(batch, cells - done))
        time.sleep(1)
        end = rss_mb(pid)
        return {"kernel": kernel_name, "cells": cells, "seconds": time.monotonic() - t0,
                "rss_start": start, "rss_end": end, "growth": end - start}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--kernels", default="ipymini,python3", help="kernelspec names (python3: ipykernel)")
    args = parser.parse_args()
    use_repo_kernelspec()
    for name in args.kernels.split(","):
        r = measure(name, args.cells)
        print(f"{r['kernel']:>8}: {r['cells']:,} cells in {r['seconds']:.0f} s, RSS {r['rss_start']:.1f} -> "
              f"{r['rss_end']:.1f} MiB, growth {r['growth']:.1f} MiB "
              f"({r['growth'] * 1024 / r['cells']:.2f} KiB per cell)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
