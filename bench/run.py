"""Benchmark: ipymini against ipykernel, the published peers and two protocol floors, interleaved in one run.

    python bench/run.py [--quick] [--flood] [--rounds N] [--only m1,m2] [--kernels k1,k2] [--peers]
                        [--peers-venv DIR] [--json PATH] [--ipython-arg=--Class.trait=value ...]

Each round starts every kernel in turn (the order rotates between rounds), runs every metric on it and
shuts it down; metrics that need a kernel that has run nothing yet (the first error, the first interrupt)
get a fresh kernel each. The figure reported is the median over rounds (round trips: median within a
round, then over rounds). The client (client.py) is deliberately lean, so the kernel is what is measured.

Kernels (kernels.py): ipymini from this repository, ipykernel from this environment, the floor (runs no
code, signs with jupyter_client's Session, as issue 6 defined it) and the lean floor (the same with
ipymini's wire.py: the real limit behind this client); with --peers also xeus-python and AnswerDotAI's
ipymini from a throw-away venv (peers.py). Every kernel starts from a neutral directory with the same
fresh IPYTHONDIR. The floors run no code, so only startup, memory, round trip and pipelined apply.

Results are printed as a markdown table and written to bench/results.json (see --json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import zmq  # noqa: E402
from client import Client  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from kernels import REPO, KernelDef, builtin_kernels, kernel_env, rss_mib, write_kernelspecs  # noqa: E402
from metrics import FRESH, MEASURES, METRIC_NAMES, METRICS, SETUP  # noqa: E402

DEFAULT_KERNELS = ("ipymini", "ipykernel", "floor", "floor-lean")
FLOORS = ("floor", "floor-lean")

FULL = dict(rounds=5, rtt_n=500, rtt_warmup=30, pipelined_n=1000, lines_n=100_000, big_bytes=50_000_000,
            displays=2000, completions=20, interrupts=3)
# --flood: the output pipeline's own sizes (issue 4): 100 MB as 1,000,000 lines, one 50 MB write,
# 10,000 displays, and the 100 MB flood again for a client that reads iopub only after the reply
FLOOD = dict(FULL, rounds=3, lines_n=1_000_000, displays=10_000)
FLOOD_METRICS = ["stream_lines", "big_write", "display", "late_reader"]
QUICK = dict(rounds=1, rtt_n=20, rtt_warmup=3, pipelined_n=50, lines_n=1000, big_bytes=1_000_000,
             displays=50, completions=2, interrupts=1)


def applies(m, k: KernelDef) -> bool:
    return m.floor or not k.floor


class Run:
    """Where the kernels of one run are launched from: kernelspecs, environments, a neutral cwd."""

    def __init__(self, root: Path, kernels: list[KernelDef], ipython_args: tuple):
        self.ksm: KernelSpecManager = write_kernelspecs(root, kernels, ipython_args)
        if any(k.from_repo for k in kernels):
            compile_repo()
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.ipython_dir = str(root / "ipython")

    def start(self, k: KernelDef) -> tuple[KernelManager, Client, float]:
        """Launch a kernel and wait for its first kernel_info reply; returns (manager, client, seconds)."""
        km = KernelManager(kernel_name=f"bench-{k.name}", kernel_spec_manager=self.ksm)
        t0 = time.perf_counter()
        km.start_kernel(env=kernel_env(k, self.ipython_dir), cwd=str(self.cwd))
        c = Client(km)
        try:
            c.start()
        except BaseException:
            stop(km, c)
            raise
        return km, c, c.startup_done - t0


def compile_repo() -> None:
    """Byte-compile this checkout's package, as pip does for an installed one (the peers, ipykernel).
    Without it, an environment with PYTHONDONTWRITEBYTECODE=1 has every start of the repository's
    kernels compile ipymini's source again: ~50 ms of CPU that no installed kernel pays."""
    import compileall

    compileall.compile_dir(str(REPO / "ipymini"), quiet=1)


def stop(km: KernelManager, c: Client) -> None:
    c.close()
    try:
        km.shutdown_kernel(now=False)
    except Exception:
        km.shutdown_kernel(now=True)


def measure(rec: dict, name: str, fn, c: Client, cfg: dict) -> None:
    try:
        rec[name] = fn(c, cfg, rec)
    except Exception as e:
        rec.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        c.drain()


