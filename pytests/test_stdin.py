"""stdin: input() and getpass() ask the client through input_request / input_reply."""

import queue
import time

from harness import TIMEOUT, of_type, stream_text


def start(kernel, code, allow_stdin=True):
    return kernel.kc.execute(code, allow_stdin=allow_stdin)


def test_input_round_trip_and_output_order(kernel):
    msg_id = start(kernel, "print('before the prompt')\nname = input('Name: ')\nprint('hello', name)")
    req = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    assert req["msg_type"] == "input_request"
    assert req["content"] == {"prompt": "Name: ", "password": False}
    assert req["parent_header"]["msg_id"] == msg_id
    # the kernel sends iopub output before the prompt: it is already there when the prompt is
    before = []
    while not stream_text(before):
        before.append(kernel.kc.get_iopub_msg(timeout=2))
    assert stream_text(before) == "before the prompt\n"
    kernel.kc.input("Ada")
    reply = kernel.shell_reply(msg_id)
    assert reply["content"]["status"] == "ok"
    msgs = before + kernel.iopub_until_idle(msg_id)
    assert stream_text(msgs) == "before the prompt\nhello Ada\n"


def test_getpass_sets_password(kernel):
    msg_id = start(kernel, "import getpass\nsecret = getpass.getpass('Secret: ')\nlen(secret)")
    req = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    assert req["content"] == {"prompt": "Secret: ", "password": True}
    kernel.kc.input("hunter2")
    assert kernel.shell_reply(msg_id)["content"]["status"] == "ok"
    [result] = of_type(kernel.iopub_until_idle(msg_id), "execute_result")
    assert result["content"]["data"]["text/plain"] == "7"


def test_several_inputs_in_one_cell(kernel):
    msg_id = start(kernel, "a = input('a? ')\nb = input('b? ')\nprint(a + b)")
    for prompt, value in (("a? ", "1"), ("b? ", "2")):
        req = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
        assert req["content"]["prompt"] == prompt
        kernel.kc.input(value)
    assert kernel.shell_reply(msg_id)["content"]["status"] == "ok"
    assert stream_text(kernel.iopub_until_idle(msg_id)) == "12\n"


def test_without_allow_stdin_input_raises(kernel):
    for code in ("input('x')", "import getpass; getpass.getpass()"):
        reply, msgs = kernel.execute(code, allow_stdin=False)
        c = reply["content"]
        assert c["status"] == "error"
        assert c["ename"] == "StdinNotImplementedError"
        assert "does not support input requests" in c["evalue"]
    try:
        kernel.kc.get_stdin_msg(timeout=0.3)
        raise AssertionError("an input_request was sent although stdin is not allowed")
    except queue.Empty:
        pass


def test_interrupt_ends_an_input_wait(kernel):
    msg_id = start(kernel, "try:\n    input('wait: ')\nexcept KeyboardInterrupt:\n    print('got KI')\n    raise")
    abandoned = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    t0 = time.monotonic()
    kernel.km.interrupt_kernel()
    reply = kernel.shell_reply(msg_id)
    assert time.monotonic() - t0 < 5
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert "got KI" in stream_text(kernel.iopub_until_idle(msg_id))
    # a late reply to the abandoned prompt is dropped, even once the next prompt waits
    msg_id = start(kernel, "v = input('again: ')\nprint(v)")
    kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    kernel.kc.stdin_channel.send(kernel.kc.session.msg("input_reply", {"value": "stale"},
                                                       parent=abandoned["header"]))
    kernel.kc.input("fresh")
    assert kernel.shell_reply(msg_id)["content"]["status"] == "ok"
    assert stream_text(kernel.iopub_until_idle(msg_id)) == "fresh\n"
