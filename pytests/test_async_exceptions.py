"""Asynchronous exceptions (interrupts, completion timeouts) never land in the kernel's own code.

Regression for issue 16's hang: the completion budget's SIGALRM raised `CompletionTimeout` wherever the
main thread was, including inside the kernel's output path that a matcher's print had entered. Landing
right after a lock was taken and before its `try`, it leaked the lock shared by shell, stdin and iopub:
the main loop and the IO thread then waited for it forever (every shell request unanswered, control
still answering). A `__dir__` that prints for the whole budget puts most alarms inside that code.
"""

import os
import pickle

from harness import KernelHarness

NOISY = """
import sys, time
class Noisy:
    def __dir__(self):
        t = time.monotonic()
        while time.monotonic() - t < 0.5:
            sys.stderr.write('x' * 60 + '\\n')
        return ['attribute']
noisy = Noisy()
"""


def test_completion_timeouts_in_a_printing_dir_never_wedge_the_kernel():
    k = KernelHarness(env={"IPYMINI_COMPLETION_TIMEOUT": "0.02", "IPYMINI_USE_JEDI": "0"})
    try:
        k.run_ok(NOISY)
        sub = k.create_subshell()
        for _ in range(int(os.environ.get("IPYMINI_ALARM_ROUNDS", "12"))):
            completion = k.send("complete_request", {"code": "noisy.", "cursor_pos": 6})
            ids = [completion] + [k.submit(f"x = {i}", sub if i % 2 else None) for i in range(10)]
            replies, _ = k.wait_all(ids, timeout=20)
            assert replies[completion]["content"]["status"] == "ok"
            assert all(replies[i]["content"]["status"] == "ok" for i in ids)
    finally:
        k.stop()


def test_completion_timeouts_leave_jedis_disk_cache_whole(tmp_path):
    """jedi pickles what it parses into the cache directory; a budget cut mid-write used to leave a
    truncated file, after which every completion in every kernel came back empty."""
    budget = KernelHarness(env={"IPYMINI_COMPLETION_TIMEOUT": "0.2", "IPYMINI_USE_JEDI": "1",
                                "XDG_CACHE_HOME": str(tmp_path)})
    try:
        budget.run_ok("import collections, json, typing\nalpha_value = 1")
        for code in ["alpha_", "collections.", "json.", "typing.", "alpha_value."] * 4:
            reply, _ = budget.request("complete_request", {"code": code, "cursor_pos": len(code)})
            assert reply["content"]["status"] == "ok"
    finally:
        budget.stop()
    # no budget here: jedi parses (and saves) what `json.` needs, and answers from the cache
    fresh = KernelHarness(env={"IPYMINI_USE_JEDI": "1", "IPYMINI_COMPLETION_TIMEOUT": "0",
                               "XDG_CACHE_HOME": str(tmp_path)})
    try:
        fresh.run_ok("import json\nalpha_value = 1")
        reply, _ = fresh.request("complete_request", {"code": "json.", "cursor_pos": 5}, timeout=60)
        assert "dumps" in reply["content"]["matches"]
        reply, _ = fresh.request("complete_request", {"code": "alpha_", "cursor_pos": 6}, timeout=60)
        assert "alpha_value" in reply["content"]["matches"]
    finally:
        fresh.stop()
    pickles = list(tmp_path.rglob("*.pkl"))
    assert pickles, "jedi saved nothing: the test would prove nothing"
    for path in pickles:
        with open(path, "rb") as f:
            pickle.load(f)  # whole, or it would fail here
    assert not list(tmp_path.rglob("*.tmp"))
