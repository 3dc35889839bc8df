"""Smoke test of the benchmark: `bench/run.py --quick` runs end to end against its default kernels and
writes a JSON file with a number for every metric that applies to each kernel (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("ipymini_bench_run", REPO / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_quick_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=170, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["kernels"] == ["ipymini", "ipykernel", "floor", "floor-lean"]
    assert set(data["results"]) == set(data["kernels"])
    for kernel in data["kernels"]:
        for metric in bench.METRICS:
            value = data["results"][kernel][metric.name]
            if kernel.startswith("floor") and not metric.floor:
                assert value is None, (kernel, metric.name, value)
            else:
                assert isinstance(value, (int, float)) and value > 0, (kernel, metric.name, value)
    checks = {"stream_lines_lossless": True, "big_write_lossless": True, "late_reader_lossless": True}
    assert data["lossless"]["ipymini"] == checks
    assert data["lossless"]["ipykernel"] == checks
    assert data["lossless"]["floor"] is None and data["lossless"]["floor-lean"] is None
    assert data["extras"]["ipymini"]["late_reader_lossless"] == [True]
    assert data["errors"] == {}
    # the printed table has a row per metric, "-" where the floor does not apply
    assert proc.stdout.count("\n| ") == len(bench.METRICS) + 1
    assert "| - |" in proc.stdout


def test_options_select_kernels_and_metrics(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out),
                           "--kernels", "floor", "--only", "execute_rtt,pipelined"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert list(data["results"]) == ["floor"]
    assert set(data["results"]["floor"]) == {"execute_rtt", "pipelined"}
    assert all(isinstance(v, float) and v > 0 for v in data["results"]["floor"].values())


def test_unknown_metric_is_refused():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--only", "nonsense"],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 2
    assert "unknown metric" in proc.stderr


_cspec = importlib.util.spec_from_file_location("ipymini_bench_compare", REPO / "bench" / "compare.py")
compare = importlib.util.module_from_spec(_cspec)
_cspec.loader.exec_module(compare)


def test_compare_tells_a_real_difference_from_noise():
    """bench/compare.py: samples drawn from the same values are not told apart; two kernels whose every
    round differs are, with the sign of the first kernel's lead."""
    noisy = [3600, 4800, 3650, 4850, 4700, 3550, 4790, 4810, 3620]
    assert abs(compare.rank_sum_z(noisy, list(reversed(noisy)))) < 0.01
    assert compare.rank_sum_z([10.0] * 5 + [11.0] * 4, [9.0] * 9) > 3
    lines = compare.compare({"samples": {"a": {"pipelined": noisy, "startup": [0.1, 0.1]},
                                          "b": {"pipelined": [x * 1.1 for x in noisy]}}}, "a", "b")
    assert len(lines) == 3  # the header, its rule, and pipelined (b has no startup samples)
    row = lines[2].split(" | ")
    assert row[0] == "| pipelined (9, 9 samples)" and row[1] == "4,700" and row[3] == "0.909"
    assert row[-1] == "no |"
