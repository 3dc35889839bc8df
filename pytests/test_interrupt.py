"""Interrupts in signal mode (SIGINT from the kernel manager) and message mode (interrupt_request)."""

import os
import re
import time

import pytest
from harness import TIMEOUT, of_type, stream_text

CASES = {
    "busy_loop": "print('GO', flush=True)\nwhile True:\n    pass",
    "time_sleep": "import time\nprint('GO', flush=True)\ntime.sleep(30)",
    "asyncio_sleep": "import asyncio\nprint('GO', flush=True)\nawait asyncio.sleep(30)",
    "async_cell_busy": "import asyncio\nawait asyncio.sleep(0)\nprint('GO', flush=True)\nwhile True:\n    pass",
    "input": "input('waiting: ')",
    "shell_command": "!sh -c 'echo GO $$; exec sleep 30'",
}


def interrupt(kernel, mode):
    if mode == "signal":
        kernel.km.interrupt_kernel()
    else:  # wait for the reply only: reading iopub here would drop the cell's own messages
        assert kernel.control("interrupt_request")["content"]["status"] == "ok"


def wait_until_running(kernel, msg_id, case):
    """Block until the cell reached its blocking part; returns the iopub messages read so far."""
    if case == "input":
        req = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
        assert req["msg_type"] == "input_request"
        return []
    msgs = []
    deadline = time.monotonic() + TIMEOUT
    while "GO" not in stream_text(msgs):
        msg = kernel.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") == msg_id:
            msgs.append(msg)
    return msgs


@pytest.mark.parametrize("mode", ["signal", "message"])
@pytest.mark.parametrize("case", list(CASES))
def test_interrupt_stops_the_cell(kernel, mode, case):
    msg_id = kernel.kc.execute(CASES[case], allow_stdin=True)
    msgs = wait_until_running(kernel, msg_id, case)
    queued = kernel.kc.execute("print('queued cell ran')")
    time.sleep(0.2)  # let the cell get into its blocking call
    t0 = time.monotonic()
    interrupt(kernel, mode)
    reply = kernel.shell_reply(msg_id)
    elapsed = time.monotonic() - t0
    content = reply["content"]
    assert content["status"] == "error", content
    assert content["ename"] == "KeyboardInterrupt"
    assert elapsed < 5, elapsed
    msgs += kernel.iopub_until_idle(msg_id)
    assert len(of_type(msgs, "error")) == 1, [(m["msg_type"], str(m["content"])[:300]) for m in msgs]
    [err] = of_type(msgs, "error")
    assert err["content"]["ename"] == "KeyboardInterrupt"
    # the queued cell is aborted, as after any error
    assert kernel.shell_reply(queued)["content"]["status"] == "aborted"
    assert "queued cell ran" not in stream_text(kernel.iopub_until_idle(queued))
    if case == "shell_command":
        pid = int(re.search(r"GO (\d+)", stream_text(msgs)).group(1))
        deadline = time.monotonic() + 5
        while True:  # the child was stopped and reaped
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "the !command's process survived the interrupt"
            time.sleep(0.05)
    # and the kernel keeps working
    assert stream_text(kernel.run_ok("print('after', 6 * 7)")) == "after 42\n"


@pytest.mark.parametrize("mode", ["signal", "message"])
def test_interrupt_while_idle_is_harmless(kernel, mode):
    kernel.run_ok("state = 'kept'")
    for _ in range(3):
        interrupt(kernel, mode)
    time.sleep(0.3)
    stray = [m for m in kernel.drain_iopub() if m["msg_type"] in ("error", "stream")]
    assert stray == []
    reply, msgs = kernel.execute("state")
    assert reply["content"]["status"] == "ok"
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'kept'"


def test_interrupt_between_requests_keeps_serving(kernel):
    # interrupts racing with quick requests must never kill the worker
    for i in range(10):
        msg_id = kernel.kc.execute(f"x_{i} = {i}")
        kernel.km.interrupt_kernel()
        status = kernel.shell_reply(msg_id)["content"]["status"]
        assert status in ("ok", "error")
        kernel.iopub_until_idle(msg_id)
    time.sleep(0.2)
    assert stream_text(kernel.run_ok("print('alive')")) == "alive\n"


@pytest.mark.parametrize("mode", ["signal", "message"])
def test_interrupt_in_an_event_callback_stops_the_cell(kernel, mode):
    """An interrupt that lands in a pre_run_cell callback stops the cell. IPython catches it there,
    prints "Error in callback" and runs the cell anyway (so does ipykernel 7.4): the interrupt is lost."""
    kernel.run_ok("import time\nslow_once = True\n"
                  "def slow_hook(*args):\n"
                  "    global slow_once\n"
                  "    if slow_once:\n"
                  "        slow_once = False\n"
                  "        print('GO', flush=True)\n"
                  "        time.sleep(30)\n"
                  "get_ipython().events.register('pre_run_cell', slow_hook)")
    try:
        msg_id = kernel.kc.execute("print('the cell ran')")
        msgs = wait_until_running(kernel, msg_id, "hook")
        time.sleep(0.2)
        interrupt(kernel, mode)
        reply = kernel.shell_reply(msg_id)
        msgs += kernel.iopub_until_idle(msg_id)
        assert reply["content"]["status"] == "error", reply["content"]
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert "the cell ran" not in stream_text(msgs)
        assert "Error in callback" not in stream_text(msgs)
    finally:
        kernel.run_ok("get_ipython().events.unregister('pre_run_cell', slow_hook)")
    assert stream_text(kernel.run_ok("print('after')")) == "after\n"