def session(run: Run, k: KernelDef, cfg: dict, metrics: list) -> dict:
    """Start one kernel, measure everything that applies to it, shut it down. Returns {metric: value};
    each FRESH metric gets a kernel of its own."""
    rec: dict = {}
    wanted = {m.name for m in METRICS if m.name in metrics and applies(m, k)}
    km, c, rec["startup"] = run.start(k)
    try:
        rec["memory"] = rss_mib(km.provisioner.pid)
        if not k.floor and wanted & set(MEASURES):
            c.run(SETUP)
        for name, fn in MEASURES.items():
            if name in wanted:
                measure(rec, name, fn, c, cfg)
    finally:
        stop(km, c)
    for name, fn in FRESH.items():
        if name in wanted:
            km, c, _ = run.start(k)
            try:
                measure(rec, name, fn, c, cfg)
            finally:
                stop(km, c)
    return rec


# ---------------------------------------------------------------------------------------------- report

def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("s",):
        return f"{v:.2f}"
    if unit in ("ms",):
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    if unit in ("MiB",):
        return f"{v:.0f}"
    if unit == "MB/s":
        return f"{v:.1f}"
    return f"{v:,.0f}"


def ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def target_text(m, res: dict) -> str:
    """Each target of the metric for ipymini, with ✓ or ✗ where the run has what it compares with."""
    out = []
    mine = res.get("ipymini", {}).get(m.name)
    for ref, op, value in m.targets:
        if ref is None:
            got, label = mine, f"{value:g} {m.unit}"
        else:
            kernel, _, metric = ref.partition(".")
            got = ratio(mine, res.get(kernel, {}).get(metric or m.name))
            label = f"{value:g}× {ref}"
        if got is None:
            continue
        ok = got <= value if op == "<=" else got >= value
        out.append(f"{op} {label} {'✓' if ok else '✗'}")
    return "; ".join(out) or "-"


def leads(m, res: dict, kernels: list) -> str:
    """✓ when ipymini's figure beats every other real kernel's in the run (floors excluded)."""
    mine = res.get("ipymini", {}).get(m.name)
    others = [res[k].get(m.name) for k in kernels if k != "ipymini" and k not in FLOORS]
    others = [v for v in others if v is not None]
    if mine is None or not others:
        return "-"
    best = max(others) if m.higher_better else min(others)
    return "✓" if (mine >= best if m.higher_better else mine <= best) else "✗"


