"""Protocol plumbing: kernel_info, connect, control while busy, heartbeat, stop_on_error, bad input."""

import json
import os
import sys
import time

import zmq
from jupyter_client.session import Session

from harness import KernelHarness, of_type, stream_text


def test_kernel_info_content(kernel):
    reply, msgs = kernel.request("kernel_info_request", {})
    c = reply["content"]
    assert c["status"] == "ok"
    assert c["protocol_version"] == "5.6"
    assert c["implementation"] == "ipymini"
    assert c["implementation_version"]
    li = c["language_info"]
    assert li["name"] == "python"
    assert li["version"] == ".".join(map(str, sys.version_info[:3]))
    assert li["pygments_lexer"] == "ipython3"
    assert li["codemirror_mode"] == {"name": "ipython", "version": 3}
    assert li["file_extension"] == ".py" and li["mimetype"] == "text/x-python"
    assert "IPython" in c["banner"]
    assert c["help_links"] and all("url" in link for link in c["help_links"])
    assert isinstance(c["supported_features"], list)


def test_connect_and_comm_info(kernel):
    reply, _ = kernel.request("connect_request", {})
    info = kernel.km.get_connection_info()
    for ch in ("shell", "iopub", "stdin", "hb", "control"):
        assert reply["content"][f"{ch}_port"] == info[f"{ch}_port"]
    reply, _ = kernel.request("comm_info_request", {})
    assert reply["content"] == {"status": "ok", "comms": {}}


def test_control_answers_while_a_cell_runs(kernel):
    started = time.monotonic()
    msg_id = kernel.kc.execute("import time; time.sleep(3)")
    time.sleep(0.3)
    t0 = time.monotonic()
    reply, _ = kernel.request("kernel_info_request", {}, channel="control", timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert reply["content"]["status"] == "ok"
    # the heartbeat echoes while the cell runs (pinged directly: the client's own heartbeat thread
    # counts a beat only after a whole 1 s round, which a busy machine can miss)
    info = kernel.km.get_connection_info()
    hb = zmq.Context.instance().socket(zmq.REQ)
    hb.linger = 0
    hb.connect(f"{info['transport']}://{info['ip']}:{info['hb_port']}")
    hb.send(b"ping")
    assert hb.poll(2000) and hb.recv() == b"ping"
    assert time.monotonic() - started < 3  # the cell was still sleeping
    hb.close()
    kernel.shell_reply(msg_id, timeout=10)
    kernel.iopub_until_idle(msg_id)


def test_debug_request_is_answered_at_once(kernel):
    # JupyterLab sends debug_request(evaluate) on Tab even with the debugger off
    reply = kernel.control("debug_request", {"type": "request", "seq": 7, "command": "evaluate",
                                             "arguments": {"expression": "x"}}, timeout=5)
    assert reply["msg_type"] == "debug_reply"
    assert reply["content"]["success"] is False
    kernel.run_ok("pass")


def test_stop_on_error_aborts_queued_executes(kernel):
    first = kernel.kc.execute("import time; time.sleep(0.5); raise RuntimeError('stop')")
    queued = [kernel.kc.execute(f"executed_{i} = True") for i in range(2)]
    info = kernel.kc.kernel_info()  # not an execute: answered normally
    assert kernel.shell_reply(first)["content"]["status"] == "error"
    for msg_id in queued:
        reply = kernel.shell_reply(msg_id)
        assert reply["content"]["status"] == "aborted"
    assert kernel.shell_reply(info)["content"]["status"] == "ok"
    kernel.drain_iopub()
    msgs = kernel.run_ok("print('executed_0' in dir())")
    assert stream_text(msgs) == "False\n"


def test_stop_on_error_false_runs_queued(kernel):
    first = kernel.kc.execute("import time; time.sleep(0.3); raise RuntimeError('go on')", stop_on_error=False)
    nxt = kernel.kc.execute("ran_after = 1")
    assert kernel.shell_reply(first)["content"]["status"] == "error"
    assert kernel.shell_reply(nxt)["content"]["status"] == "ok"
    kernel.drain_iopub()


def test_requests_after_the_abort_window_run(kernel):
    kernel.execute("raise ValueError('x')")
    reply, _ = kernel.execute("after_error = 1")
    assert reply["content"]["status"] == "ok"


# -- bad input: nothing executes, the kernel keeps serving --

def _raw_shell(kernel, key=None):
    info = kernel.km.get_connection_info()
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"{info['transport']}://{info['ip']}:{info['shell_port']}")
    session = Session(key=info["key"] if key is None else key, signature_scheme=info["signature_scheme"])
    return sock, session


