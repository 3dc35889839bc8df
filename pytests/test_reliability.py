"""Reliability and security: encryption, process lifecycle, faults, load, errors in kernel code."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import zmq
from jupyter_client.connect import write_connection_file
from jupyter_client.session import Session

from harness import REPO, KernelHarness, of_type, rss_mb, stream_text, wait_gone


# -- encryption --

def test_curve_encrypted_session_works_and_outsiders_are_shut_out():
    k = KernelHarness(transport_encryption="required")
    try:
        info = k.km.get_connection_info()
        assert info.get("curve_publickey") and info.get("curve_secretkey")
        assert stream_text(k.run_ok("print('secret')")) == "secret\n"
        reply, _ = k.request("kernel_info_request", {}, channel="control")
        assert reply["content"]["status"] == "ok"
        # the client pings every second and counts a beat only once a ping came back in time: the
        # first ping (sent before the kernel was up, then a curve handshake) can miss on a busy machine
        deadline = time.monotonic() + 10
        while not k.kc.hb_channel.is_beating():
            assert time.monotonic() < deadline, "no heartbeat within 10 s"
            time.sleep(0.1)
        # a client that knows the HMAC key but not the server's public key gets nothing through
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        # once the failed handshake has dropped the connection, a DEALER has no peer and its send
        # would block for ever: that too means nothing gets through
        sock.sndtimeo = 1500
        sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
        try:
            session.send(sock, "kernel_info_request", {})
        except zmq.Again:
            pass
        else:
            assert not sock.poll(1500)
        sock.close()
        assert stream_text(k.run_ok("print('still')")) == "still\n"
    finally:
        k.stop()


def test_kernelspec_advertises_curve():
    spec = json.loads((REPO / "share/jupyter/kernels/ipymini/kernel.json").read_text())
    assert spec["metadata"]["supported_encryption"] == ["curve"]


# -- process lifecycle --

CHILD = "import subprocess\nchild = subprocess.Popen(['sleep', '1000'])\nprint(child.pid)"


def test_shutdown_stops_user_child_processes():
    k = KernelHarness()
    try:
        child = int(stream_text(k.run_ok(CHILD)))
        kernel_pid = k.km.provisioner.process.pid
        assert os.getpgid(kernel_pid) == kernel_pid  # the kernel leads its process group
        k.km.shutdown_kernel(now=False)
        assert wait_gone(child)
    finally:
        k.stop()


def test_restart_stops_user_child_processes():
    k = KernelHarness()
    try:
        child = int(stream_text(k.run_ok(CHILD)))
        k.km.restart_kernel(now=False)
        k.kc.wait_for_ready(timeout=60)
        assert wait_gone(child)
        k.drain_iopub()
        assert stream_text(k.run_ok("print('new kernel')")) == "new kernel\n"
    finally:
        k.stop()


def test_sigterm_shuts_down_cleanly_and_stops_children():
    k = KernelHarness()
    try:
        child = int(stream_text(k.run_ok(CHILD)))
        proc = k.km.provisioner.process
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0
        assert wait_gone(child)
    finally:
        k.stop()


def test_sigterm_ends_a_kernel_whose_cell_refuses_to_stop():
    """A cell that swallows every interrupt keeps the clean shutdown from finishing: the watchdog
    (off the main thread) stops the children and ends the process, with exit status 1."""
    k = KernelHarness()
    try:
        child = int(stream_text(k.run_ok(CHILD)))
        k.kc.execute("import time\nwhile True:\n    try:\n        time.sleep(0.05)\n"
                     "    except KeyboardInterrupt:\n        pass")
        time.sleep(0.5)
        proc = k.km.provisioner.process
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 1
        assert wait_gone(child)
    finally:
        k.stop()


def test_kernel_exits_when_its_parent_dies(tmp_path):
    conn_file = str(tmp_path / "kernel.json")
    write_connection_file(conn_file, ip="127.0.0.1")
    launcher = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-m', 'ipymini', '-f', {conn_file!r}], start_new_session=True,\n"
        "                      env={**os.environ, 'JPY_PARENT_PID': str(os.getpid())})\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(1000)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        kernel_pid = int(parent.stdout.readline())
        time.sleep(2)  # the kernel is up
        os.kill(kernel_pid, 0)
        parent.kill()
        parent.wait()
        assert wait_gone(kernel_pid, timeout=20)
    finally:
        parent.kill()


def test_a_crashed_kernel_thread_shuts_the_kernel_down():
    k = KernelHarness()
    try:
        proc = k.km.provisioner.process
        # break the IO thread's loop: it dies of the error, and must not leave a zombie kernel
        k.kc.execute("import threading\n"
                     "t = next(t for t in threading.enumerate() if t.name == 'ipymini-io')\n"
                     "t._timeout_ms = None; t.wake()")
        assert proc.wait(20) is not None
    finally:
        k.stop()


# -- faults and load --

def second_client(kernel):
    """Another client with a session (and so a ZMQ identity) of its own, as a second frontend has."""
    from jupyter_client.blocking import BlockingKernelClient

    other = BlockingKernelClient()
    other.load_connection_info(kernel.km.get_connection_info())
    return other


def test_client_disconnecting_mid_output_does_not_hurt(kernel):
    other = second_client(kernel)
    other.start_channels()
    try:
        other.wait_for_ready(timeout=30)
        other.execute("for i in range(200_000): print('z' * 99)")
        other.get_iopub_msg(timeout=10)
    finally:
        other.stop_channels()  # gone in the middle of the flood
    msgs = kernel.run_ok("print('after the disconnect')", timeout=60)
    assert "after the disconnect\n" in stream_text(msgs)


def test_two_clients_at_once(kernel):
    other = second_client(kernel)
    other.start_channels()
    try:
        other.wait_for_ready(timeout=30)
        mine = kernel.kc.execute("from_one = 1; print('one')")
        theirs = other.execute("from_two = 2; print('two')")
        assert kernel.shell_reply(mine)["content"]["status"] == "ok"
        reply = other.get_shell_msg(timeout=20)
        while reply["parent_header"].get("msg_id") != theirs:
            reply = other.get_shell_msg(timeout=20)
        assert reply["content"]["status"] == "ok"
        # each client sees both requests' output on iopub
        seen, idle = [], set()
        while not {mine, theirs} <= idle:  # the two requests may be served in either order
            msg = kernel.kc.get_iopub_msg(timeout=20)
            seen.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle.add(msg["parent_header"].get("msg_id"))
        assert {"one\n", "two\n"} <= {m["content"].get("text") for m in seen}
    finally:
        other.stop_channels()
    assert stream_text(kernel.run_ok("print(from_one + from_two)")) == "3\n"


def test_ten_thousand_executes_in_a_row():
    import threading

    k = KernelHarness()
    try:
        pid = k.km.provisioner.process.pid
        k.run_ok("pass")
        before = rss_mb(pid)
        kc = k.kc
        first = k.execute("counter = 0")[0]["content"]["execution_count"]
        n, window = 10_000, 500
        done = threading.Event()
        caught_up = threading.Event()  # the reader has seen the last execute's idle
        last_id = []

        def read_iopub():  # a client that keeps reading iopub
            while not done.is_set():
                try:
                    msg = kc.get_iopub_msg(timeout=0.2)
                except Exception:
                    continue
                if (last_id and msg["parent_header"].get("msg_id") == last_id[0]
                        and msg["content"].get("execution_state") == "idle"):
                    caught_up.set()

        reader = threading.Thread(target=read_iopub, daemon=True)
        reader.start()
        sent = replies = 0
        last = None
        deadline = time.monotonic() + 300
        while replies < n:
            assert time.monotonic() < deadline, f"only {replies} replies"
            while sent < n and sent - replies < window:
                msg_id = kc.execute("counter += 1", reply=False)
                sent += 1
                if sent == n:
                    last_id.append(msg_id)
            msg = kc.get_shell_msg(timeout=60)
            assert msg["content"]["status"] == "ok"
            last = msg["content"]["execution_count"]
            replies += 1
        # 40,000 iopub messages: let the reader finish them (a slow client may lag behind the replies)
        assert caught_up.wait(120), "iopub never reached the last execute's idle"
        done.set()
        reader.join()
        assert last == first + n
        assert stream_text(k.run_ok("print(counter)")) == f"{n}\n"
        grown = rss_mb(pid) - before
        assert grown < 60, f"RSS grew {grown:.0f} MB over {n} executes"
    finally:
        k.stop()


def test_one_gigabyte_of_output_in_one_session():
    k = KernelHarness()
    try:
        pid = k.km.provisioner.process.pid
        line = "g" * 1023
        total = 0
        peak = 0.0
        for _ in range(10):  # 10 cells x 100 MB
            msg_id = k.kc.execute(f"for i in range(100_000): print({line!r})")
            got = 0
            for m in k.iopub_until_idle(msg_id, timeout=120):
                if m["msg_type"] == "stream":
                    got += len(m["content"]["text"])
            assert got == 100_000 * 1024
            total += got
            peak = max(peak, rss_mb(pid))
        assert total == 1_024_000_000
        assert peak < 400, f"kernel RSS peaked at {peak:.0f} MB"
    finally:
        k.stop()


# -- errors in the kernel's own code paths --

def test_failing_repr_and_formatter_are_error_outputs(kernel):
    reply, msgs = kernel.execute("class BadRepr:\n    def __repr__(self):\n        raise ValueError('no repr')\nBadRepr()")
    assert of_type(msgs, "error") or "no repr" in stream_text(msgs, "stderr")
    kernel.run_ok("get_ipython().display_formatter.formatters['text/html'].for_type(complex, lambda c: 1/0)")
    reply, msgs = kernel.execute("1j")
    text = stream_text(msgs, "stderr") + "".join("".join(m["content"]["traceback"]) for m in of_type(msgs, "error"))
    assert "ZeroDivisionError" in text
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "1j"
    kernel.run_ok("get_ipython().display_formatter.formatters['text/html'].pop(complex)")
    assert stream_text(kernel.run_ok("print('alive')")) == "alive\n"


def test_failing_post_execute_hook_is_an_error_output_not_a_dead_kernel(kernel):
    kernel.run_ok("def broken_hook():\n    raise RuntimeError('hook broke')\n"
                  "get_ipython().events.register('post_execute', broken_hook)")
    reply, msgs = kernel.execute("x_hook = 5")
    errors = of_type(msgs, "error")
    assert errors and errors[0]["content"]["evalue"] == "hook broke"
    assert reply["content"]["status"] == "ok"  # the cell itself ran fine
    kernel.run_ok("get_ipython().events.unregister('post_execute', broken_hook)")
    assert stream_text(kernel.run_ok("print(x_hook)")) == "5\n"


def test_unserializable_display_data_is_reported(kernel):
    reply, msgs = kernel.execute("from IPython.display import display\n"
                                 "display({'application/json': {'bad': float('nan')}}, raw=True)\nprint('next')")
    assert stream_text(kernel.run_ok("print('alive')")) == "alive\n"
