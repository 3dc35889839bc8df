"""A batch run (nbclient) of a widget notebook whose Output widget captures displays (issue 25, item 6).

What stalled: nbclient waited its whole cell timeout (for ever with papermill's and nbconvert's
timeout=None) for an execute_reply that had arrived. The cause is in the client: nbclient's Output
widget support sends a comm_msg on the shell socket while nbclient awaits the reply on it, and
jupyter_client's Session.send sends on a blocking *shadow* of the zmq.asyncio socket. That libzmq call
processes the socket's pending commands, the "message arrived" signal of the reply among them, without
pyzmq's asyncio wrapper re-reading ZMQ_EVENTS, so the pending poll is never woken (DEVLOG.md, session 6,
has a standalone reproducer without any kernel). It happens with ipykernel as with ipymini (measured
5 of 60 runs for ipykernel 7.4, about 1 in 10 for ipymini on a loaded machine); no order or pacing of
the kernel's messages can prevent it, since the reply only has to arrive while the client is still
working through the cell's output.

The test runs the notebook many times through nbclient with that one client-side hole closed (after a
shadow send, ZMQ_EVENTS is read through the asyncio socket, as pyzmq's own sends do): every run must
finish promptly, so the kernel answers every cell and never holds a reply back (the fixture is in
harness/fixtures.py).
"""

from __future__ import annotations

import time

import nbformat
import pytest
from nbclient import NotebookClient

from harness import KERNEL_NAME  # (and the repository's kernelspec)

pytestmark = pytest.mark.nbclient

CELLS = [
    "from ipywidgets import interactive\nfrom IPython.display import Audio, display\nimport numpy as np",
    "def beat_freq(f1=220.0, f2=224.0):\n    max_time = 3\n    rate = 8000\n"
    "    times = np.linspace(0, max_time, rate * max_time)\n"
    "    signal = np.sin(2 * np.pi * f1 * times) + np.sin(2 * np.pi * f2 * times)\n"
    "    display(Audio(data=signal, rate=rate))\n    return signal",
    "v = interactive(beat_freq, f1=(200.0, 300.0), f2=(200.0, 300.0))\ndisplay(v)",
    "v.kwargs",
    "f1, f2 = v.children[:2]\nf1.value = 255\nf2.value = 260",
]
RUNS = 15
CELL_TIMEOUT = 20


def test_a_widget_notebook_never_waits_for_a_reply_that_came(client_send_rearmed):
    slow = []
    for i in range(RUNS):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
        started = time.monotonic()
        NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT).execute()
        took = time.monotonic() - started
        if took > CELL_TIMEOUT / 2:
            slow.append((i, round(took, 1)))
        out = nb.cells[2].outputs
        assert out and out[0]["output_type"] == "display_data", out
        widget_state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        captured = [m for m in widget_state.values() if m["model_name"] == "OutputModel"]
        assert any(m["state"].get("outputs") for m in captured), "the Output widget captured nothing"
    assert not slow, f"runs that waited for a reply: {slow}"
