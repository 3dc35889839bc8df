"""Kernel subshells (JEP 91): control messages, routing, concurrency, state, stdin, interrupts, lifecycle."""

import queue
import random
import time

import pytest

from harness import KernelHarness, of_type, stream_text


def control(kernel, msg_type, content=None):
    """A control request's reply content (iopub is left unread for the requests under test)."""
    return kernel.control(msg_type, content)["content"]


def create(kernel):
    return kernel.create_subshell()


def send(kernel, msg_type, content, subshell_id=None):
    return kernel.send(msg_type, content, subshell_id=subshell_id)


def execute(kernel, code, subshell_id=None, **kw):
    return kernel.submit(code, subshell_id, **kw)


def wait_all(kernel, msg_ids, timeout=30, no_reply=()):
    return kernel.wait_all(msg_ids, timeout, no_reply)


def run(kernel, code, subshell_id=None, **kw):
    msg_id = execute(kernel, code, subshell_id, **kw)
    replies, iopub = wait_all(kernel, [msg_id])
    return replies[msg_id], iopub[msg_id]


def test_kernel_info_advertises_subshells(kernel):
    reply, _ = kernel.request("kernel_info_request", {})
    assert "kernel subshells" in reply["content"]["supported_features"]


def test_create_list_delete(kernel):
    a, b = create(kernel), create(kernel)
    assert a != b
    listed = control(kernel, "list_subshell_request")["subshell_id"]
    assert {a, b} <= set(listed)
    assert control(kernel, "delete_subshell_request", {"subshell_id": a}) == {"status": "ok"}
    assert a not in control(kernel, "list_subshell_request")["subshell_id"]
    # deleting again, or an id that never existed, is an error that names it
    again = control(kernel, "delete_subshell_request", {"subshell_id": a})
    assert again["status"] == "error" and a in again["evalue"]
    control(kernel, "delete_subshell_request", {"subshell_id": b})


def test_request_for_unknown_subshell_gets_error_reply(kernel):
    msg_id = execute(kernel, "print('must not run')", subshell_id="no-such-subshell")
    replies, iopub = wait_all(kernel, [msg_id])
    content = replies[msg_id]["content"]
    assert content["status"] == "error" and "no-such-subshell" in content["evalue"]
    assert [m["content"].get("execution_state") for m in iopub[msg_id]] == ["busy", "idle"]
    kernel.run_ok("pass")


def test_subshells_run_concurrently_and_share_the_namespace(kernel):
    a, b = create(kernel), create(kernel)
    kernel.run_ok("shared_value = 21")
    t0 = time.monotonic()
    ids = [execute(kernel, "import time; time.sleep(1.5); out_a = shared_value * 2", a),
           execute(kernel, "import time; time.sleep(1.5); out_b = shared_value + 1", b)]
    replies, _ = wait_all(kernel, ids)
    elapsed = time.monotonic() - t0
    assert all(r["content"]["status"] == "ok" for r in replies.values())
    assert elapsed < 2.8, elapsed  # ~1.5 s, not 3
    assert stream_text(kernel.run_ok("print(out_a, out_b)")) == "42 22\n"
    for s in (a, b):
        control(kernel, "delete_subshell_request", {"subshell_id": s})


def test_subshell_counts_history_and_parent_in_out(kernel):
    sub = create(kernel)
    parent_before, _ = kernel.execute("parent_marker = 1")
    n = parent_before["content"]["execution_count"]
    r1, msgs1 = run(kernel, "10 + 1", sub)
    r2, msgs2 = run(kernel, "10 + 2", sub)
    assert r1["content"]["execution_count"] == 1 and r2["content"]["execution_count"] == 2
    assert of_type(msgs1, "execute_input")[0]["content"]["execution_count"] == 1
    assert of_type(msgs2, "execute_result")[0]["content"]["execution_count"] == 2
    parent_after, _ = kernel.execute("print(len([c for c in In if '10 + ' in c]), 11 in Out.values(), 12 in Out.values())")
    assert parent_after["content"]["execution_count"] == n + 1  # the subshell did not advance it
    # (the check cell itself contains '10 + ' once)
    hist_id = send(kernel, "history_request", {"hist_access_type": "tail", "n": 10, "raw": True,
                                               "output": False}, sub)
    replies, _ = wait_all(kernel, [hist_id])
    assert [h[2] for h in replies[hist_id]["content"]["history"]] == ["10 + 1", "10 + 2"]
    control(kernel, "delete_subshell_request", {"subshell_id": sub})


