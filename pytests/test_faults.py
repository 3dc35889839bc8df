"""Client faults: a client killed mid-flood, a client that stops reading and comes back, a restart while
a cell prints. The kernel keeps serving the others, its memory stays bounded, and its log shows no
socket used by a thread that does not hold it (protocol/channel_thread.py logs that as a BUG)."""

import json
import subprocess
import sys
import textwrap
import time

import zmq
from jupyter_client.session import Session

from harness import KernelHarness, rss_mb, stream_text, wait_gone

FLOOD = "for i in range({n}):\n    print('flood line', i, 'x' * 40)"


def flood_text(n):
    return "".join(f"flood line {i} {'x' * 40}\n" for i in range(n))


def kernel_log_is_clean(path):
    with open(path) as f:
        log = f.read()
    assert "BUG" not in log and "Traceback" not in log, log[-3000:]


def test_a_client_killed_mid_flood_costs_the_others_nothing(tmp_path):
    log = tmp_path / "kernel.log"
    k = KernelHarness(stderr=open(log, "w"))
    try:
        pid = k.km.provisioner.process.pid
        rss0 = rss_mb(pid)
        conn = tmp_path / "conn.json"
        info = {key: (v.decode() if isinstance(v, bytes) else v)
                for key, v in k.km.get_connection_info().items()}
        conn.write_text(json.dumps(info))
        # another client, in its own process: floods, pipelines requests, reads nothing, is killed
        script = textwrap.dedent(f"""
            import json, sys, time, zmq
            from jupyter_client.session import Session
            c = json.load(open({str(conn)!r}))
            s = Session(key=c["key"].encode(), signature_scheme=c["signature_scheme"])
            ctx = zmq.Context()
            shell = ctx.socket(zmq.DEALER); shell.connect(f"tcp://{{c['ip']}}:{{c['shell_port']}}")
            sub = ctx.socket(zmq.SUB); sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(f"tcp://{{c['ip']}}:{{c['iopub_port']}}")
            time.sleep(0.3)
            s.send(shell, "execute_request", {{"code": {FLOOD.format(n=300_000)!r}, "silent": False}})
            for _ in range(200):
                s.send(shell, "kernel_info_request", {{}})
            print("sent", flush=True)
            time.sleep(60)
        """)
        other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline().strip() == "sent"
        time.sleep(0.5)  # its flood is running now
        other.kill()
        other.wait(10)
        ours = [k.kc.execute(FLOOD.format(n=20_000)) for _ in range(3)]
        replies, iopub = k.wait_all(ours, timeout=60)
        for msg_id in ours:
            assert replies[msg_id]["content"]["status"] == "ok"
            assert stream_text(iopub[msg_id]) == flood_text(20_000)
        assert k.km.is_alive()
        assert rss_mb(pid) < rss0 + 150
    finally:
        k.stop()
    kernel_log_is_clean(log)


def test_a_client_that_stops_reading_and_comes_back(tmp_path):
    """The stalled client holds up the others for IPYMINI_IOPUB_STALL_TIMEOUT at most (1 s here; the
    default is 10 s, the soak run stalls a client for a minute), then misses messages alone; once it
    reads again it gets every message of its next cell."""
    log = tmp_path / "kernel.log"
    k = KernelHarness(env={"IPYMINI_IOPUB_STALL_TIMEOUT": "1"}, stderr=open(log, "w"))
    try:
        pid = k.km.provisioner.process.pid
        rss0 = rss_mb(pid)
        info = k.km.get_connection_info()
        session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
        ctx = zmq.Context.instance()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.rcvhwm = 100
        sub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
        shell = ctx.socket(zmq.DEALER)
        shell.connect(f"tcp://{info['ip']}:{info['shell_port']}")
        time.sleep(0.5)  # subscribed; from now on this client reads nothing for a while
        ours = [k.kc.execute(FLOOD.format(n=100_000)) for _ in range(3)]
        replies, iopub = k.wait_all(ours, timeout=90)
        for msg_id in ours:
            assert replies[msg_id]["content"]["status"] == "ok"
            assert stream_text(iopub[msg_id]) == flood_text(100_000)
        assert rss_mb(pid) < rss0 + 150
        # the stalled client comes back: it drains what it was kept, then gets a whole cell again
        while sub.poll(200):
            sub.recv_multipart()
        msg = session.msg("execute_request", {"code": FLOOD.format(n=5000), "silent": False})
        session.send(shell, msg)
        msg_id = msg["header"]["msg_id"]
        text, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            if not sub.poll(1000):
                continue
            got = session.deserialize(session.feed_identities(sub.recv_multipart())[1])
            if got["parent_header"].get("msg_id") != msg_id:
                continue
            if got["msg_type"] == "stream":
                text.append(got["content"]["text"])
            if got["msg_type"] == "status" and got["content"]["execution_state"] == "idle":
                break
        assert "".join(text) == flood_text(5000)
        assert shell.poll(10_000)
        reply = session.deserialize(session.feed_identities(shell.recv_multipart())[1])
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"
        sub.close(0)
        shell.close(0)
        assert stream_text(k.run_ok("print('others still served')")) == "others still served\n"
    finally:
        k.stop()
    kernel_log_is_clean(log)


def test_restart_while_a_cell_prints(tmp_path):
    log = tmp_path / "kernel.log"
    k = KernelHarness(stderr=open(log, "w"))
    try:
        old = k.km.provisioner.process.pid
        msg_id = k.kc.execute("import time\nwhile True:\n    print('tick', time.time())")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # it prints
            msg = k.kc.get_iopub_msg(timeout=5)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
        k.km.restart_kernel(now=False)
        assert wait_gone(old), "the old kernel outlived the restart"
        k.kc.wait_for_ready(timeout=60)
        k.drain_iopub()
        assert stream_text(k.run_ok("print('new kernel')")) == "new kernel\n"
        assert k.km.provisioner.process.pid != old
    finally:
        k.stop()
    kernel_log_is_clean(log)
