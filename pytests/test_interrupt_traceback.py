"""An interrupted cell's traceback ends in the user's code, never in the kernel's SIGINT handler or
input() machinery (as with ipykernel, whose default SIGINT handler is C code)."""

import re
import time

from harness import REPO, of_type

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _interrupted_traceback(kernel, code: str, wait_for_input: bool = False) -> list[str]:
    msg_id = kernel.kc.execute(code, allow_stdin=wait_for_input)
    if wait_for_input:
        assert kernel.kc.get_stdin_msg(timeout=10)["msg_type"] == "input_request"
    else:
        time.sleep(0.5)
    kernel.km.interrupt_kernel()
    reply = kernel.shell_reply(msg_id, timeout=10)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    (err,) = of_type(kernel.iopub_until_idle(msg_id), "error")
    return [ANSI.sub("", frame) for frame in err["content"]["traceback"]]


def test_interrupted_sleep_traceback_ends_in_the_cell(kernel):
    frames = _interrupted_traceback(kernel, "import time\ntime.sleep(30)")
    assert not any(str(REPO / "ipymini") in f for f in frames), frames
    assert frames[-2].startswith("Cell In[") and "time.sleep(30)" in frames[-2]
    assert frames[-1].startswith("KeyboardInterrupt")


def test_interrupted_input_traceback_ends_in_the_cell(kernel):
    frames = _interrupted_traceback(kernel, 'input("waiting> ")', wait_for_input=True)
    assert not any(str(REPO / "ipymini") in f for f in frames), frames
    assert frames[-2].startswith("Cell In[") and "input(" in frames[-2]
