"""Is a difference between two kernels of one benchmark run real, or noise? From run.py's results file:
each metric's medians, their ratio, and a rank-sum test over the rounds' samples.

    python bench/compare.py [RESULTS.json] [KERNEL_A KERNEL_B]

Defaults: bench/results.json, ipymini against ipymini-noguard. On this kind of machine (2 shared cores)
some rows are bimodal from round to round (pipelined executes: ~3,600 or ~4,800 a second, whichever
kernel runs), so the medians of 9 rounds can differ by a few percent with no cause; |z| below 2 says
the two kernels' samples are not told apart. Use many rounds (`--rounds 40`) before calling a few
percent a cost (DEVLOG, session 14).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rank_sum_z(a: list[float], b: list[float]) -> float:
    """Mann-Whitney's U for `a` against `b` as a z score (positive: `a` tends to be larger)."""
    u = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    n, m = len(a), len(b)
    spread = (n * m * (n + m + 1) / 12) ** 0.5
    return (u - n * m / 2) / spread if spread else 0.0


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def compare(results: dict, first: str, second: str) -> list[str]:
    """One line per metric both kernels have samples of."""
    samples = results["samples"]
    lines = [f"| metric | {first} | {second} | ratio | z | told apart |", "|---|---|---|---|---|---|"]
    for metric, a in samples.get(first, {}).items():
        b = samples.get(second, {}).get(metric)
        if not isinstance(a, list) or not isinstance(b, list) or len(a) < 2 or len(b) < 2:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        z = rank_sum_z(a, b)
        lines.append(f"| {metric} ({len(a)}, {len(b)} samples) | {_number(ma)} | {_number(mb)} | "
                     f"{ma / mb if mb else float('nan'):.3f} | {z:+.2f} | {'yes' if abs(z) >= 2 else 'no'} |")
    return lines


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv and argv[0].endswith(".json") else HERE / "results.json"
    names = [a for a in argv if not a.endswith(".json")] or ["ipymini", "ipymini-noguard"]
    if len(names) != 2:
        print(__doc__)
        return 2
    print("\n".join(compare(json.loads(path.read_text()), *names)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
