"""Comms and ipywidgets through the real kernel: both directions, buffers, output routing, bad input."""

from __future__ import annotations

import time

import numpy as np
import pytest
from harness import TIMEOUT, KernelHarness, of_type, stream_text
from harness import value as evaluate

WIDGET_VERSION = {"version": "2.1.0"}


def send_comm(kernel, msg_type: str, content: dict, buffers=None, metadata=None) -> tuple[str, list]:
    """Send a comm message from the client; returns (msg_id, its iopub messages through idle)."""
    msg = kernel.kc.session.msg(msg_type, content, metadata=metadata or {})
    if buffers:
        msg["buffers"] = buffers
    kernel.kc.shell_channel.send(msg)
    msg_id = msg["header"]["msg_id"]
    return msg_id, kernel.iopub_until_idle(msg_id)


def comm_opens(msgs: list, target: str | None = None) -> list:
    return [m for m in of_type(msgs, "comm_open") if target is None or m["content"]["target_name"] == target]


def model_state_updates(msgs: list, comm_id: str) -> list:
    return [m["content"]["data"]["state"] for m in of_type(msgs, "comm_msg")
            if m["content"]["comm_id"] == comm_id and m["content"]["data"].get("method") == "update"]


def assert_kernel_alive(kernel) -> None:
    assert stream_text(kernel.run_ok("print('still here')")) == "still here\n"


def test_comm_package_returns_ipymini_implementations(kernel):
    kernel.run_ok("import comm, ipymini.comms")
    assert evaluate(kernel, "type(comm.create_comm(target_name='t.probe')).__module__") == "'ipymini.comms'"
    assert evaluate(kernel, "comm.get_comm_manager() is get_ipython().kernel.comm_manager") == "True"
    assert evaluate(kernel, "type(comm.get_comm_manager()).__module__") == "'ipymini.comms'"


def test_slider_opens_comm_with_model_state(kernel):
    reply, msgs = kernel.execute("import ipywidgets as w\nslider = w.IntSlider(value=3, max=10)\nslider")
    assert reply["content"]["status"] == "ok"
    cell = reply["parent_header"]["msg_id"]
    opens = comm_opens(msgs, "jupyter.widget")
    assert opens, [m["msg_type"] for m in msgs]
    model_id = evaluate(kernel, "slider.model_id").strip("'")
    mine = [m for m in opens if m["content"]["comm_id"] == model_id]
    assert len(mine) == 1
    state = mine[0]["content"]["data"]["state"]
    assert state["_model_name"] == "IntSliderModel" and state["value"] == 3 and state["max"] == 10
    assert mine[0]["parent_header"]["msg_id"] == cell
    view = of_type(msgs, "execute_result")[0]["content"]["data"]["application/vnd.jupyter.widget-view+json"]
    assert view["model_id"] == model_id


def test_update_from_client_changes_value_and_routes_callback_output(kernel):
    kernel.run_ok("import ipywidgets as w\ns2 = w.IntSlider(value=1)\n"
                  "s2.observe(lambda ch: print('moved', ch['old'], '->', ch['new']), names='value')")
    model_id = evaluate(kernel, "s2.model_id").strip("'")
    msg_id, msgs = send_comm(kernel, "comm_msg", {"comm_id": model_id, "data": {
        "method": "update", "state": {"value": 7}, "buffer_paths": []}})
    assert stream_text(msgs) == "moved 1 -> 7\n"
    assert all(m["parent_header"]["msg_id"] == msg_id for m in msgs)
    states = [m["content"]["execution_state"] for m in of_type(msgs, "status")]
    assert states == ["busy", "idle"]
    assert evaluate(kernel, "s2.value") == "7"


def test_interact_reruns_function_and_shows_output(kernel):
    msgs = kernel.run_ok("from ipywidgets import interact\n"
                         "@interact(x=2)\ndef f(x):\n    print('x is', x)\n")
    assert "x is 2" in stream_text(msgs)
    control = evaluate(kernel, "f.widget.children[0].model_id").strip("'")
    out_id = evaluate(kernel, "f.widget.out.model_id").strip("'")
    msg_id, msgs = send_comm(kernel, "comm_msg", {"comm_id": control, "data": {
        "method": "update", "state": {"value": 5}, "buffer_paths": []}})
    assert stream_text(msgs) == "x is 5\n"
    assert of_type(msgs, "stream")[0]["parent_header"]["msg_id"] == msg_id
    # the Output widget told the frontend to capture the messages of this comm_msg
    assert msg_id in [s.get("msg_id") for s in model_state_updates(msgs, out_id)]


