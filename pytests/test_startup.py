"""Start-up stays lean: a fresh kernel, after kernel_info and a first cell, has not imported what only
later requests need (issue 19: nothing on the path to the first reply that the first cell does not
need). Checked in the real kernel through `sys.modules`; no timings."""

from __future__ import annotations

from harness import stream_text

# imported only by the request that needs them: completion (jedi, parso), the debugger (debugpy,
# pydevd), usage_request (psutil), the user's own plotting (matplotlib); never by the kernel itself
# (jupyter_client, tornado, prompt_toolkit, ipykernel)
NOT_AT_STARTUP = ("jedi", "parso", "debugpy", "pydevd", "psutil", "matplotlib", "matplotlib_inline",
                  "jupyter_client", "tornado", "prompt_toolkit", "ipykernel")


def test_first_cell_finds_no_deferred_module_loaded(kernel):
    msgs = kernel.run_ok(f"import sys; print(sorted(n for n in {NOT_AT_STARTUP!r} if n in sys.modules))")
    assert stream_text(msgs).strip() == "[]"
