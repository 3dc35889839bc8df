"""Memory over a long session: nothing grows per cell beyond IPython's own bounded caches.

The full measurement (20,000 cells against ipykernel) is `python bench/memory.py`; here a short session
with a small output cache shows that results, their format data and replay-protection state are
bounded (before issue 16 every result object and its repr lived for the whole session).
"""

import queue

from harness import KernelHarness

CELL = "display('x'); list(range(100))"
CACHE = 50


def run_many(k, code, count):
    ids = [k.kc.execute(code) for _ in range(count)]
    left = set(ids)
    while left:
        left.discard(k.kc.get_shell_msg(timeout=60)["parent_header"].get("msg_id"))
        while True:
            try:
                k.kc.get_iopub_msg(timeout=0)
            except queue.Empty:
                break


def test_results_format_data_and_signatures_stay_bounded():
    k = KernelHarness(extra_args=[f"--InteractiveShell.cache_size={CACHE}"])
    try:
        run_many(k, CELL, 8 * CACHE)
        census = k.run_ok("""import gc
_live = sum(1 for o in gc.get_objects() if type(o) is list and len(o) == 100 and o[:2] == [0, 1])
_hm = get_ipython().history_manager
_hidden = sum(1 for n in get_ipython().user_ns_hidden if n[:1] == '_' and n[1:].isdigit())
_wire = next(o for o in gc.get_objects() if type(o).__name__ == 'Wire')
print(_live, len(_hm.outputs), len(_hm.output_hist_reprs), _hidden, len(Out), len(_wire.seen_signatures))
""")
        text = "".join(m["content"]["text"] for m in census if m["msg_type"] == "stream"
                       and m["content"]["name"] == "stdout")
        live, outputs, reprs, hidden, out, signatures = map(int, text.split())
        assert out <= CACHE
        assert live <= CACHE + 5, "results outlive IPython's output cache"
        assert outputs <= CACHE and reprs <= CACHE, "format data kept for every cell"
        assert hidden <= CACHE, "_N names kept in user_ns_hidden"
        assert signatures > 8 * CACHE  # bounded at 2**16 (test_wire), not culled this early
    finally:
        k.stop()