def _recv_reply(sock, session, timeout=5.0):
    if not sock.poll(timeout * 1000):
        return None
    idents, frames = session.feed_identities(sock.recv_multipart())
    return session.deserialize(frames)


def test_wrong_signature_is_never_executed(kernel, tmp_path):
    sentinel = tmp_path / "wrong-key"
    sock, bad = _raw_shell(kernel, key=b"not-the-key")
    bad.send(sock, "execute_request", {"code": f"open({str(sentinel)!r}, 'w').close()", "silent": False})
    assert _recv_reply(sock, bad, timeout=1.0) is None
    # a missing signature is dropped too
    good_sock, good = _raw_shell(kernel)
    msg = good.msg("execute_request", {"code": f"open({str(sentinel)!r}, 'w').close()"})
    frames = good.serialize(msg)
    frames[1] = b""  # the signature frame
    good_sock.send_multipart(frames)
    assert _recv_reply(good_sock, good, timeout=1.0) is None
    # a replayed (duplicate-signature) message is dropped
    msg = good.msg("kernel_info_request", {})
    frames = good.serialize(msg)
    good_sock.send_multipart(frames)
    assert _recv_reply(good_sock, good)["msg_type"] == "kernel_info_reply"
    good_sock.send_multipart(frames)
    assert _recv_reply(good_sock, good, timeout=1.0) is None
    kernel.run_ok("pass")
    assert not sentinel.exists()
    sock.close()
    good_sock.close()


def test_malformed_frames_and_json(kernel, tmp_path):
    sock, session = _raw_shell(kernel)
    sock.send_multipart([b"garbage"])
    sock.send_multipart([b"<IDS|MSG>"])
    sock.send_multipart([b"<IDS|MSG>", b"sig", b"{", b"}", b"{}", b"{}"])
    # a valid signature over invalid JSON
    parts = [b"{not json", b"{}", b"{}", b"{}"]
    sock.send_multipart([b"<IDS|MSG>", session.sign(parts)] + parts)
    # valid JSON but the header lacks fields
    parts = [json.dumps({"msg_type": "execute_request"}).encode(), b"{}", b"{}",
             json.dumps({"code": "1"}).encode()]
    sock.send_multipart([b"<IDS|MSG>", session.sign(parts)] + parts)
    assert _recv_reply(sock, session, timeout=1.0) is None
    kernel.run_ok("pass")
    sock.close()


def test_unknown_type_and_missing_fields_get_error_replies(kernel, tmp_path):
    sentinel = tmp_path / "bad-content"
    sock, session = _raw_shell(kernel)
    session.send(sock, "frobnicate_request", {})
    reply = _recv_reply(sock, session)
    assert reply["msg_type"] == "frobnicate_reply"
    assert reply["content"]["status"] == "error"
    session.send(sock, "execute_request", {"silent": False})  # no code
    reply = _recv_reply(sock, session)
    assert reply["msg_type"] == "execute_reply" and reply["content"]["status"] == "error"
    assert "code" in reply["content"]["evalue"]
    session.send(sock, "execute_request", {"code": ["print(1)"]})  # wrong type
    assert _recv_reply(sock, session)["content"]["status"] == "error"
    session.send(sock, "complete_request", {"code": "x"})  # no cursor_pos
    assert _recv_reply(sock, session)["content"]["status"] == "error"
    # content that is not a JSON object
    header = session.msg_header("execute_request")
    parts = [json.dumps(header, default=str).encode(), b"{}", b"{}",
             json.dumps([f"open({str(sentinel)!r}, 'w')"]).encode()]
    sock.send_multipart([b"<IDS|MSG>", session.sign(parts)] + parts)
    reply = _recv_reply(sock, session)
    assert reply["msg_type"] == "execute_reply" and reply["content"]["status"] == "error"
    session.send(sock, "not_a_request_at_all", {})  # nothing is due: logged and dropped
    kernel.run_ok("pass")
    assert not sentinel.exists()
    sock.close()


