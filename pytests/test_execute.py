"""Execution through IPython: streams, results, errors, display, counts, await, magics, ordering."""

import time

from harness import of_type, stream_text


def test_stdout_and_stderr_streams(kernel):
    msgs = kernel.run_ok("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert stream_text(msgs, "stdout") == "out\n"
    assert stream_text(msgs, "stderr") == "err\n"


def test_execute_result_carries_every_mime_format(kernel):
    code = (
        "class Rich:\n"
        "    def _repr_html_(self): return '<b>rich</b>'\n"
        "    def _repr_latex_(self): return r'$\\alpha$'\n"
        "    def _repr_markdown_(self): return '**rich**'\n"
        "    def __repr__(self): return 'Rich()'\n"
        "Rich()"
    )
    reply, msgs = kernel.execute(code)
    [result] = of_type(msgs, "execute_result")
    data = result["content"]["data"]
    assert data["text/plain"] == "Rich()"
    assert data["text/html"] == "<b>rich</b>"
    assert data["text/latex"] == "$\\alpha$"
    assert data["text/markdown"] == "**rich**"
    assert result["content"]["execution_count"] == reply["content"]["execution_count"]


def test_error_reply_and_error_output(kernel):
    reply, msgs = kernel.execute("def f():\n    raise ValueError('bad value')\nf()")
    content = reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "ValueError"
    assert content["evalue"] == "bad value"
    assert any("bad value" in line for line in content["traceback"])
    [err] = of_type(msgs, "error")
    assert err["content"]["ename"] == "ValueError"
    assert err["content"]["traceback"] == content["traceback"]


def test_syntax_error_is_an_error_reply(kernel):
    reply, msgs = kernel.execute("def (:")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "SyntaxError"
    assert of_type(msgs, "error")


def test_display_update_and_clear_output(kernel):
    code = (
        "from IPython.display import display, clear_output\n"
        "h = display('first', display_id='d1')\n"
        "h.update('second')\n"
        "clear_output(wait=True)\n"
    )
    msgs = kernel.run_ok(code)
    [disp] = of_type(msgs, "display_data")
    assert disp["content"]["data"]["text/plain"] == "'first'"
    assert disp["content"]["transient"] == {"display_id": "d1"}
    [upd] = of_type(msgs, "update_display_data")
    assert upd["content"]["data"]["text/plain"] == "'second'"
    assert upd["content"]["transient"] == {"display_id": "d1"}
    [clear] = of_type(msgs, "clear_output")
    assert clear["content"]["wait"] is True


def test_png_display_is_base64(kernel):
    code = (
        "import base64\nfrom IPython.display import Image, display\n"
        "png = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')\n"
        "display(Image(data=png))"
    )
    msgs = kernel.run_ok(code)
    [disp] = of_type(msgs, "display_data")
    assert disp["content"]["data"]["image/png"].startswith("iVBORw0KGgo")


def test_user_expressions(kernel):
    reply, _ = kernel.execute("ux = 6", user_expressions={"double": "ux * 2", "bad": "1/0"})
    ue = reply["content"]["user_expressions"]
    assert ue["double"]["status"] == "ok"
    assert ue["double"]["data"]["text/plain"] == "12"
    assert ue["bad"]["status"] == "error"
    assert ue["bad"]["ename"] == "ZeroDivisionError"


def test_execution_count_semantics(kernel):
    r1, msgs1 = kernel.execute("1")
    n = r1["content"]["execution_count"]
    assert of_type(msgs1, "execute_input")[0]["content"]["execution_count"] == n
    # store_history=False: the counter does not move; the reply repeats the last count
    r2, msgs2 = kernel.execute("2", store_history=False)
    assert r2["content"]["execution_count"] == n
    assert of_type(msgs2, "execute_input")[0]["content"]["execution_count"] == n + 1
    # silent: no execute_input, no execute_result, counter unchanged
    r3, msgs3 = kernel.execute("3", silent=True)
    assert r3["content"]["status"] == "ok"
    assert not of_type(msgs3, "execute_input") and not of_type(msgs3, "execute_result")
    r4, _ = kernel.execute("4")
    assert r4["content"]["execution_count"] == n + 1


def test_silent_still_streams_but_no_result(kernel):
    msgs = kernel.run_ok("print('quiet'); 5", silent=True)
    assert stream_text(msgs) == "quiet\n"
    assert not of_type(msgs, "execute_result")


def test_top_level_await(kernel):
    reply, msgs = kernel.execute("import asyncio\nawait asyncio.sleep(0.01)\nprint('after')\n'done'")
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "after\n"
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'done'"


def test_background_task_keeps_running_between_cells(kernel):
    kernel.run_ok("import asyncio\nticks = []\n"
                  "async def tick():\n    for i in range(3):\n        ticks.append(i)\n"
                  "        await asyncio.sleep(0.05)\n"
                  "task = asyncio.ensure_future(tick())")
    time.sleep(0.5)
    msgs = kernel.run_ok("print(ticks, task.done())")
    assert stream_text(msgs) == "[0, 1, 2] True\n"


def test_magics_time_capture_autoawait(kernel):
    msgs = kernel.run_ok("%time x_t = sum(range(10))")
    assert "Wall time" in stream_text(msgs)
    msgs = kernel.run_ok("%%capture cap\nprint('captured!')")
    assert "captured!" not in stream_text(msgs)
    assert stream_text(kernel.run_ok("print(cap.stdout, end='')")) == "captured!\n"
    kernel.run_ok("%autoawait off")
    reply, _ = kernel.execute("import asyncio\nawait asyncio.sleep(0)")
    assert reply["content"]["status"] == "error"
    kernel.run_ok("%autoawait on")
    kernel.run_ok("await asyncio.sleep(0)")


def test_shell_escape_output(kernel):
    msgs = kernel.run_ok("!echo from-the-shell")
    assert "from-the-shell" in stream_text(msgs)
    msgs = kernel.run_ok("files = !echo captured-line\nprint(files)")
    assert "['captured-line']" in stream_text(msgs)


def test_message_order_for_a_request(kernel):
    msg_id = kernel.kc.execute("print('a'); import sys; print('b', file=sys.stderr); 7")
    reply = kernel.shell_reply(msg_id)
    msgs = kernel.iopub_until_idle(msg_id)
    types = [m["msg_type"] for m in msgs]
    assert types[0] == "status" and msgs[0]["content"]["execution_state"] == "busy"
    assert types[1] == "execute_input"
    assert types[-1] == "status" and msgs[-1]["content"]["execution_state"] == "idle"
    assert types[2:-1] == ["stream", "stream", "execute_result"]
    for m in msgs:
        assert m["parent_header"]["msg_id"] == msg_id
    assert reply["parent_header"]["msg_id"] == msg_id
    # nothing for this request arrives after idle
    assert not [m for m in kernel.drain_iopub(0.3) if m["parent_header"].get("msg_id") == msg_id]


def test_idle_is_last_for_every_request_type(kernel):
    for msg_type, content in [("kernel_info_request", {}), ("complete_request", {"code": "pri", "cursor_pos": 3}),
                              ("is_complete_request", {"code": "x = 1"}),
                              ("inspect_request", {"code": "len", "cursor_pos": 3, "detail_level": 0})]:
        reply, msgs = kernel.request(msg_type, content)
        assert reply["msg_type"] == msg_type.replace("_request", "_reply")
        assert msgs[0]["content"]["execution_state"] == "busy"
        assert msgs[-1]["content"]["execution_state"] == "idle"
