"""ChannelThread in-process (ipymini/protocol/channel_thread.py): real ZMQ sockets, one process.

The kernel's side is a ROUTER (shell) and an XPUB (iopub) served by a ChannelThread with an OutputFront,
wired as protocol/sockets.py wires them; the client's side is a DEALER and SUB sockets, each used by the
test's thread only, over inproc:// (no ports, no kernel). What the thread promises:
- what arrives is verified and handed on with its routing identities; a message that fails
  verification is dropped, and the thread serves on;
- what any thread sends goes out on the right socket, to the client it is addressed to;
- a reply queued with `send_after_iopub` leaves after every iopub message queued before it, unless
  iopub is stalled by a subscriber that does not read;
- a subscriber that stops reading loses messages after `stall_timeout`, and only it: the others get
  every message, in order;
- a new subscriber is greeted with iopub_welcome (JEP 65);
- a channel read by another thread's loop (`watch_elsewhere`) is left to it;
- stopping sends what is still queued first.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import zmq

from ipymini.output.front import OutputFront
from ipymini.protocol.channel_thread import ChannelThread
from ipymini.protocol.wire import Wire

KEY = b"channel-thread-in-process"
TIMEOUT = 10
_names = itertools.count()


class Client:
    """The client's sockets (used by the test's thread only) and a Wire with the kernel's key."""

    def __init__(self, ctx, shell_addr, iopub_addr):
        self.wire = Wire(KEY)
        self.shell = ctx.socket(zmq.DEALER)
        self.shell.setsockopt(zmq.IDENTITY, b"client-1")
        self.shell.connect(shell_addr)
        self.iopub_addr = iopub_addr
        self.ctx = ctx
        self.readers = {}

    def subscribe(self, rcvhwm=1000):
        sub = self.ctx.socket(zmq.SUB)
        sub.rcvhwm = rcvhwm
        sub.connect(self.iopub_addr)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        return sub

    def send(self, msg_type, content=None, **header):
        msg = self.wire.msg(msg_type, content or {})
        msg["header"].update(header)
        self.shell.send_multipart(self.wire.serialize(msg))
        return msg

    def recv(self, sock, timeout=TIMEOUT):
        """The next message on `sock`, decoded and verified (the kernel's key), or None on timeout."""
        if not sock.poll(timeout * 1000):
            return None
        _, rest = Wire.split_identities(sock.recv_multipart())
        # one reader per socket: two subscribers get the same message, which one Wire would refuse
        # the second time as a replay
        reader = self.readers.setdefault(sock, Wire(KEY))
        return reader.deserialize(rest)