def test_parent_out_untouched_by_subshell(kernel):
    sub = create(kernel)
    run(kernel, "'from-subshell'", sub)
    msgs = kernel.run_ok("print('from-subshell' in Out.values(), _ == 'from-subshell')")
    assert stream_text(msgs) == "False False\n"
    control(kernel, "delete_subshell_request", {"subshell_id": sub})


def test_status_and_output_carry_the_subshell_request(kernel):
    sub = create(kernel)
    code = ("import threading\nprint('direct')\n"
            "t = threading.Thread(target=lambda: print('from thread'))\nt.start(); t.join()")
    reply, msgs = run(kernel, code, sub)
    assert reply["content"]["status"] == "ok"
    assert msgs[0]["content"]["execution_state"] == "busy"
    assert msgs[-1]["content"]["execution_state"] == "idle"
    assert stream_text(msgs) == "direct\nfrom thread\n"
    control(kernel, "delete_subshell_request", {"subshell_id": sub})


def test_two_concurrent_input_prompts(kernel):
    a, b = create(kernel), create(kernel)
    ida = execute(kernel, "ans_a = input('A? ')", a, allow_stdin=True)
    idb = execute(kernel, "ans_b = input('B? ')", b, allow_stdin=True)
    prompts = {}
    deadline = time.monotonic() + 20
    while len(prompts) < 2 and time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_stdin_msg(timeout=0.5)
        except queue.Empty:
            continue
        prompts[msg["content"]["prompt"]] = msg
    assert set(prompts) == {"A? ", "B? "}
    assert prompts["A? "]["parent_header"]["msg_id"] == ida
    for prompt, value in (("B? ", "bee"), ("A? ", "ay")):  # answer in the other order
        reply = kernel.kc.session.msg("input_reply", {"value": value}, parent=prompts[prompt]["header"])
        kernel.kc.stdin_channel.send(reply)
    replies, _ = wait_all(kernel, [ida, idb])
    assert all(r["content"]["status"] == "ok" for r in replies.values())
    assert stream_text(kernel.run_ok("print(ans_a, ans_b)")) == "ay bee\n"
    for s in (a, b):
        control(kernel, "delete_subshell_request", {"subshell_id": s})


@pytest.mark.parametrize("mode", ["signal", "message"])
def test_interrupt_reaches_busy_subshell_and_awaiting_parent(kernel, mode):
    sub = create(kernel)
    busy = execute(kernel, "while True:\n    pass", sub)
    waiting = execute(kernel, "import asyncio\nawait asyncio.sleep(30)")
    time.sleep(0.7)
    t0 = time.monotonic()
    if mode == "signal":
        kernel.km.interrupt_kernel()
    else:
        control(kernel, "interrupt_request")
    replies, _ = wait_all(kernel, [busy, waiting], timeout=15)
    assert time.monotonic() - t0 < 5
    for msg_id in (busy, waiting):
        assert replies[msg_id]["content"]["status"] == "error"
        assert replies[msg_id]["content"]["ename"] == "KeyboardInterrupt"
    # both shells keep working
    assert run(kernel, "1", sub)[0]["content"]["status"] == "ok"
    kernel.run_ok("pass")
    control(kernel, "delete_subshell_request", {"subshell_id": sub})


def test_idle_subshell_answers_completion_while_parent_runs(kernel):
    sub = create(kernel)
    long_cell = execute(kernel, "import time; time.sleep(2)")
    time.sleep(0.3)
    t0 = time.monotonic()
    cid = send(kernel, "complete_request", {"code": "import collec", "cursor_pos": 13}, sub)
    iid = send(kernel, "inspect_request", {"code": "len", "cursor_pos": 3, "detail_level": 0}, sub)
    replies, _ = wait_all(kernel, [cid, iid], timeout=10)
    assert time.monotonic() - t0 < 1.5
    assert "collections" in replies[cid]["content"]["matches"]
    assert replies[iid]["content"]["found"] is True
    wait_all(kernel, [long_cell])
    control(kernel, "delete_subshell_request", {"subshell_id": sub})


