"""Memory cgroups for the memory guard's tests: one made for the test, with a limit, that only the kernels
the test starts enter (through `cgexec.py`, which moves itself in and execs the kernel: the pytest process
never is in it), removed afterwards.

v1 (`memory.limit_in_bytes`, under the test's own memory cgroup, else the hierarchy's top) or v2
(`memory.max`, under the top, enabling the memory controller there). Needs root; where no cgroup can be
made, `make` returns None and says why.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.kernelspec import KernelSpecManager

from harness.kernel import KernelHarness

HERE = Path(__file__).resolve().parent
CGEXEC = str(HERE.parent / "cgexec.py")
REQUIRE = "IPYMINI_REQUIRE_CGROUP"  # set (CI): no cgroup is a failure, not a warning


class Cgroup:
    """A memory cgroup this test made (`path`), limited to `limit` bytes."""

    def __init__(self, path: str, version: int, limit: int):
        self.path, self.version, self.limit = path, version, limit
        self._specs = tempfile.mkdtemp(prefix="ipymini-cgroup-specs-")

    def kernel(self, kernel: str = "ipymini", env: dict | None = None, **kwargs) -> KernelHarness:
        """A kernel started inside this cgroup: `ipymini` or `ipykernel` (7.4, from the test env)."""
        module = {"ipymini": "ipymini", "ipykernel": "ipykernel_launcher"}[kernel]
        name = f"{kernel}-in-cgroup"
        folder = Path(self._specs) / name
        folder.mkdir(exist_ok=True)
        argv = [sys.executable, CGEXEC, self.path, "--", sys.executable, "-m", module, "-f",
                "{connection_file}"]
        (folder / "kernel.json").write_text(json.dumps(
            {"argv": argv, "display_name": name, "language": "python", "interrupt_mode": "signal"}))
        specs = KernelSpecManager(kernel_dirs=[self._specs])
        return KernelHarness(kernel_name=name, kernel_spec_manager=specs, env=env, **kwargs)

    def read(self, name: str) -> str:
        return (Path(self.path) / name).read_text()

    def usage(self) -> int:
        return int(self.read("memory.usage_in_bytes" if self.version == 1 else "memory.current"))

    def oom_kills(self) -> int:
        text = self.read("memory.oom_control" if self.version == 1 else "memory.events")
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return -1

    def remove(self) -> None:
        """Kill what is left in it (only this test's kernels ever enter it) and remove it."""
        procs = Path(self.path) / "cgroup.procs"
        for _ in range(100):
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except OSError:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)
        print(f"memory_cgroup: could not remove {self.path}", file=sys.stderr)


def _own_memory_cgroup():
    sys.path.insert(0, str(HERE.parents[1]))
    from ipymini.memory.limits import memory_cgroup

    return memory_cgroup()


def make(limit: int, tag: str) -> tuple[Cgroup | None, str]:
    """A new memory cgroup limited to `limit` bytes, or (None, why not)."""
    found = _own_memory_cgroup()
    if found is None:
        return None, "this system has no memory cgroup mounted"
    version, own, top, _ = found
    name = f"ipymini-test-{tag}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    parents = [own, top] if version == 1 else [top]
    errors = []
    for parent in dict.fromkeys(parents):
        path = os.path.join(parent, name)
        try:
            if version == 2:
                control = Path(parent) / "cgroup.subtree_control"
                if "memory" not in control.read_text().split():
                    control.write_text("+memory")
            os.mkdir(path)
        except OSError as e:
            errors.append(f"{parent}: {e}")
            continue
        try:
            Path(path, "memory.limit_in_bytes" if version == 1 else "memory.max").write_text(str(limit))
            if version == 2 and Path(path, "memory.swap.max").exists():
                Path(path, "memory.swap.max").write_text("0")
            return Cgroup(path, version, limit), ""
        except OSError as e:
            errors.append(f"{path}: {e}")
            os.rmdir(path)
    return None, f"no memory cgroup could be made ({'; '.join(errors)})"


def say_not_tested(why: str) -> str:
    """The message of a cgroup test that could not run: a failure where cgroups are required (CI)."""
    return (f"NOT TESTED IN A CGROUP: {why}. The memory guard was checked only through "
            f"IPYMINI_MEMORY_LIMIT (set {REQUIRE}=1 to make this a failure).")
