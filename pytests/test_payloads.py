"""execute_reply payloads: pager (`page`), `set_next_input` (last one wins) and `ask_exit`."""

from harness import of_type, stream_text


def payloads(kernel, code):
    reply, msgs = kernel.execute(code)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["payload"], msgs


def test_object_help_is_a_page_payload(kernel):
    [p], msgs = payloads(kernel, "zip?")
    assert p["source"] == "page"
    assert p["start"] == 0
    assert "zip" in p["data"]["text/plain"]
    assert not of_type(msgs, "display_data") and not stream_text(msgs)


def test_page_magic_is_a_page_payload(kernel):
    [p], _ = payloads(kernel, "%page zip")
    assert p == {"source": "page", "data": {"text/plain": "<class 'zip'>"}, "start": 0}


def test_help_function_prints_into_the_cell(kernel):
    # as in ipykernel: nbclient, papermill and nbconvert drop `page` payloads, so help() must print
    pl, msgs = payloads(kernel, "help(zip)")
    assert pl == []
    assert "Help on class zip in module builtins" in stream_text(msgs)


def test_set_next_input_last_one_wins(kernel):
    pl, _ = payloads(kernel, "ip = get_ipython()\nip.set_next_input('first')\nip.set_next_input('second')")
    assert pl == [{"source": "set_next_input", "text": "second", "replace": False}]
    pl, _ = payloads(kernel, "1")
    assert pl == []  # payloads never leak into the next cell


def test_load_magic_replaces_the_cell(kernel, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text("loaded = 1\n")
    pl, _ = payloads(kernel, f"%load {script}")
    assert pl == [{"source": "set_next_input", "text": f"# %load {script}\nloaded = 1\n",
                   "replace": True}]


def test_payload_survives_an_error(kernel):
    reply, _ = kernel.execute("get_ipython().set_next_input('again')\nraise ValueError('x')")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["payload"] == [{"source": "set_next_input", "text": "again",
                                            "replace": False}]


def test_exit_and_quit_ask_the_frontend(kernel):
    for code, keep in (("exit", False), ("quit()", False), ("exit(keep_kernel=True)", True)):
        pl, _ = payloads(kernel, code)
        assert pl == [{"source": "ask_exit", "keepkernel": keep}], code
    # the kernel itself keeps serving: closing is the frontend's decision
    assert stream_text(kernel.run_ok("print('still here')")) == "still here\n"
