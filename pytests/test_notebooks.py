"""nbclient / nbconvert end to end: the notebooks in pytests/notebooks/ run on the ipymini kernelspec
and produce the outputs stored in them (see harness/notebooks.py for the comparison and
notebooks/make_notebooks.py for how they were written and recorded).

nbclient passes `--HistoryManager.hist_file=:memory:` only to kernels named python/python2/python3,
so under the name "ipymini" the kernel keeps its history in the profile's sqlite file: the parallel
runs below share one IPYTHONDIR to show that this does not lock up.
Not covered yet: a widget notebook (ipywidgets), which needs comms in the kernel.
"""

import multiprocessing
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from harness import notebooks as nr

pytestmark = pytest.mark.nbclient

ALL = sorted(p.name for p in nr.NOTEBOOKS.glob("*.ipynb"))


# client_send_rearmed: widgets.ipynb's Output-widget cell would otherwise often wait its whole 60 s cell
# timeout for a reply that came (a jupyter_client bug, test_nbclient_widget_stall.py)
@pytest.mark.parametrize("name", ALL)
def test_notebook_outputs_match(name, client_send_rearmed):
    nb = nr.load(name)
    assert any(c.get("outputs") for c in nb.cells), "expected outputs were never recorded"
    nr.assert_same_outputs(nb, nr.execute(nb))


def test_interrupt_on_timeout_is_prompt_and_clean():
    nb = nr.load("interrupt.ipynb")
    t0 = time.monotonic()
    out = nr.execute(nb)
    elapsed = time.monotonic() - t0
    assert elapsed < 20, f"time.sleep(30) was not interrupted promptly ({elapsed:.1f}s)"
    err = out.cells[1].outputs[-1]
    assert err.output_type == "error" and err.ename == "KeyboardInterrupt"
    # the traceback ends in the user's cell, not in a kernel signal handler
    frames = [nr.ANSI.sub("", f) for f in err.traceback]
    assert not any("ipymini" in f for f in frames), frames
    assert out.cells[2].outputs[0].text == "kernel alive after the interrupt\n"


def test_untagged_error_stops_the_run():
    nb = nr.load("error_tags.ipynb")
    nb.cells[1].metadata.pop("tags")
    with pytest.raises(CellExecutionError, match="KeyError"):
        nr.execute(nb)


def test_errors_need_allow_errors():
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        nr.execute(nr.load("errors.ipynb"), allow_errors=False)


def test_history_in_memory_as_nbclient_runs_ipykernel():
    nb = nr.load("history.ipynb")
    probe = nbformat.v4.new_code_cell("get_ipython().history_manager.hist_file")
    nb.cells.append(probe)
    out = nr.execute(nb, extra_arguments=["--HistoryManager.hist_file=:memory:"])
    want, got = nr.normalize(nr.load("history.ipynb")), nr.normalize(out)
    assert got[:-1] == want
    assert got[-1][0]["data"]["text/plain"] == "':memory:'"


PARALLEL = ["history.ipynb", "history.ipynb", "hello.ipynb", "unicode.ipynb"]


def test_parallel_in_threads(capfd):
    results, errors = {}, []

    def run(i, name):
        try:
            results[i] = nr.run_and_normalize(name)
        except BaseException as e:  # reported below, with the notebook's name
            errors.append((name, e))

    threads = [threading.Thread(target=run, args=(i, n)) for i, n in enumerate(PARALLEL)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a notebook run hung"
    assert not errors, errors
    for i, name in enumerate(PARALLEL):
        assert results[i] == nr.normalize(nr.load(name)), name
    assert "database is locked" not in capfd.readouterr().err


def test_parallel_in_processes():
    # over ipc: three processes picking TCP ports at once could pick the same one (seen on 3.15:
    # "Address already in use" as a kernel bound its port)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=ctx) as pool:
        futures = [pool.submit(nr.run_and_normalize, n, None, "ipc") for n in PARALLEL[:3]]
        outs = [f.result(timeout=120) for f in futures]
    for name, got in zip(PARALLEL, outs):
        assert got == nr.normalize(nr.load(name)), name


@pytest.mark.parametrize("name,extra", [("hello.ipynb", []), ("update_display.ipynb", []),
                                        ("errors.ipynb", ["--allow-errors"])])
def test_nbconvert_execute_cli(tmp_path, name, extra):
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "nbconvert", "--execute", "--to", "notebook",
           "--ExecutePreprocessor.kernel_name=ipymini", "--ExecutePreprocessor.timeout=60",
           "--output-dir", str(tmp_path), *extra, str(nr.NOTEBOOKS / name)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = nbformat.read(tmp_path / name, as_version=4)
    assert out.metadata["kernelspec"]["name"] == "ipymini"
    nr.assert_same_outputs(nr.load(name), out)


def test_widget_state_is_recorded(client_send_rearmed):
    """The slider's final value and the Output widget's captured print live in the widget state."""
    nb = nr.execute(nr.load("widgets.ipynb"))
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    by_model = {}
    for model in state.values():
        by_model.setdefault(model["model_name"], []).append(model["state"])
    assert by_model["IntSliderModel"][0]["value"] == 7
    [output] = by_model["OutputModel"]
    assert output["outputs"] == [{"name": "stdout", "output_type": "stream",
                                  "text": "captured by the Output widget\n"}]
