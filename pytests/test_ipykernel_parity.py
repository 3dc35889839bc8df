"""Drop-in parity with ipykernel, through the real kernel: what libraries detect, ipykernel's public API
on the shell and the kernel object, and the message-level details clients read (issue 15)."""

import json
import re
import time
from datetime import datetime, timezone

import pytest
from harness import REPO, TIMEOUT, KernelHarness, of_type, stream_text, value


# -- identity, as libraries detect it --

def test_shell_and_config_look_like_a_jupyter_kernel(kernel):
    assert value(kernel, "type(get_ipython()).__name__") == "'ZMQInteractiveShell'"
    assert value(kernel, "'IPKernelApp' in get_ipython().config") == "True"
    assert value(kernel, "get_ipython().config.IPKernelApp.connection_file") == repr(
        kernel.km.connection_file)
    reply, _ = kernel.request("kernel_info_request", {})
    assert reply["content"]["implementation"] == "ipymini"


def test_isinstance_against_ipykernels_shell_class(kernel):
    # with ipykernel installed too (it is, in the test environment): its package is imported for real
    kernel.run_ok("import ipykernel.zmqshell")
    assert value(kernel, "isinstance(get_ipython(), ipykernel.zmqshell.ZMQInteractiveShell)") == "True"


def test_tqdm_auto_picks_the_notebook_bar(kernel):
    kernel.run_ok("import tqdm.auto, tqdm.notebook")
    assert value(kernel, "issubclass(tqdm.auto.tqdm, tqdm.notebook.tqdm)") == "True"


def test_rich_console_reports_jupyter(kernel):
    assert value(kernel, "__import__('rich.console').console.Console().is_jupyter") == "True"


def test_plotly_default_renderer_is_ipykernels(kernel):
    expr = "__import__('plotly.io').io.renderers.default"
    ours = value(kernel, expr)
    ipk = KernelHarness(kernel_name="python3")  # ipykernel, same environment
    try:
        assert value(ipk, expr) == ours
    finally:
        ipk.stop()


# -- ipykernel's public API --

def test_shell_get_parent_is_the_running_request(kernel):
    reply, msgs = kernel.execute("p = get_ipython().get_parent()\nprint(p['header']['msg_id'])")
    assert stream_text(msgs).strip() == reply["parent_header"]["msg_id"]


def test_set_parent_from_a_thread_after_its_cell_ended(kernel):
    kernel.run_ok("import threading, _thread\nip = get_ipython()\nbox = {}\nev = threading.Event()\n"
                  "def late():\n    ev.wait(10)\n    ip.set_parent(box['p'])\n    print('moved')\n"
                  "    _thread.start_new_thread(lambda: print('no request of its own'), ())\n"
                  "t = threading.Thread(target=late)\nt.start()")
    # the thread's own cell has ended; it sends its output to this one
    reply, msgs = kernel.execute("box['p'] = get_ipython().get_parent()\nev.set(); t.join(10)\n"
                                 "import time; time.sleep(0.3)")
    text = stream_text(msgs)
    assert "moved" in text and "no request of its own" in text


def test_set_thread_parent_affects_only_that_thread_and_resets(kernel):
    target_reply, _ = kernel.execute("target = get_ipython().get_parent()")
    target_id = target_reply["parent_header"]["msg_id"]
    msg_id = kernel.kc.execute(
        "import threading\nip = get_ipython()\ndef work():\n    token = ip.set_thread_parent(target)\n"
        "    print('to target')\n    ip.reset_thread_parent(token)\n    print('back home')\n"
        "t = threading.Thread(target=work); t.start(); t.join()\nprint('main thread')")
    msgs = kernel.iopub_until_idle(msg_id, keep_all=True)
    mine = [m for m in msgs if m["parent_header"].get("msg_id") == msg_id]
    moved = [m for m in msgs if m["parent_header"].get("msg_id") == target_id]
    assert stream_text(mine) == "back home\nmain thread\n"
    assert stream_text(moved) == "to target\n"
    assert kernel.shell_reply(msg_id)["content"]["status"] == "ok"


def test_session_send_on_iopub_socket_updates_a_display(kernel):
    reply, msgs = kernel.execute(
        "from IPython.display import display\nh = display('before', display_id='d1')\n"
        "k = get_ipython().kernel\n"
        "k.session.send(k.iopub_socket, 'update_display_data', {'data': {'text/plain': 'after'}, "
        "'metadata': {}, 'transient': {'display_id': 'd1'}}, parent=k.get_parent())\nprint('done')")
    assert reply["content"]["status"] == "ok", reply["content"]
    kinds = [m["msg_type"] for m in msgs if m["msg_type"] != "status"]
    assert kinds == ["execute_input", "display_data", "update_display_data", "stream"]
    update = of_type(msgs, "update_display_data")[0]["content"]
    assert update["data"] == {"text/plain": "after"} and update["transient"] == {"display_id": "d1"}


