"""The output front (ipymini/output/front.py) and the IO thread's side of it (protocol/channel_thread.py,
protocol/iopub_outlet.py) in one process, with real ZMQ sockets: the thread registers with the front,
stream text goes out before a reply, an unfinished line goes out on the timer, a new subscriber is
welcomed, and what is queued at exit is sent. (Through a real kernel: test_output.py, test_faults.py.)"""

import threading
import time

import pytest
import zmq

from ipymini.output import streams
from ipymini.output.front import OutputFront
from ipymini.protocol.channel_thread import ChannelThread
from ipymini.protocol.messages import Request
from ipymini.protocol.wire import Wire

KEY = "front-key"
DEADLINE = 10.0


class Client:
    """A SUB on iopub and a DEALER on the thread's ROUTER, both used from the test's thread only."""

    def __init__(self, ctx, iopub_url, router_url, wire):
        self.wire = wire
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(iopub_url)
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.IDENTITY, b"client")
        self.dealer.connect(router_url)
        self.poller = zmq.Poller()
        self.poller.register(self.sub, zmq.POLLIN)
        self.poller.register(self.dealer, zmq.POLLIN)

    def next(self, timeout=DEADLINE):
        """The next message from either socket: (channel, msg)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for sock, _ in self.poller.poll(100):
                frames = sock.recv_multipart()
                _, rest = self.wire.split_identities(frames)
                return ("iopub" if sock is self.sub else "shell"), self.wire.deserialize(rest)
        raise AssertionError("no message within the deadline")

    def close(self):
        self.sub.close(linger=0)
        self.dealer.close(linger=0)


@pytest.fixture
def served(monkeypatch):
    """A front and an IO-style ChannelThread serving a ROUTER and an XPUB, and a client of both."""
    monkeypatch.setattr(streams, "fd_capture", None)
    ctx = zmq.Context()
    wire = Wire(KEY)
    router = ctx.socket(zmq.ROUTER)
    router_port = router.bind_to_random_port("tcp://127.0.0.1")
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
    xpub.setsockopt(zmq.XPUB_NODROP, 1)
    xpub_port = xpub.bind_to_random_port("tcp://127.0.0.1")
    front = OutputFront(wire)
    received = []
    thread = ChannelThread("test-io", wire, {"shell": router}, lambda *args: received.append(args),
                           iopub_socket=xpub, iopub=front)
    thread.start()
    client = Client(ctx, f"tcp://127.0.0.1:{xpub_port}", f"tcp://127.0.0.1:{router_port}", wire)
    try:
        yield front, thread, client
    finally:
        thread.stop()
        thread.join(5)
        client.close()
        router.close(linger=0)
        xpub.close(linger=0)
        ctx.term()
        streams.flush_all()


def request():
    msg = Wire(KEY).msg("execute_request", {"code": ""})
    return Request("shell", [b"client"], msg)


def test_the_thread_registers_with_the_front_and_welcomes_a_subscriber(served):
    front, thread, client = served
    assert front.queue.kick == thread.kick and front.queue.wake == thread.wake  # registered
    channel, msg = client.next()
    assert (channel, msg["header"]["msg_type"]) == ("iopub", "iopub_welcome")
    assert front.queue.is_sender() is False  # the test's thread does not hold the sockets


def test_stream_text_goes_out_before_the_reply(served, monkeypatch):
    """The order is the order of the sends: a client polling two sockets may read the reply first
    (two connections; seen on 3.13t), so what the thread sent, and when, is recorded."""
    from ipymini.protocol import channel_thread, iopub_outlet

    sent = []
    for module in (channel_thread, iopub_outlet):
        def recording(sock, frames, flags=0, _send=module.send_frames):
            _send(sock, frames, flags)
            sent.append(frames[0])  # the topic (iopub) or the client's identity (shell)
        monkeypatch.setattr(module, "send_frames", recording)
    front, thread, client = served
    assert client.next()[1]["header"]["msg_type"] == "iopub_welcome"
    req = request()
    out = streams.KernelStream("stdout", front.queue)
    out.write("first line\nno newline yet")  # buffered in the streams, not queued
    assert not front.queue.pending()
    front.before_reply(wake=False)
    assert front.queue.pending()  # queued, marked to go now
    reply = Wire(KEY).msg("execute_reply", {"status": "ok"}, parent=req.header)
    thread.send_after_iopub("shell", Wire(KEY).serialize(reply, ident=[b"client"]))
    seen = sorted([client.next(), client.next()], key=lambda got: got[0])  # (iopub, shell)
    assert [(c, m["header"]["msg_type"]) for c, m in seen] == [("iopub", "stream"), ("shell", "execute_reply")]
    assert seen[0][1]["content"]["text"] == "first line\nno newline yet"
    assert sent[-2:] == [b"stream.stdout", b"client"]  # the stream was sent first


def test_an_unfinished_line_goes_out_on_the_io_threads_timer(served):
    front, thread, client = served
    assert client.next()[1]["header"]["msg_type"] == "iopub_welcome"
    out = streams.KernelStream("stdout", front.queue)
    started = time.monotonic()
    out.write("progress 50%")  # no newline, no flush: only the timer publishes it
    channel, msg = client.next()
    assert (channel, msg["content"]["text"]) == ("iopub", "progress 50%")
    assert time.monotonic() - started >= streams.PARTIAL_LINE_WAIT * 0.9  # it waited for quiet
    assert front.queue.partials_due is None and not front.queue.pending()


def test_what_is_buffered_at_exit_is_sent(served):
    front, thread, client = served
    assert client.next()[1]["header"]["msg_type"] == "iopub_welcome"
    wrote = threading.Event()

    def write():
        streams.KernelStream("stderr", front.queue).write("last words")
        wrote.set()

    threading.Thread(target=write).start()
    assert wrote.wait(DEADLINE)
    front.queue.partials_due = None  # the timer will not: only the exit drain can send it
    thread.stop()
    thread.join(5)
    channel, msg = client.next()
    assert (channel, msg["content"]["name"], msg["content"]["text"]) == ("iopub", "stderr", "last words")


def test_due_in_is_the_earlier_of_the_pending_chunk_and_the_partial_line_timer():
    front = OutputFront(Wire(KEY))
    assert front.due_in(100.0) is None  # nothing waits
    front.queue.partials_due = 100.5
    assert front.due_in(100.0) == pytest.approx(0.5)
    assert front.due_in(101.0) == 0.0  # overdue: now
    front.queue.partials_due = None
    front.queue.write_stream("stdout", "x", None)  # a chunk due flush_interval after now
    assert front.due_in(time.monotonic()) <= front.queue.flush_interval
    front.queue.flush(wake=False)
    assert front.due_in(time.monotonic()) == 0.0  # marked urgent: due now