# -- kernels of their own --

def test_shutdown_on_control_echoes_restart():
    k = KernelHarness()
    try:
        reply, msgs = k.request("shutdown_request", {"restart": True}, channel="control")
        assert reply["content"] == {"status": "ok", "restart": True}
        deadline = time.monotonic() + 10
        while k.km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not k.km.is_alive()
        assert k.km.provisioner.process.returncode == 0
    finally:
        k.stop()


def test_shutdown_on_shell_while_idle():
    k = KernelHarness()
    try:
        reply, msgs = k.request("shutdown_request", {"restart": False})
        assert reply["content"] == {"status": "ok", "restart": False}
        [copy] = of_type(msgs, "shutdown_reply")  # ipykernel also broadcasts the reply on iopub
        assert copy["content"] == reply["content"]
        deadline = time.monotonic() + 10
        while k.km.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not k.km.is_alive()
    finally:
        k.stop()


def test_ipc_transport_and_memory_history(tmp_path):
    k = KernelHarness(extra_args=["--HistoryManager.hist_file=:memory:"], transport="ipc",
                      ip=str(tmp_path / "kernel-ipc"))
    try:
        assert k.km.transport == "ipc"
        msgs = k.run_ok("from IPython import get_ipython\n"
                        "print(get_ipython().history_manager.hist_file)")
        assert stream_text(msgs) == ":memory:\n"
        k.run_ok("a_line = 41")
        reply, _ = k.request("history_request", {"hist_access_type": "tail", "n": 5, "raw": True,
                                                 "output": False})
        assert any(h[2] == "a_line = 41" for h in reply["content"]["history"])
    finally:
        k.stop()


def test_kernelspec_shipped_and_installable(tmp_path):
    import subprocess

    from ipymini.kernelspec import kernel_json
    from harness import REPO

    shipped = json.loads((REPO / "share/jupyter/kernels/ipymini/kernel.json").read_text())
    assert shipped == kernel_json()
    assert shipped["interrupt_mode"] == "signal" and shipped["language"] == "python"
    installed = os.path.join(sys.prefix, "share/jupyter/kernels/ipymini/kernel.json")
    assert json.loads(open(installed).read()) == shipped  # `pip install` put it in the environment
    out = subprocess.run([sys.executable, "-m", "ipymini", "install", "--prefix", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "share/jupyter/kernels/ipymini/kernel.json").read_text()) == shipped


def test_cli_without_connection_file_explains_usage():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "ipymini"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "usage" in out.stderr


def test_iopub_welcome_has_empty_parent(tmp_path):
    k = KernelHarness()
    try:
        info = k.km.get_connection_info()
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
        session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
        assert sub.poll(5000)
        _, frames = session.feed_identities(sub.recv_multipart())
        msg = session.deserialize(frames)
        assert msg["msg_type"] == "iopub_welcome"
        assert msg["parent_header"] == {}
        assert msg["content"] == {"subscription": ""}
        sub.close()
    finally:
        k.stop()


def test_history_reaches_the_database_soon_and_at_shutdown(tmp_path):
    import sqlite3

    k = KernelHarness(env={"IPYTHONDIR": str(tmp_path)})
    db = tmp_path / "profile_default" / "history.sqlite"

    def stored():
        with sqlite3.connect(str(db)) as conn:
            return {row[0] for row in conn.execute("SELECT source_raw FROM history")}

    try:
        k.run_ok("written_soon = 1")
        time.sleep(1.5)  # batched writes land within HISTORY_DELAY (0.5 s)
        assert "written_soon = 1" in stored()
        k.run_ok("written_at_exit = 2")
    finally:
        k.stop()
    assert "written_at_exit = 2" in stored()