def test_kernel_object_attributes(kernel):
    reply, msgs = kernel.execute(
        "k = get_ipython().kernel\n"
        "print(k.shell is get_ipython(), k.comm_manager is not None,\n"
        "      k.get_parent()['header']['msg_id'] == k.get_parent('shell')['header']['msg_id'],\n"
        "      k.get_parent('control') == {} or 'header' in k.get_parent('control'),\n"
        "      isinstance(k._parent_ident['shell'], list), isinstance(k.session.session, str))\n"
        "print(*(hasattr(k, name) for name in ('sockets', 'shell_handlers', 'bridge', 'wire')))")
    assert stream_text(msgs).split() == ["True"] * 6 + ["False"] * 4  # ipykernel's API, not ipymini's kernel


def test_usage_request_on_control(kernel):
    reply, _ = kernel.request("usage_request", {}, channel="control")
    c = reply["content"]
    assert reply["msg_type"] == "usage_reply"
    for key in ("hostname", "pid", "kernel_cpu", "kernel_memory", "cpu_count", "host_virtual_memory"):
        assert key in c, key
    assert c["pid"] == int(value(kernel, "__import__('os').getpid()"))
    assert c["kernel_memory"] > 10 << 20 and "total" in c["host_virtual_memory"]


def test_output_widget_msg_id_in_a_cell_and_in_a_callback(kernel):
    reply, msgs = kernel.execute(
        "import ipywidgets as w\nout = w.Output()\nslider = w.IntSlider()\nseen = []\n"
        "def changed(change):\n    with out:\n        seen.append(out.msg_id)\n"
        "slider.observe(changed, 'value')\nwith out:\n    print(out.msg_id)\nprint(slider.model_id)")
    assert reply["content"]["status"] == "ok"
    cell_id = reply["parent_header"]["msg_id"]
    # inside `with out:` the print is captured by the widget: it goes out parented to the cell,
    # tagged for the Output widget by its msg_id
    assert cell_id in stream_text(msgs)
    model_id = stream_text(msgs).split()[-1]
    msg = kernel.kc.session.msg("comm_msg", {"comm_id": model_id, "data": {
        "method": "update", "state": {"value": 5}, "buffer_paths": []}})
    kernel.kc.shell_channel.send(msg)
    kernel.iopub_until_idle(msg["header"]["msg_id"])
    assert value(kernel, "seen") == repr([msg["header"]["msg_id"]])


def test_usage_content_without_psutil(monkeypatch):
    # jupyter-resource-usage's panel still gets hostname, pid and cpu_count (as from ipykernel)
    import os
    import sys

    from ipymini.shell.ipykernel_api import usage_content

    monkeypatch.setitem(sys.modules, "psutil", None)
    content = usage_content({})
    assert content["pid"] == os.getpid() and content["cpu_count"] == os.cpu_count()
    assert "kernel_memory" not in content and content["hostname"]


# -- message-level parity --

def test_execute_reply_metadata_and_engine_info(kernel):
    before = datetime.now(timezone.utc)
    reply, _ = kernel.execute("1")
    md = reply["metadata"]
    started = datetime.fromisoformat(md["started"].replace("Z", "+00:00"))
    assert before.timestamp() - 1 <= started.timestamp() <= time.time() + 1
    assert md["dependencies_met"] is True and md["status"] == "ok" and isinstance(md["engine"], str)
    err, _ = kernel.execute("1/0")
    assert err["metadata"]["status"] == "error"
    assert err["content"]["engine_info"] == {"engine_uuid": md["engine"], "engine_id": -1,
                                             "method": "execute"}


def test_showtraceback_in_except_is_output_not_failure(kernel):
    reply, msgs = kernel.execute("try:\n    1/0\nexcept Exception:\n    get_ipython().showtraceback()\n"
                                 "print('after')")
    assert reply["content"]["status"] == "ok"
    assert of_type(msgs, "error")[0]["content"]["ename"] == "ZeroDivisionError"
    assert stream_text(msgs) == "after\n"


def test_failing_result_formatter_fails_the_cell(kernel):
    reply, msgs = kernel.execute("class Bad:\n    def _repr_html_(self):\n        raise ValueError('no')\n"
                                 "Bad()")
    assert reply["content"]["status"] == "error"  # as in ipykernel


def test_fd_output_comes_before_the_result(kernel):
    for i in range(10):
        reply, msgs = kernel.execute(f"import os; os.write(1, b'x{i}\\n'); {i}")
        kinds = [m["msg_type"] for m in msgs if m["msg_type"] in ("stream", "execute_result")]
        assert kinds == ["stream", "execute_result"], kinds
        assert stream_text(msgs) == f"x{i}\n"