def test_output_widget_captures_cell_output(kernel):
    kernel.run_ok("import ipywidgets as w\nout = w.Output()\ndisplay(out)")
    out_id = evaluate(kernel, "out.model_id").strip("'")
    reply, msgs = kernel.execute("with out:\n    print('captured')\n    display('shown')")
    assert reply["content"]["status"] == "ok"
    cell = reply["parent_header"]["msg_id"]
    assert stream_text(msgs) == "captured\n"
    assert [m["parent_header"]["msg_id"] for m in of_type(msgs, "stream") + of_type(msgs, "display_data")] \
        == [cell, cell]
    ids = [s["msg_id"] for s in model_state_updates(msgs, out_id) if "msg_id" in s]
    assert ids == [cell, ""]  # set on enter, cleared on exit


def test_numpy_buffers_round_trip_through_a_widget(kernel):
    kernel.run_ok(
        "import numpy as np, traitlets, ipywidgets as w\n"
        "class ArrayWidget(w.DOMWidget):\n"
        "    array = traitlets.Any().tag(sync=True,\n"
        "        to_json=lambda a, _: memoryview(np.ascontiguousarray(a, dtype='float64')),\n"
        "        from_json=lambda v, _: np.frombuffer(v, dtype='float64'))\n"
        "aw = ArrayWidget(array=np.arange(5.0))\n"
        "aw.observe(lambda ch: print('sum', ch['new'].sum()), names='array')")
    model_id = evaluate(kernel, "aw.model_id").strip("'")
    # kernel -> client: the state's array travels as a binary buffer
    _, msgs = kernel.execute("aw.array = np.arange(5.0) * 2")
    sent = [m for m in of_type(msgs, "comm_msg") if m["content"]["comm_id"] == model_id]
    assert sent and sent[0]["content"]["data"]["buffer_paths"] == [["array"]]
    assert np.array_equal(np.frombuffer(sent[0]["buffers"][0], dtype="float64"), np.arange(5.0) * 2)
    # client -> kernel
    values = np.array([1.5, 2.5, 3.0])
    _, msgs = send_comm(kernel, "comm_msg", {"comm_id": model_id, "data": {
        "method": "update", "state": {}, "buffer_paths": [["array"]]}}, buffers=[values.tobytes()])
    assert stream_text(msgs) == "sum 7.0\n", msgs
    assert evaluate(kernel, "aw.array.tolist()") == "[1.5, 2.5, 3.0]"


def test_plain_comm_from_kernel_both_directions_with_buffers(kernel):
    reply, msgs = kernel.execute(
        "import comm, numpy as np\n"
        "c = comm.create_comm(target_name='t.plain', data={'hello': 1}, buffers=[b'open'])\n"
        "got = []\n"
        "c.on_msg(lambda m: (got.append(m), print('got', m['content']['data'],"
        " [bytes(b) for b in m['buffers']])))\n"
        "c.on_close(lambda m: print('closed by client', m['content']['data']))\n"
        "c.send({'n': 2}, buffers=[np.arange(3, dtype='int32'), memoryview(b'xyz')])")
    assert reply["content"]["status"] == "ok"
    cell = reply["parent_header"]["msg_id"]
    (opened,) = comm_opens(msgs, "t.plain")
    comm_id = opened["content"]["comm_id"]
    assert opened["content"]["data"] == {"hello": 1} and opened["parent_header"]["msg_id"] == cell
    assert [bytes(b) for b in opened["buffers"]] == [b"open"]
    (sent,) = [m for m in of_type(msgs, "comm_msg") if m["content"]["comm_id"] == comm_id]
    assert sent["content"]["data"] == {"n": 2}
    assert [bytes(b) for b in sent["buffers"]] == [np.arange(3, dtype="int32").tobytes(), b"xyz"]

    _, msgs = send_comm(kernel, "comm_msg", {"comm_id": comm_id, "data": {"k": "v"}},
                        buffers=[b"\x00\x01", b"zz"])
    assert stream_text(msgs) == "got {'k': 'v'} [b'\\x00\\x01', b'zz']\n"
    assert evaluate(kernel, "type(got[0]['buffers'][0]).__name__") == "'memoryview'"

    assert comm_id in kernel.request("comm_info_request", {})[0]["content"]["comms"]
    _, msgs = send_comm(kernel, "comm_close", {"comm_id": comm_id, "data": {"bye": True}})
    assert stream_text(msgs) == "closed by client {'bye': True}\n"
    assert comm_id not in kernel.request("comm_info_request", {})[0]["content"]["comms"]
    # closed by the client: closing it in the kernel sends nothing more
    _, msgs = kernel.execute("c.close()")
    assert not of_type(msgs, "comm_close")


