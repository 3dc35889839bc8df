"""The kernels the benchmark compares, and how each is launched.

Every kernel gets a kernelspec in a private directory, the same fresh IPYTHONDIR and a neutral working
directory: `python -m ipymini` run from a directory that holds another project's `ipymini/` would
import that one, so no kernel starts in a checkout. Only the kernels built from this repository (ipymini
and the lean floor, which signs with ipymini's wire.py) get the repository on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass
class KernelDef:
    """One kernel of the run."""

    name: str
    argv: list
    from_repo: bool = False  # imports from this checkout (PYTHONPATH gets the repository)
    floor: bool = False  # runs no code: only the protocol metrics apply
    ipython: bool = False  # an IPython kernel: gets the run's --ipython-arg options
    env: dict = field(default_factory=dict)


def builtin_kernels() -> dict[str, KernelDef]:
    """ipymini from this checkout, ipykernel from this environment, and the two protocol floors.

    Not run unless named in --kernels: `ipymini-noguard` (this checkout with IPYMINI_MEMORY_LIMIT=0)
    and, when IPYMINI_BENCH_BEFORE names another checkout of ipymini (`git worktree add DIR REF`),
    `ipymini-before` from there: a change measured against what it changed, in the same rounds."""
    py = sys.executable
    floor = str(HERE / "floor_kernel.py")
    ipymini = [py, "-m", "ipymini", "-f", "{connection_file}"]
    before = os.environ.get("IPYMINI_BENCH_BEFORE")
    return {k.name: k for k in (
        KernelDef("ipymini", ipymini, from_repo=True, ipython=True),
        KernelDef("ipymini-noguard", ipymini, from_repo=True, ipython=True, env={"IPYMINI_MEMORY_LIMIT": "0"}),
        *([KernelDef("ipymini-before", ipymini, ipython=True, env={"PYTHONPATH": before})] if before else []),
        KernelDef("ipykernel", [py, "-m", "ipykernel_launcher", "-f", "{connection_file}"], ipython=True),
        # jupyter_client's Session signing, as issue 6 defined the floor
        KernelDef("floor", [py, floor, "-f", "{connection_file}"], floor=True),
        # ipymini's own wire code: the real limit for a kernel behind this client
        KernelDef("floor-lean", [py, floor, "--lean", "-f", "{connection_file}"], from_repo=True,
                  floor=True),
    )}


def write_kernelspecs(root: Path, kernels: list[KernelDef], ipython_args: tuple = ()) -> KernelSpecManager:
    """A kernelspec per kernel under root/kernels, named bench-NAME."""
    for k in kernels:
        d = root / "kernels" / f"bench-{k.name}"
        d.mkdir(parents=True, exist_ok=True)
        argv = [*k.argv, *ipython_args] if k.ipython else k.argv
        (d / "kernel.json").write_text(json.dumps({
            "argv": argv, "display_name": f"bench {k.name}", "language": "python",
            "interrupt_mode": "signal"}))
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


def kernel_env(k: KernelDef, ipython_dir: str) -> dict:
    """The environment a kernel starts with: no checkout on PYTHONPATH unless it is built from one."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
             if p and Path(p).resolve() != REPO]
    if k.from_repo:
        paths.insert(0, str(REPO))
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    else:
        env.pop("PYTHONPATH", None)
    env["IPYTHONDIR"] = ipython_dir
    env.pop("MPLBACKEND", None)
    env.update(k.env)
    return env


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")