def test_deleting_a_busy_subshell_stops_it():
    k = KernelHarness()
    try:
        sub = create(k)
        busy = execute(k, "while True:\n    pass", sub)
        time.sleep(0.5)
        assert control(k, "delete_subshell_request", {"subshell_id": sub}) == {"status": "ok"}
        replies, _ = wait_all(k, [busy], timeout=10)
        assert replies[busy]["content"]["ename"] == "KeyboardInterrupt"
        msgs = k.run_ok("import threading\nprint(sum(t.name.startswith('ipymini-subshell') "
                        "for t in threading.enumerate()))")
        assert stream_text(msgs) == "0\n"
    finally:
        k.stop()


def test_create_delete_cycles_leave_nothing_behind():
    k = KernelHarness()
    try:
        count = ("import os, threading\n"  # (a short-lived history-write timer is not a leak)
                 "print(sum(not isinstance(t, threading.Timer) for t in threading.enumerate()), "
                 "len(os.listdir('/proc/self/fd')))")
        # warm up first: what loads once stays (3.14's libffi keeps its own .so open from the first
        # ctypes closure on: the kernel loads ctypes after its first cell)
        k.run_ok(count)
        control(k, "delete_subshell_request", {"subshell_id": create(k)})
        before = stream_text(k.run_ok(count)).split()
        for _ in range(100):
            sub = create(k)
            control(k, "delete_subshell_request", {"subshell_id": sub})
        after = stream_text(k.run_ok(count)).split()
        assert after[0] == before[0]  # threads back to baseline
        assert int(after[1]) <= int(before[1])  # no descriptors leaked (one may be transient)
    finally:
        k.stop()


def test_randomized_stress_every_request_gets_one_reply_and_one_idle():
    k = KernelHarness()
    try:
        rng = random.Random(1234)
        subs = [None] + [create(k) for _ in range(3)]
        ids, expected = [], {}
        for i in range(120):
            target = rng.choice(subs)
            kind = rng.random()
            if kind < 0.6:
                msg_id = execute(k, f"stress_{i} = {i}\nprint({i})", target)
                expected[msg_id] = f"{i}\n"
            elif kind < 0.8:
                msg_id = send(k, "complete_request", {"code": "stress_", "cursor_pos": 7}, target)
            else:
                msg_id = send(k, "kernel_info_request", {}, target)
            ids.append(msg_id)
            if rng.random() < 0.1:
                time.sleep(0.01)
        replies, iopub = wait_all(k, ids, timeout=60)
        assert set(replies) == set(ids)
        for msg_id, text in expected.items():
            assert replies[msg_id]["content"]["status"] == "ok"
            assert stream_text(iopub[msg_id]) == text
        assert stream_text(k.run_ok("print(sum(1 for n in dir() if n.startswith('stress_')))")) == \
            f"{len(expected)}\n"
    finally:
        k.stop()


def test_interrupt_ends_input_wait_in_a_subshell(kernel):
    sub = create(kernel)
    msg_id = execute(kernel, "input('never answered? ')", sub, allow_stdin=True)
    kernel.kc.get_stdin_msg(timeout=10)  # the prompt is out; do not answer it
    kernel.km.interrupt_kernel()
    replies, _ = wait_all(kernel, [msg_id], timeout=10)
    assert replies[msg_id]["content"]["ename"] == "KeyboardInterrupt"
    assert run(kernel, "1", sub)[0]["content"]["status"] == "ok"
    control(kernel, "delete_subshell_request", {"subshell_id": sub})