def test_client_opens_comm_to_registered_target(kernel):
    kernel.run_ok(
        "import comm\n"
        "def on_open(c, msg):\n"
        "    print('opened with', msg['content']['data'], [bytes(b) for b in msg['buffers']])\n"
        "    c.on_msg(lambda m: c.send({'echo': m['content']['data']}, buffers=m['buffers']))\n"
        "comm.get_comm_manager().register_target('t.echo', on_open)")
    comm_id = "client-echo-1"
    open_id, msgs = send_comm(kernel, "comm_open", {"comm_id": comm_id, "target_name": "t.echo",
                                                    "data": {"a": 1}}, buffers=[b"hi"])
    assert stream_text(msgs) == "opened with {'a': 1} [b'hi']\n"
    assert of_type(msgs, "stream")[0]["parent_header"]["msg_id"] == open_id
    assert kernel.request("comm_info_request", {"target_name": "t.echo"})[0]["content"]["comms"] == {
        comm_id: {"target_name": "t.echo"}}
    msg_id, msgs = send_comm(kernel, "comm_msg", {"comm_id": comm_id, "data": {"ping": 3}},
                             buffers=[b"\xff" * 10])
    (echo,) = of_type(msgs, "comm_msg")
    assert echo["content"] == {"comm_id": comm_id, "data": {"echo": {"ping": 3}}}
    assert echo["parent_header"]["msg_id"] == msg_id and bytes(echo["buffers"][0]) == b"\xff" * 10
    # a second open of the same id is dropped: the target is not called, and the dropped end sends
    # no close for the open comm when it is collected
    _, msgs = send_comm(kernel, "comm_open", {"comm_id": comm_id, "target_name": "t.echo", "data": {}})
    assert not of_type(msgs, "stream") and not of_type(msgs, "comm_close")
    later = kernel.kc.execute("import gc; gc.collect()")  # a close would come before this cell ends
    closes = of_type(kernel.iopub_until_idle(later, keep_all=True), "comm_close")
    assert comm_id not in [m["content"]["comm_id"] for m in closes]  # (other tests' comms may close)
    _, msgs = send_comm(kernel, "comm_msg", {"comm_id": comm_id, "data": {"ping": 4}})
    assert [m["content"]["data"] for m in of_type(msgs, "comm_msg")] == [{"echo": {"ping": 4}}]
    # a client comm to a target nobody registered is closed right back
    _, msgs = send_comm(kernel, "comm_open", {"comm_id": "nobody-1", "target_name": "t.nobody",
                                              "data": {}})
    assert [m["content"]["comm_id"] for m in of_type(msgs, "comm_close")] == ["nobody-1"]
    assert "nobody-1" not in kernel.request("comm_info_request", {})[0]["content"]["comms"]