def test_unknown_subshell_error_text(kernel):
    msg = kernel.kc.session.msg("execute_request", {"code": "1"})
    msg["header"]["subshell_id"] = "nope"
    kernel.kc.shell_channel.send(msg)
    reply = kernel.shell_reply(msg["header"]["msg_id"])
    c = reply["content"]
    assert (c["status"], c["ename"], c["evalue"]) == ("error", "UnknownSubshellError",
                                                      "Unknown subshell_id 'nope'")
    kernel.iopub_until_idle(msg["header"]["msg_id"])


def test_protocol_version_on_control_and_kernelspec(kernel):
    reply, _ = kernel.request("kernel_info_request", {}, channel="control")
    c = reply["content"]
    assert c["protocol_version"] == "5.6" and "kernel subshells" in c["supported_features"]
    spec = json.loads((REPO / "share/jupyter/kernels/ipymini/kernel.json").read_text())
    assert spec["kernel_protocol_version"] == "5.6"  # 5.6: the kernel handshake (test_handshake.py)
    assert spec["metadata"]["supported_encryption"] == ["curve"]


def test_shell_requests_on_control_are_served_there(kernel):
    reply, msgs = kernel.request("execute_request", {"code": "print('on control'); 6 * 7"},
                                 channel="control")
    assert reply["content"]["status"] == "ok"
    assert stream_text(msgs) == "on control\n"
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "42"
    reply, _ = kernel.request("is_complete_request", {"code": "for x in y:"}, channel="control")
    assert reply["content"]["status"] == "incomplete"


@pytest.mark.parametrize("code", ["import pdb; pdb.set_trace()", "breakpoint()"])
def test_interrupting_the_debugger_prompt_ends_the_cell(kernel, code):
    first = kernel.kc.execute(code, allow_stdin=True)
    prompt = kernel.kc.get_stdin_msg(timeout=TIMEOUT)
    assert prompt["msg_type"] == "input_request" and "ipdb>" in prompt["content"]["prompt"]
    second = kernel.kc.execute("print('next cell')")
    kernel.km.interrupt_kernel()
    kernel.shell_reply(first)
    msgs = kernel.iopub_until_idle(first)
    assert "KeyboardInterrupt" in stream_text(msgs)
    assert kernel.shell_reply(second)["content"]["status"] == "ok"
    assert stream_text(kernel.iopub_until_idle(second)) == "next cell\n"


def test_cell_name_from_ipykernel_cell_name():
    # every cell is compiled under the given name; the traceback reads as ipykernel's does
    code = "def f():\n    1/0\nf()"
    tracebacks = []
    for name in ("ipymini", "python3"):
        k = KernelHarness(env={"IPYKERNEL_CELL_NAME": "<IPY-INPUT>"}, kernel_name=name)
        try:
            reply, _ = k.execute(code)
            tracebacks.append(re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(reply["content"]["traceback"])))
            assert value(k, "f.__code__.co_filename") == "'<IPY-INPUT>'"
        finally:
            k.stop()
    assert tracebacks[0] == tracebacks[1]


# -- better than ipykernel: asyncio.run in a cell --

def test_asyncio_run_and_run_until_complete_in_a_cell(kernel):
    kernel.run_ok("import asyncio\nasync def twice(x):\n    print('in', x)\n    await asyncio.sleep(0.01)\n"
                  "    return 2 * x")
    msgs = kernel.run_ok("asyncio.run(twice(1))")
    assert stream_text(msgs) == "in 1\n"
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "2"
    msgs = kernel.run_ok("asyncio.get_event_loop().run_until_complete(asyncio.gather(twice(2), twice(3)))")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "[4, 6]"
    msgs = kernel.run_ok("asyncio.new_event_loop().run_until_complete(twice(4))")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "8"
    # a task scheduled from a synchronous cell runs on the kernel's loop, as in ipykernel
    kernel.run_ok("task = asyncio.ensure_future(twice(5))")
    msgs = kernel.run_ok("await asyncio.sleep(0.05); task.result()")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "10"
    # a cell using top-level await keeps asyncio's rule
    reply, _ = kernel.execute("await asyncio.sleep(0)\nasyncio.run(twice(6))")
    assert reply["content"]["status"] == "error" and "running event loop" in reply["content"]["evalue"]


def test_interrupting_asyncio_run(kernel):
    msg_id = kernel.kc.execute("import asyncio\nprint('GO', flush=True)\nasyncio.run(asyncio.sleep(30))")
    deadline = time.monotonic() + TIMEOUT
    seen = []
    while "GO" not in stream_text(seen) and time.monotonic() < deadline:
        m = kernel.kc.get_iopub_msg(timeout=TIMEOUT)
        if m["parent_header"].get("msg_id") == msg_id:
            seen.append(m)
    kernel.km.interrupt_kernel()
    reply = kernel.shell_reply(msg_id)
    kernel.iopub_until_idle(msg_id)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    msgs = kernel.run_ok("asyncio.run(asyncio.sleep(0, 'fine'))")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'fine'"