class Rig:
    """A ChannelThread serving a shell ROUTER and an iopub XPUB, and a client connected to both."""

    def __init__(self, flush_interval=0.01, hwm=1000):
        self.ctx = zmq.Context()
        n = next(_names)
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.sndhwm = 0
        self.router.bind(f"inproc://shell-{n}")
        self.xpub = self.ctx.socket(zmq.XPUB)
        self.xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.xpub.setsockopt(zmq.XPUB_NODROP, 1)
        self.xpub.sndhwm = hwm
        self.xpub.bind(f"inproc://iopub-{n}")
        self.wire = Wire(KEY)
        self.front = OutputFront(self.wire)  # the IOPub source the thread registers with
        self.iopub = self.front.queue
        self.iopub.flush_interval = flush_interval
        self.received = []  # (channel, idents, msg, thread ident), in arrival order
        self.thread = ChannelThread("test-io", self.wire, {"shell": self.router}, self.on_message,
                                    iopub_socket=self.xpub, iopub=self.front)
        self.client = Client(self.ctx, f"inproc://shell-{n}", f"inproc://iopub-{n}")

    def on_message(self, channel, idents, msg, header_frame):
        self.received.append((channel, idents, msg, threading.get_ident()))

    def reply_frames(self, request_idents, parent, msg_type="execute_reply", content=None):
        msg = self.wire.msg(msg_type, content or {"status": "ok"}, parent=parent)
        return self.wire.serialize(msg, ident=request_idents)

    def wait_received(self, count, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"received {len(self.received)} of {count}"
            time.sleep(0.002)
        return self.received

    def close(self):
        self.thread.stop()
        assert self.thread.stopped.wait(TIMEOUT), "the channel thread did not stop"
        self.thread.waker.close()
        self.ctx.destroy(linger=0)


@pytest.fixture
def rig():
    r = Rig()
    r.thread.start()
    yield r
    r.close()


def welcomed(rig, sub):
    """Subscribe and wait for the kernel's iopub_welcome: from then on the subscriber gets everything."""
    msg = rig.client.recv(sub)
    assert msg is not None and msg["msg_type"] == "iopub_welcome", msg
    return msg


def test_requests_are_verified_and_handed_on_with_their_identities(rig):
    sent = rig.client.send("kernel_info_request")
    forged = rig.client.wire.msg("execute_request", {"code": "evil"})
    frames = rig.client.wire.serialize(forged)
    frames[1] = b"0" * 64  # a wrong signature
    rig.client.shell.send_multipart(frames)
    rig.client.shell.send_multipart([b"no delimiter"])
    rig.client.shell.send_multipart(rig.client.wire.serialize(sent))  # a replay: refused
    after = rig.client.send("is_complete_request", {"code": "x"})
    received = rig.wait_received(2)
    time.sleep(0.05)
    assert [(ch, idents, m["header"]["msg_id"]) for ch, idents, m, _ in rig.received] == [
        ("shell", [b"client-1"], sent["header"]["msg_id"]), ("shell", [b"client-1"], after["header"]["msg_id"])]
    assert received[0][2]["content"] == {} and received[1][2]["content"] == {"code": "x"}
    assert {ident for *_, ident in received} == {rig.thread.ident}  # handed on by the channel thread
    assert rig.thread.is_alive()


def test_what_any_thread_sends_reaches_the_client_it_is_addressed_to(rig):
    request = rig.client.send("kernel_info_request")
    _, idents, msg, _ = rig.wait_received(1)[0]
    replies = []
    senders = [threading.Thread(target=rig.thread.send, args=(
        "shell", rig.reply_frames(idents, msg, "kernel_info_reply", {"status": "ok", "n": i})))
        for i in range(20)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(TIMEOUT)
    while (reply := rig.client.recv(rig.client.shell, timeout=2)) is not None:
        replies.append(reply)
        if len(replies) == 20:
            break
    assert sorted(r["content"]["n"] for r in replies) == list(range(20))
    assert all(r["parent_header"]["msg_id"] == request["header"]["msg_id"] for r in replies)


def test_a_reply_leaves_after_the_outputs_queued_before_it(rig):
    sub = rig.client.subscribe()
    welcomed(rig, sub)
    rig.iopub.flush_interval = 0.3  # the chunk waits for its timer, and so does the reply behind it
    request = rig.client.send("execute_request", {"code": "print('out')"})
    _, idents, msg, _ = rig.wait_received(1)[0]
    req = type("Req", (), {"header": msg["header"], "header_frame": None})()
    rig.iopub.publish("status", {"execution_state": "busy"}, req)
    t0 = time.monotonic()
    rig.iopub.write_stream("stdout", "out\n", req)
    rig.thread.send_after_iopub("shell", rig.reply_frames(idents, msg))
    reply = rig.client.recv(rig.client.shell)
    assert reply is not None and reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert time.monotonic() - t0 >= 0.29  # it waited for the stream's timer ...
    assert sub.poll(0), "the reply came before the request's output was published"  # ... which went first
    busy, stream = rig.client.recv(sub), rig.client.recv(sub)
    assert (busy["msg_type"], stream["msg_type"], stream["content"]["text"]) == ("status", "stream", "out\n")


def test_a_subscriber_that_stops_reading_loses_messages_and_only_it():
    rig = Rig(hwm=10)
    rig.thread.iopub_out.stall_timeout = 0.3
    rig.thread.start()
    try:
        reader = rig.client.subscribe()
        welcomed(rig, reader)
        stalled = rig.client.subscribe(rcvhwm=10)
        welcomed(rig, stalled)
        welcomed(rig, reader)  # (every subscriber sees each newcomer's welcome)
        n = 400
        got = []

        def publish():
            for i in range(n):
                rig.iopub.publish("display_data", {"data": {"text/plain": str(i)}, "metadata": {}})

        publisher = threading.Thread(target=publish)
        t0 = time.monotonic()
        publisher.start()
        while len(got) < n:
            msg = rig.client.recv(reader)
            assert msg is not None, f"the reading subscriber got {len(got)} of {n}: stalled with the other"
            got.append(int(msg["content"]["data"]["text/plain"]))
        publisher.join(TIMEOUT)
        assert got == list(range(n))  # every message, in order
        assert time.monotonic() - t0 < TIMEOUT
        lost_by_stalled = []
        while (msg := rig.client.recv(stalled, timeout=0.2)) is not None:
            lost_by_stalled.append(msg)
        assert 0 < len(lost_by_stalled) < n  # it had what fitted; the rest went past it
    finally:
        rig.close()


def test_replies_do_not_wait_for_a_stalled_iopub():
    rig = Rig(hwm=5)
    rig.thread.iopub_out.stall_timeout = 60  # stalled, but not yet long enough to drop anything
    rig.thread.start()
    try:
        stalled = rig.client.subscribe(rcvhwm=5)
        welcomed(rig, stalled)
        request = rig.client.send("execute_request", {"code": ""})
        _, idents, msg, _ = rig.wait_received(1)[0]
        for i in range(50):
            rig.iopub.publish("display_data", {"data": {"text/plain": str(i)}, "metadata": {}})
        rig.thread.send_after_iopub("shell", rig.reply_frames(idents, msg))
        reply = rig.client.recv(rig.client.shell, timeout=5)
        assert reply is not None, "a reply waited for a subscriber that does not read"
        assert reply["parent_header"]["msg_id"] == request["header"]["msg_id"]
        assert rig.iopub.pending()  # the outputs still wait for room: none was dropped
        stalled.close(linger=0)  # (gone: the thread's last drain need not wait for it)
    finally:
        rig.close()


def test_a_new_subscriber_is_welcomed(rig):
    sub = rig.client.subscribe()
    welcome = welcomed(rig, sub)
    assert welcome["content"] == {"subscription": ""}
    assert welcome["parent_header"] == {}


def test_a_channel_watched_elsewhere_is_read_by_that_thread(rig):
    rig.thread.watch_elsewhere("shell", lambda: None)
    rig.client.send("kernel_info_request")
    time.sleep(0.2)
    rig.thread.wake()  # a pass of the channel thread leaves the channel alone
    time.sleep(0.05)
    assert rig.received == []
    rig.thread.receive("shell")  # the other loop reads it
    assert [(m["msg_type"], ident) for _, _, m, ident in rig.received] == [
        ("kernel_info_request", threading.get_ident())]
    rig.thread.watch_here("shell")
    rig.client.send("kernel_info_request")
    assert rig.wait_received(2)[1][3] == rig.thread.ident


def test_stopping_sends_what_is_still_queued():
    rig = Rig(flush_interval=60)
    rig.thread.start()
    try:
        sub = rig.client.subscribe()
        welcomed(rig, sub)
        rig.client.send("shutdown_request")
        _, idents, msg, _ = rig.wait_received(1)[0]
        rig.iopub.write_stream("stdout", "last words", None)  # waits for a 60 s timer
        rig.thread.send_after_iopub("shell", rig.reply_frames(idents, msg, "shutdown_reply"), wake=False)
        rig.thread.stop()
        assert rig.thread.stopped.wait(TIMEOUT)
        stream = rig.client.recv(sub, timeout=2)
        assert stream is not None and stream["content"]["text"] == "last words"
        reply = rig.client.recv(rig.client.shell, timeout=2)
        assert reply is not None and reply["msg_type"] == "shutdown_reply"
    finally:
        rig.close()