def test_comm_info_lists_widgets_with_and_without_target(kernel):
    kernel.run_ok("import ipywidgets as w, comm\nlisted = w.Button(description='b')\n"
                  "other = comm.create_comm(target_name='t.other')")
    model_id = evaluate(kernel, "listed.model_id").strip("'")
    other_id = evaluate(kernel, "other.comm_id").strip("'")
    for channel in ("shell", "control"):
        reply, _ = kernel.request("comm_info_request", {}, channel=channel)
        assert reply["content"]["status"] == "ok"
        comms = reply["content"]["comms"]
        assert comms[model_id] == {"target_name": "jupyter.widget"}
        assert comms[other_id] == {"target_name": "t.other"}
    reply, _ = kernel.request("comm_info_request", {"target_name": "jupyter.widget"})
    comms = reply["content"]["comms"]
    assert model_id in comms and other_id not in comms
    assert {v["target_name"] for v in comms.values()} == {"jupyter.widget"}
    assert kernel.request("comm_info_request", {"target_name": "t.none"})[0]["content"]["comms"] == {}
    kernel.run_ok("listed.close()")
    assert model_id not in kernel.request("comm_info_request", {})[0]["content"]["comms"]


def test_unknown_and_malformed_comm_messages_are_dropped(kernel):
    bad = [
        ("comm_msg", {"comm_id": "no-such-comm", "data": {"method": "update", "state": {}}}),
        ("comm_close", {"comm_id": "no-such-comm", "data": {}}),
        ("comm_msg", {"data": {}}),  # no comm_id
        ("comm_msg", {"comm_id": 5, "data": {}}),
        ("comm_open", {"comm_id": "x-1"}),  # no target_name
        ("comm_open", {"comm_id": "x-2", "target_name": "t.echo", "data": "not an object"}),
        ("comm_msg", {"comm_id": "no-such-comm", "data": [1, 2]}),
    ]
    for msg_type, content in bad:
        _, msgs = send_comm(kernel, msg_type, content)
        assert [m["msg_type"] for m in msgs] == ["status", "status"], (msg_type, content, msgs)
    comms = kernel.request("comm_info_request", {})[0]["content"]["comms"]
    assert "x-1" not in comms and "x-2" not in comms
    assert_kernel_alive(kernel)


def test_exception_in_callback_is_an_error_output(kernel):
    kernel.run_ok("import ipywidgets as w\nboom = w.IntSlider()\n"
                  "def explode(ch):\n    raise ValueError('callback failed')\n"
                  "boom.observe(explode, names='value')")
    model_id = evaluate(kernel, "boom.model_id").strip("'")
    msg_id, msgs = send_comm(kernel, "comm_msg", {"comm_id": model_id, "data": {
        "method": "update", "state": {"value": 4}, "buffer_paths": []}})
    (err,) = of_type(msgs, "error")
    assert err["content"]["ename"] == "ValueError" and "callback failed" in err["content"]["evalue"]
    assert err["parent_header"]["msg_id"] == msg_id
    # a plain comm's on_msg callback that raises
    kernel.run_ok("import comm\nraiser = comm.create_comm(target_name='t.raise')\n"
                  "raiser.on_msg(lambda m: 1 / 0)")
    raiser_id = evaluate(kernel, "raiser.comm_id").strip("'")
    msg_id, msgs = send_comm(kernel, "comm_msg", {"comm_id": raiser_id, "data": {}})
    (err,) = of_type(msgs, "error")
    assert err["content"]["ename"] == "ZeroDivisionError" and err["parent_header"]["msg_id"] == msg_id
    # a widget message without a method is the widget's own error, shown the same way
    _, msgs = send_comm(kernel, "comm_msg", {"comm_id": model_id, "data": {"state": {}}})
    assert [m["content"]["ename"] for m in of_type(msgs, "error")] == ["KeyError"]
    # a failing comm_open target: error output, and the comm is closed back
    kernel.run_ok("def bad_target(c, msg):\n    raise RuntimeError('no thanks')\n"
                  "get_ipython().kernel.comm_manager.register_target('t.bad', bad_target)")
    _, msgs = send_comm(kernel, "comm_open", {"comm_id": "bad-1", "target_name": "t.bad", "data": {}})
    assert [m["content"]["ename"] for m in of_type(msgs, "error")] == ["RuntimeError"]
    assert [m["content"]["comm_id"] for m in of_type(msgs, "comm_close")] == ["bad-1"]
    assert evaluate(kernel, "boom.value") == "4"
    assert_kernel_alive(kernel)