def test_an_interrupt_while_asyncio_run_starts_its_loop(kernel):
    """The interrupt lands inside asyncio's loop start-up (forced: a SIGINT from the hook asyncio sets
    there). Raised in place, 3.13 left the loop marked as running and answered "RuntimeError: Cannot
    close a running event loop"; delivered as asyncio's own handler does, it is a KeyboardInterrupt."""
    code = (
        "import asyncio, os, signal, sys\n_hooks = sys.set_asyncgen_hooks\n"
        "def _interrupting(*args, **kwargs):\n    sys.set_asyncgen_hooks = _hooks\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n    return _hooks(*args, **kwargs)\n"
        "sys.set_asyncgen_hooks = _interrupting\n"
        "try:\n    asyncio.run(asyncio.sleep(30))\nfinally:\n    sys.set_asyncgen_hooks = _hooks")
    reply, msgs = kernel.execute(code, timeout=20)
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    msgs = kernel.run_ok("asyncio.run(asyncio.sleep(0, 'fine'))")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'fine'"


def test_an_interrupt_before_asyncio_run_starts_its_loop(kernel):
    """The interrupt lands in Runner.run after its task is made but before the loop runs (forced: a
    SIGINT from signal.getsignal, which Runner.run calls there). Cancelling the task then made the cell
    end in CancelledError (Runner.run resets its interrupt count after that point; seen in a CI run
    under load); raised in place, it is a KeyboardInterrupt."""
    code = (
        "import asyncio, os, signal\n_getsignal = signal.getsignal\n"
        "def _interrupting(*args):\n    signal.getsignal = _getsignal\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n    for _ in range(1000): pass\n"
        "    return _getsignal(*args)\n"
        "signal.getsignal = _interrupting\n"
        "try:\n    asyncio.run(asyncio.sleep(30))\nfinally:\n    signal.getsignal = _getsignal")
    reply, msgs = kernel.execute(code, timeout=20)
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    msgs = kernel.run_ok("asyncio.run(asyncio.sleep(0, 'fine'))")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'fine'"


def test_kernel_magics(kernel, tmp_path):
    text = stream_text(kernel.run_ok("%connect_info"))
    info = json.loads(text[:text.index("\n\n")])
    assert info["shell_port"] == kernel.km.shell_port and "key" in info
    (tmp_path / "notes.txt").write_text("line one\nline two\n")
    reply, _ = kernel.execute(f"%less {tmp_path / 'notes.txt'}")
    assert reply["content"]["payload"][0]["data"]["text/plain"] == "line one\nline two\n"
    out = stream_text(kernel.run_ok("%subshell"))
    assert "subshell id: None" in out and "subshell list: []" in out
    msgs = kernel.run_ok("%autosave 0")
    assert stream_text(msgs) == "Autosave disabled\n"


def test_attribute_completion_is_spelled_as_jedi_spells_it(kernel):
    # jedi answers `obj.na` from after the dot; IPython's own matcher (which answers when jedi runs out
    # of its time budget) from the dot: the reply is the same either way, as from ipykernel
    reply, _ = kernel.request("complete_request", {"code": "'abc'.up", "cursor_pos": 8})
    c = reply["content"]
    assert (c["cursor_start"], c["cursor_end"], c["matches"]) == (6, 8, ["upper"])


def test_run_until_complete_in_a_callback_of_a_cell_run_until_complete(kernel):
    """A turn of the kernel loop made from inside a cell (run_until_complete in a synchronous cell) may
    run callbacks an outer turn counted as ready: here a callback itself runs the loop again, and
    the turn that called it then finds fewer callbacks than it counted. Before the fix: IndexError
    ("pop from an empty deque") in the cell; at the kernel loop's own level, seen on 3.13t in CI, the
    same killed the kernel."""
    code = ("import asyncio\nloop = asyncio.get_event_loop()\n"
            "async def inner():\n    await asyncio.sleep(0.01)\n    return 'inner'\n"
            "seen = []\n"
            "def in_a_callback():\n    seen.append(loop.run_until_complete(inner()))\n"
            "async def outer():\n"
            "    loop.call_soon(in_a_callback)\n"
            "    for _ in range(3):\n        loop.call_soon(seen.append, 'after')\n"
            "    await asyncio.sleep(0.1)\n    return seen\n"
            "loop.run_until_complete(outer())")
    msgs = kernel.run_ok(code)
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == \
        "['after', 'after', 'after', 'inner']"
    assert stream_text(kernel.run_ok("print('alive')")) == "alive\n"
