"""Post-mortem debugging (%debug, %pdb) and pdb in a cell (pdb.set_trace, breakpoint), with stdin and
without (nbclient, papermill), as ipykernel 7.4 has them; the kernel's log stays clean.

The shell once declared a `debugger` attribute that hid IPython's `InteractiveShell.debugger()` method:
%debug ended in "TypeError: 'NoneType' object is not callable" and %pdb added two more and a kernel error.
"""

from __future__ import annotations

import re
import tempfile

import pytest

from harness import TIMEOUT, KernelHarness, of_type, stream_text

NO_STDIN = "raw_input was called, but this frontend does not support input requests."


@pytest.fixture(scope="module")
def logged():
    """A kernel whose log (its stderr) the tests read."""
    log = tempfile.NamedTemporaryFile(prefix="ipymini-pdb-log-", suffix=".txt", delete=False)
    k = KernelHarness(stderr=log)
    k.log_path = log.name
    yield k
    k.stop()
    log.close()


def debug_session(kernel, code: str, answers: list[str]):
    """Run `code` with stdin; answer each pdb prompt in turn. Returns (reply, iopub, prompts)."""
    msg_id = kernel.kc.execute(code, allow_stdin=True)
    prompts = []
    for answer in answers:
        req = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
        assert req["parent_header"]["msg_id"] == msg_id
        prompts.append(req["content"]["prompt"])
        kernel.kc.input(answer)
    reply = kernel.shell_reply(msg_id)
    return reply, kernel.iopub_until_idle(msg_id), prompts


def plain(msgs) -> str:
    """The stdout text without colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", stream_text(msgs))


def errors(msgs) -> list[str]:
    return [m["content"]["ename"] for m in of_type(msgs, "error")]


def assert_log_clean(kernel):
    with open(kernel.log_path) as f:
        text = f.read()
    assert "error handling" not in text and "Traceback" not in text, text


def test_debug_after_an_error_enters_the_debugger(logged):
    reply, _ = logged.execute("def fails(n):\n    return n / 0\nfails(3)")
    assert reply["content"]["ename"] == "ZeroDivisionError"
    reply, msgs, prompts = debug_session(logged, "%debug", ["p n * 14", "q"])
    assert reply["content"]["status"] == "ok", reply["content"]
    assert prompts == ["ipdb> ", "ipdb> "]
    out = plain(msgs)
    assert "return n / 0" in out and "42\n" in out
    assert_log_clean(logged)


def test_debug_without_stdin_raises_stdin_not_implemented(logged):
    logged.execute("fails(1)")
    reply, msgs = logged.execute("%debug", allow_stdin=False)
    assert (reply["content"]["ename"], reply["content"]["evalue"]) == ("StdinNotImplementedError", NO_STDIN)
    assert "return n / 0" in plain(msgs)  # pdb shows where it is before it asks
    assert_log_clean(logged)


def test_pdb_on_enters_the_debugger_at_each_error(logged):
    logged.run_ok("%pdb on")
    try:
        reply, msgs, prompts = debug_session(logged, "fails(7)", ["p n", "q"])
        assert reply["content"]["ename"] == "ZeroDivisionError"
        assert prompts == ["ipdb> ", "ipdb> "] and "7\n" in stream_text(msgs)
        # without stdin (a batch run): the error, then pdb's StdinNotImplementedError, and the kernel
        # goes on (ipykernel shows it twice: IPython shows the error pdb raised, and pdb raises again)
        reply, msgs = logged.execute("fails(5)", allow_stdin=False)
        assert reply["content"]["ename"] == "StdinNotImplementedError"
        assert errors(msgs) == ["ZeroDivisionError", "StdinNotImplementedError", "StdinNotImplementedError"]
        assert logged.run_ok("1 + 1")
    finally:
        logged.run_ok("%pdb off")
    assert_log_clean(logged)


@pytest.mark.parametrize("stop", ["import pdb; pdb.set_trace()", "breakpoint()"])
def test_a_cell_stops_in_pdb_and_continues(logged, stop):
    """breakpoint() stops as under `python` (ipykernel 7.4 ignores it: ipykernel#897)."""
    reply, msgs, prompts = debug_session(logged, f"x = 41\n{stop}\nx + 1", ["p x", "c"])
    assert reply["content"]["status"] == "ok", reply["content"]
    assert prompts == ["ipdb> ", "ipdb> "]
    assert "41\n" in stream_text(msgs)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "42"
    reply, _ = logged.execute(f"x = 41\n{stop}\nx + 1", allow_stdin=False)
    assert (reply["content"]["ename"], reply["content"]["evalue"]) == ("StdinNotImplementedError", NO_STDIN)
    assert_log_clean(logged)


def test_pdb_after_debug_is_still_interruptible(logged):
    """%debug imports IPython's debugger, which imports pdb: pdb.set_trace must still be IPython's
    interruptible one afterwards (a hook on pdb alone ran while IPython's debugger was half made)."""
    reply, _ = logged.execute("import pdb, IPython.core.debugger as d\n"
                              "assert pdb.set_trace is d.set_trace and d.Pdb is d.InterruptiblePdb")
    assert reply["content"]["status"] == "ok", reply["content"]


def test_getpass_and_input_without_stdin_say_which(logged):
    reply, _ = logged.execute("import getpass\ngetpass.getpass('pw? ')", allow_stdin=False)
    assert reply["content"]["evalue"] == "getpass was called, but this frontend does not support input requests."
    reply, _ = logged.execute("input('name? ')", allow_stdin=False)
    assert reply["content"]["evalue"] == NO_STDIN