def test_comm_messages_default_to_the_parent_shell(kernel):
    """The documented rule: a comm message that names a subshell still runs on the parent shell,
    after the parent's running cell, so callbacks never race the parent's user code (opt in to
    concurrency with IPYMINI_COMMS_ON_SUBSHELLS=1; see test_comms)."""
    sub = create(kernel)
    msgs = kernel.run_ok(
        "import comm, threading\nrule_events = []\nparent_running = False\n"
        "rule_comm = comm.create_comm(target_name='rule-test')\n"
        "rule_comm.on_msg(lambda m: rule_events.append((threading.current_thread().name, parent_running)))")
    [opened] = of_type(msgs, "comm_open")
    comm_id = opened["content"]["comm_id"]
    long_cell = execute(kernel, "parent_running = True\nimport time; time.sleep(1.5)\nparent_running = False")
    time.sleep(0.4)
    comm_msg = send(kernel, "comm_msg", {"comm_id": comm_id, "data": {"x": 1}}, sub)
    wait_all(kernel, [long_cell, comm_msg], no_reply=[comm_msg])
    assert stream_text(kernel.run_ok("print(rule_events)")) == "[('MainThread', False)]\n"
    control(kernel, "delete_subshell_request", {"subshell_id": sub})


def test_parent_requests_keep_their_order_when_the_io_thread_starts_reading_shell():
    """Without subshells the main loop alone reads shell; once one exists the IO thread reads too while
    the parent shell is busy. Requests queued around that moment still run in the order they were
    sent, and an error still aborts what was queued behind it."""
    k = KernelHarness()
    try:
        k.run_ok("order = []")
        ids = [execute(k, "import time; time.sleep(0.5); order.append(0)")]
        ids += [execute(k, f"order.append({i})") for i in range(1, 20)]
        create(k)  # while the first cell still runs
        ids += [execute(k, f"order.append({i})") for i in range(20, 40)]
        replies, _ = wait_all(k, ids)
        assert all(replies[i]["content"]["status"] == "ok" for i in ids)
        assert stream_text(k.run_ok("print(order == list(range(40)))")) == "True\n"
        failing = execute(k, "import time; time.sleep(0.3); 1/0")
        queued = [execute(k, "order.append('must not run')") for _ in range(3)]
        replies, _ = wait_all(k, [failing, *queued])
        assert replies[failing]["content"]["status"] == "error"
        assert [replies[i]["content"]["status"] for i in queued] == ["aborted"] * 3
        assert stream_text(k.run_ok("print(len(order))")) == "40\n"
        # the parent shell going busy and idle again and again (reading switching each time), with
        # subshell requests in between: still in order
        sub = create(k)
        k.run_ok("order = []")
        ids = []
        for i in range(150):
            ids.append(execute(k, f"order.append({i})" + ("; time.sleep(0.01)" if i % 10 == 0 else "")))
            if i % 7 == 0:
                ids.append(execute(k, "1", sub))
                time.sleep(0.002)
        replies, _ = wait_all(k, ids, timeout=60)
        assert all(r["content"]["status"] == "ok" for r in replies.values())
        assert stream_text(k.run_ok("print(order == list(range(150)))")) == "True\n"
    finally:
        k.stop()


def test_deleting_a_subshell_still_answers_every_request_it_was_sent(kernel):
    sub = create(kernel)
    # cells that await hand the loop back between requests, so the stop lands with requests queued
    ids = [execute(kernel, "import asyncio; await asyncio.sleep(0.1)", sub, stop_on_error=False)
           if i % 2 else send(kernel, "kernel_info_request", {}, sub) for i in range(12)]
    time.sleep(0.05)
    assert control(kernel, "delete_subshell_request", {"subshell_id": sub})["status"] == "ok"
    late = execute(kernel, "x = 'late'", sub)  # after the deletion: refused, still answered
    replies, iopub = wait_all(kernel, ids + [late], timeout=20)
    for msg_id in ids + [late]:
        assert [m["content"]["execution_state"] for m in of_type(iopub[msg_id], "status")] == \
            ["busy", "idle"]
    assert replies[late]["content"]["ename"] == "UnknownSubshellError"
    assert {replies[i]["content"]["status"] for i in ids} <= {"ok", "aborted", "error"}
