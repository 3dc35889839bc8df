"""Chaos: several clients at once, each its own session and socket thread, at random (pytests/chaos.py).

Interrupts, stdin prompts, subshell churn, floods and control requests during busy cells; every
request gets exactly one reply (shell: one busy, one idle), every ok cell's output arrives whole, and
the kernel stays alive. `IPYMINI_CHAOS_REQUESTS` / `IPYMINI_CHAOS_SEED` scale or vary the run;
`make soak` runs 100,000 requests.
"""

import os
import signal
import time

from chaos import run_chaos
from harness import KernelHarness, stream_text


def test_chaos_clients_every_request_answered_once_and_output_whole(tmp_path):
    log = tmp_path / "kernel.log"
    k = KernelHarness(stderr=open(log, "w"), env={"IPYMINI_STACKS_SIGNAL": "SIGUSR2"})
    k.kc.stop_channels()  # a client that does not read iopub would stall the others' output
    try:
        figures = run_chaos(k.km.get_connection_info(), k.km.provisioner.process.pid,
                            seed=int(os.environ.get("IPYMINI_CHAOS_SEED", "16")), clients=3,
                            requests=int(os.environ.get("IPYMINI_CHAOS_REQUESTS", "300")))
        assert not figures["errors"], "\n".join(figures["errors"]) + _stacks_if_wedged(k, log, figures)
        assert figures["answered"] == figures["sent"]
        assert figures["statuses"].get("ok", 0) > figures["sent"] // 2
        assert k.km.is_alive()
        k.kc = k.km.client()
        k.kc.start_channels()
        k.kc.wait_for_ready(timeout=30)
        assert stream_text(k.run_ok("print('still here')")) == "still here\n"
    finally:
        k.stop()
    assert "BUG" not in log.read_text()  # no socket used by a thread without its lock


def _stacks_if_wedged(k, log, figures) -> str:
    """A request left unanswered: the kernel's threads' stacks (IPYMINI_STACKS_SIGNAL), from its log."""
    if not any("unanswered" in e or "stuck" in e for e in figures["errors"]) or not k.km.is_alive():
        return ""
    os.kill(k.km.provisioner.process.pid, signal.SIGUSR2)
    time.sleep(1)
    return "\n\nthe kernel's threads then:\n" + log.read_text()[-12000:]