def table(res: dict, kernels: list, metrics: list) -> str:
    refs = [k for k in ("ipykernel", *FLOORS) if k in kernels] if "ipymini" in kernels else []
    head = ["metric", "unit", *kernels] + [f"ipymini / {r}" for r in refs]
    if "ipymini" in kernels:
        head += ["leads", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in METRICS:
        if m.name not in metrics:
            continue
        row = [m.label, m.unit] + [fmt(res.get(k, {}).get(m.name), m.unit) for k in kernels]
        if "ipymini" in kernels:
            mine = res.get("ipymini", {}).get(m.name)
            for ref in refs:
                r = ratio(mine, res.get(ref, {}).get(m.name))
                row.append("-" if r is None else f"{r:.2f}×")
            row += [leads(m, res, kernels), target_text(m, res)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine() -> dict:
    import IPython
    import jupyter_client

    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "ipython": IPython.__version__, "jupyter_client": jupyter_client.__version__,
            "pyzmq": zmq.__version__}
    try:
        import ipykernel
        info["ipykernel"] = ipykernel.__version__
    except ImportError:
        pass
    sys.path.insert(0, str(REPO))
    try:
        import ipymini
        info["ipymini"] = ipymini.__version__
    except ImportError:
        pass
    finally:
        sys.path.pop(0)
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny workloads and one round (for tests)")
    p.add_argument("--flood", action="store_true",
                   help="the output pipeline at issue 4's sizes: 100 MB of lines, 10,000 displays, "
                        "a late reader (default metrics: " + ",".join(FLOOD_METRICS) + ")")
    p.add_argument("--rounds", type=int, help="rounds (default 5, or 1 with --quick)")
    p.add_argument("--only", help=f"comma-separated metrics: {','.join(METRIC_NAMES)}")
    p.add_argument("--kernels", help="comma-separated kernels (default: " + ",".join(DEFAULT_KERNELS)
                   + ", and xeus-python,aai-ipymini with --peers)")
    p.add_argument("--peers", action="store_true",
                   help="also xeus-python and AnswerDotAI's ipymini, installed into --peers-venv")
    p.add_argument("--peers-venv", help="the peers' venv (default ~/.cache/ipymini-bench/peers)")
    p.add_argument("--json", default=str(HERE / "results.json"), help="where to write the results")
    p.add_argument("--ipython-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the IPython kernels, e.g. "
                        "--ipython-arg=--HistoryManager.hist_file=:memory: (repeatable)")
    args = p.parse_args(argv)

    cfg = dict(QUICK if args.quick else FLOOD if args.flood else FULL)
    if args.rounds:
        cfg["rounds"] = args.rounds
    default = FLOOD_METRICS if args.flood else METRIC_NAMES
    metrics = default if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    available = builtin_kernels()
    if args.peers or (args.kernels and any(k in args.kernels for k in ("xeus-python", "aai-ipymini"))):
        from peers import DEFAULT_VENV, peer_kernels

        available.update(peer_kernels(Path(args.peers_venv) if args.peers_venv else DEFAULT_VENV))
    names = ([s.strip() for s in args.kernels.split(",") if s.strip()] if args.kernels else
             [*DEFAULT_KERNELS, *(("xeus-python", "aai-ipymini") if args.peers else ())])
    bad = [m for m in metrics if m not in METRIC_NAMES] + [k for k in names if k not in available]
    if bad:
        p.error(f"unknown metric or kernel: {', '.join(bad)}")
    kernels = [available[k] for k in names]

    tmp = tempfile.TemporaryDirectory(prefix="ipymini-bench-")
    run = Run(Path(tmp.name), kernels, tuple(args.ipython_arg))
    samples: dict = {k: {} for k in names}
    extras: dict = {k: {} for k in names}
    errors: dict = {}
    started = time.time()
    try:
        for r in range(cfg["rounds"]):
            order = kernels[r % len(kernels):] + kernels[:r % len(kernels)]
            for k in order:
                print(f"round {r + 1}/{cfg['rounds']}: {k.name} ...", file=sys.stderr, flush=True)
                try:
                    rec = session(run, k, cfg, metrics)
                except Exception as e:  # a kernel that does not start: its row stays empty this round
                    traceback.print_exc()
                    rec = {"errors": {"startup": f"{type(e).__name__}: {e}"}}
                for name, err in rec.pop("errors", {}).items():
                    errors.setdefault(k.name, {}).setdefault(name, []).append(err)
                for name, v in rec.items():
                    target = samples[k.name] if name in METRIC_NAMES else extras[k.name]
                    target.setdefault(name, []).append(v)
    finally:
        tmp.cleanup()

    results = {k: {m: (statistics.median(samples[k][m]) if samples[k].get(m) else None)
                   for m in metrics} for k in names}
    checks = ("stream_lines_lossless", "big_write_lossless", "late_reader_lossless")
    lossless = {k: ({c: all(extras[k][c]) for c in checks if c in extras[k]} or None) for k in names}
    info = machine()
    date = datetime.date.today().isoformat()
    md = table(results, names, metrics)
    print()
    print(f"Benchmark {date}, {info['cpus']} cores ({info.get('cpu', platform.machine())}), Python "
          f"{info['python']}, IPython {info['ipython']}, ipykernel {info.get('ipykernel', '-')}; "
          f"{cfg['rounds']} interleaved round(s), medians{' (--quick)' if args.quick else ''}"
          f"{'; IPython kernels run with ' + ' '.join(args.ipython_arg) if args.ipython_arg else ''}.")
    print()
    print(md)
    print()
    print("output arrived complete and in order: " + "; ".join(
        f"{k}: " + ("-" if not v else ", ".join(f"{c.removesuffix('_lossless')} {'yes' if ok else 'NO'}"
                                               for c, ok in v.items()))
        for k, v in lossless.items()))
    if errors:
        print(f"errors: {json.dumps(errors, indent=1)}")
    out = {"date": date, "machine": info, "config": cfg, "quick": args.quick,
           "ipython_args": args.ipython_arg, "kernels": names,
           "metrics": {m.name: {"label": m.label, "unit": m.unit, "higher_is_better": m.higher_better,
                                "applies_to_floor": m.floor} for m in METRICS if m.name in metrics},
           "results": results, "samples": samples, "extras": extras, "lossless": lossless,
           "errors": errors, "elapsed_s": round(time.time() - started, 1), "table": md}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"results written to {path}", file=sys.stderr)
    return 1 if errors.get("ipymini") else 0  # a peer's failure (xeus-python dies on SIGINT) is data


if __name__ == "__main__":
    sys.exit(main())