def test_comm_opened_from_a_thread_belongs_to_its_cell(kernel):
    reply, msgs = kernel.execute(
        "import threading, comm\nbox = []\n"
        "t = threading.Thread(target=lambda: box.append(comm.create_comm(target_name='t.thread')))\n"
        "t.start(); t.join()")
    (opened,) = comm_opens(msgs, "t.thread")
    assert opened["parent_header"]["msg_id"] == reply["parent_header"]["msg_id"]


def test_late_frontend_finds_widgets_and_gets_their_state():
    """A frontend that connects after a widget was made finds it in comm_info and asks ipywidgets'
    control comm for the states (what JupyterLab does when it reopens a notebook)."""
    k = KernelHarness()
    try:
        k.run_ok("import ipywidgets as w\nlate = w.FloatSlider(value=2.5)\nlate")
        model_id = evaluate(k, "late.model_id").strip("'")
        kc2 = k.km.client()
        kc2.start_channels()
        try:
            kc2.wait_for_ready(timeout=TIMEOUT)
            late = KernelHarness.__new__(KernelHarness)
            late.km, late.kc = k.km, kc2
            late.drain_iopub()
            comms = late.request("comm_info_request", {"target_name": "jupyter.widget"})[0]["content"]["comms"]
            assert comms[model_id] == {"target_name": "jupyter.widget"}
            send_comm(late, "comm_open", {"comm_id": "control-1", "target_name": "jupyter.widget.control",
                                          "data": {}}, metadata={"version": "1.0.0"})
            _, msgs = send_comm(late, "comm_msg", {"comm_id": "control-1",
                                                   "data": {"method": "request_states"}})
            (states,) = [m for m in of_type(msgs, "comm_msg") if m["content"]["comm_id"] == "control-1"]
            assert states["content"]["data"]["method"] == "update_states"
            assert states["content"]["data"]["states"][model_id]["state"]["value"] == 2.5
        finally:
            kc2.stop_channels()
    finally:
        k.stop()


def test_interrupt_stops_a_stuck_callback():
    k = KernelHarness()
    try:
        k.run_ok("import comm, time\nstuck = comm.create_comm(target_name='t.stuck')\n"
                 "stuck.on_msg(lambda m: time.sleep(60))")
        comm_id = evaluate(k, "stuck.comm_id").strip("'")
        msg = k.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {}})
        k.kc.shell_channel.send(msg)
        time.sleep(0.5)
        k.km.interrupt_kernel()
        msgs = k.iopub_until_idle(msg["header"]["msg_id"], timeout=10)
        assert [m["content"]["ename"] for m in of_type(msgs, "error")] == ["KeyboardInterrupt"]
        assert_kernel_alive(k)
    finally:
        k.stop()


def test_comm_manager_table_is_thread_safe():
    """Unit test of the table: many threads registering, listing and closing at once."""
    import threading

    import comm

    from ipymini.comms import Comm, CommManager, install

    saved = comm.create_comm, comm.get_comm_manager
    manager = CommManager()
    install(manager)
    try:
        errors = []

        def churn(i):
            try:
                for j in range(200):
                    c = Comm(target_name=f"t{i % 2}", comm_id=f"{i}-{j}")
                    manager.comms_info("t0")
                    c.close()
            except Exception as e:  # pragma: no cover - the assertion below reports it
                errors.append(e)

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=TIMEOUT)
        assert not errors and manager.comms_info() == {}
        keep = Comm(target_name="t.keep", comm_id="keep")
        assert manager.comms_info() == {"keep": {"target_name": "t.keep"}}
        assert manager.comms_info("other") == {}
        keep.close()
    finally:
        comm.create_comm, comm.get_comm_manager = saved
        install.__globals__["_manager"] = None


@pytest.mark.parametrize("value", [b"ab", bytearray(b"ab"), memoryview(b"ab"), np.array([97, 98], "uint8"),
                                   np.array([97, 0, 98, 0], "uint8")[::2]])
def test_as_frames_copies_buffers_to_bytes(value):
    from ipymini.comms import as_frames

    assert as_frames([value]) == [b"ab"]


