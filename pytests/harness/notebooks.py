"""Running the end-to-end notebooks (pytests/notebooks/) with nbclient and comparing their outputs.

A notebook's own metadata says how it is run (`metadata.ipymini_test`: allow_errors, timeout,
interrupt_on_timeout); its stored outputs are the expected ones. `normalize` makes two runs
comparable: execution counts dropped, memory addresses, timings and traceback frames from library
files (anything but the cells' own code) normalized, ANSI colors stripped, consecutive stream
outputs of the same name merged.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from harness.kernel import KERNEL_NAME  # (and JUPYTER_PATH set to the repository's kernelspec)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
DURATION = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)? ?(?:ns|µs|μs|us|ms|s)\b")
CELL_NUMBER = re.compile(r"(Cell In|In|Out)\[\d+\]")
# how a cell's code is named (IPython's <ipython-input-N-hash> or ipykernel's debugger-friendly NNN.py)
# shows in SyntaxError messages and decides whether blank context lines appear in a traceback
CELL_FILE = re.compile(r"\((?:<ipython-input-\d+-[0-9a-f]+>|\d+\.py), line")
BLANK_CONTEXT_LINE = re.compile(r"^ +\d+ *\n", re.M)


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def run_options(nb) -> dict:
    return dict(nb.metadata.get("ipymini_test", {}))


def execute(nb, kernel_name: str = KERNEL_NAME, extra_arguments: list[str] | None = None,
            transport: str = "tcp", **overrides) -> nbformat.NotebookNode:
    """Run a copy of `nb` with nbclient as nbconvert would; returns the executed copy.

    transport="ipc": the kernel listens on Unix sockets in a fresh directory. Kernels started by
    several processes at once need it: jupyter_client picks free TCP ports in each process, and one
    process's kernel can take a port another has picked before that one's kernel binds it."""
    nb = copy.deepcopy(nb)
    opts = {"timeout": 60, "allow_errors": False, "interrupt_on_timeout": False,
            **run_options(nb), **overrides}
    km = sockets_dir = None
    if transport == "ipc":
        sockets_dir = tempfile.mkdtemp(prefix="ipymini-nb-")
        km = KernelManager(kernel_name=kernel_name, transport="ipc",
                           ip=os.path.join(sockets_dir, "kernel"))
    client = NotebookClient(nb, km=km, kernel_name=kernel_name, timeout=opts["timeout"],
                            allow_errors=opts["allow_errors"],
                            interrupt_on_timeout=opts["interrupt_on_timeout"],
                            startup_timeout=60, iopub_timeout=10,
                            extra_arguments=list(extra_arguments or []))
    try:
        client.execute()
    finally:
        if km is not None:  # nbclient shuts down only the kernels of managers it made itself
            if km.has_kernel:
                km.shutdown_kernel()
            shutil.rmtree(sockets_dir, ignore_errors=True)
    return nb


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _clean(text: str) -> str:
    text = ANSI.sub("", text)
    text = ADDRESS.sub("0xADDR", text)
    text = DURATION.sub("<duration>", text)
    text = CELL_FILE.sub("(<cell>, line", text)
    text = BLANK_CONTEXT_LINE.sub("", text)
    return CELL_NUMBER.sub(r"\1[N]", text)


def _normalize_output(out: dict) -> dict:
    kind = out["output_type"]
    if kind == "stream":
        return {"output_type": kind, "name": out["name"], "text": _clean(_text(out["text"]))}
    if kind == "error":
        # frames from library files (the kernel's own input(), IPython) change with their code
        frames = [_clean(f) for f in out["traceback"] if not ANSI.sub("", f).startswith("File ")]
        return {"output_type": kind, "ename": out["ename"], "evalue": _clean(out["evalue"]),
                "traceback": frames}
    data = {mime: (_clean(_text(v)) if isinstance(v, (str, list)) else v)
            for mime, v in out.get("data", {}).items()}
    view = data.get("application/vnd.jupyter.widget-view+json")
    if isinstance(view, dict) and "model_id" in view:  # a fresh random id on every run
        data["application/vnd.jupyter.widget-view+json"] = {**view, "model_id": "<model>"}
    return {"output_type": kind, "data": data, "metadata": dict(out.get("metadata", {}))}


def normalize(nb) -> list[list[dict]]:
    """Each code cell's outputs, normalized (see the module docstring)."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs: list[dict] = []
        for out in map(_normalize_output, cell.get("outputs", [])):
            prev = outs[-1] if outs else None
            if prev and out["output_type"] == "stream" == prev["output_type"] and prev["name"] == out["name"]:
                prev["text"] += out["text"]
            else:
                outs.append(out)
        cells.append(outs)
    return cells


def assert_same_outputs(expected_nb, actual_nb) -> None:
    """Every code cell produced the expected outputs (normalized), with a readable failure."""
    expected, actual = normalize(expected_nb), normalize(actual_nb)
    assert len(expected) == len(actual)
    sources = [c.source for c in expected_nb.cells if c.cell_type == "code"]
    for src, want, got in zip(sources, expected, actual):
        assert got == want, f"outputs differ for cell:\n{src}"


def run_and_normalize(name: str, extra_arguments: list[str] | None = None,
                      transport: str = "tcp") -> list[list[dict]]:
    """Run one notebook of the folder and return its normalized outputs (a process pool's job)."""
    return normalize(execute(load(name), extra_arguments=extra_arguments, transport=transport))