def test_async_cell_can_await_a_widget_change(kernel):
    """Comm messages are handled while an async cell awaits (ipykernel does the same), so a cell can
    wait for the user to move a slider; a failing callback meanwhile does not fail the cell."""
    kernel.run_ok("import asyncio, ipywidgets as w\nwaiting = w.IntSlider()\n"
                  "fut = asyncio.get_running_loop().create_future()\n"
                  "def on_value(ch):\n"
                  "    if ch['new'] == 13:\n        raise ValueError('unlucky')\n"
                  "    fut.done() or fut.set_result(ch['new'])\n"
                  "waiting.observe(on_value, names='value')")
    model_id = evaluate(kernel, "waiting.model_id").strip("'")
    cell_id = kernel.kc.execute("print('got', await asyncio.wait_for(fut, 15))")
    time.sleep(0.3)  # let the cell start awaiting
    for value in (13, 9):
        msg_id, msgs = send_comm(kernel, "comm_msg", {"comm_id": model_id, "data": {
            "method": "update", "state": {"value": value}, "buffer_paths": []}})
        assert [m["content"]["ename"] for m in of_type(msgs, "error")] == (["ValueError"] if value == 13 else [])
    reply = kernel.shell_reply(cell_id)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert stream_text(kernel.iopub_until_idle(cell_id)) == "got 9\n"


def test_garbage_collected_comm_closes_through_the_loop():
    """A comm collected while still open sends its comm_close from the kernel's loop, never from
    inside the collector (which may run while the iopub queue's lock is held)."""
    import gc

    import comm

    from ipymini.comms import Comm, CommManager, install

    class FakePublisher:
        def __init__(self):
            self.published, self.scheduled = [], []

        def publish(self, msg_type, content, **kwargs):
            self.published.append((msg_type, content))

        def run_soon(self, fn, *args):
            self.scheduled.append((fn, args))

    saved = comm.create_comm, comm.get_comm_manager
    fake = FakePublisher()
    manager = CommManager(fake, fake.run_soon)
    install(manager)
    try:
        c = Comm(target_name="t.gc", comm_id="gc-1")
        assert fake.published == [("comm_open", {"data": {}, "comm_id": "gc-1", "target_name": "t.gc",
                                                 "target_module": None})]
        manager.unregister_comm(c)
        del c
        gc.collect()
        assert len(fake.published) == 1
        ((fn, args),) = fake.scheduled
        fn(*args)
        assert fake.published[-1] == ("comm_close", {"data": {}, "comm_id": "gc-1"})
    finally:
        comm.create_comm, comm.get_comm_manager = saved
        install.__globals__["_manager"] = None


def test_comm_messages_on_a_subshell_thread():
    """With IPYMINI_COMMS_ON_SUBSHELLS=1 a comm message for a subshell runs on that subshell's thread,
    while the parent shell is busy with a cell; its output and replies belong to the message."""
    import queue

    k = KernelHarness(env={"IPYMINI_COMMS_ON_SUBSHELLS": "1"})
    try:
        k.run_ok("import comm, threading\nsc = comm.create_comm(target_name='t.sub')\n"
                 "sc.on_msg(lambda m: (print('on', threading.current_thread().name), sc.send({'back': 1})))")
        comm_id = evaluate(k, "sc.comm_id").strip("'")
        reply, _ = k.request("create_subshell_request", {}, channel="control")
        sid = reply["content"]["subshell_id"]
        cell = k.kc.execute("import time; time.sleep(4)")
        time.sleep(0.3)
        msg = k.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": {}})
        msg["header"]["subshell_id"] = sid
        k.kc.shell_channel.send(msg)
        msgs = k.iopub_until_idle(msg["header"]["msg_id"])
        with pytest.raises(queue.Empty):
            k.kc.get_shell_msg(timeout=0)  # the parent's cell is still running
        assert stream_text(msgs).startswith("on ipymini-subshell-")
        (back,) = of_type(msgs, "comm_msg")
        assert back["content"]["data"] == {"back": 1}
        assert back["parent_header"]["msg_id"] == msg["header"]["msg_id"]
        assert k.shell_reply(cell)["content"]["status"] == "ok"
    finally:
        k.stop()
