"""The IOPub queue in-process (ipymini/output/iopub.py): order, coalescing, the flush timer, back-pressure.

No socket and no kernel: the test plays the thread that holds the IO lock and takes messages out with
`pop`, decoding each one as a client would. What the queue promises:
- one FIFO for every iopub message: stream text written before a display, an error or `idle` is sent
  before it;
- consecutive writes to one (stream, request) grow one pending chunk, sent when it is
  `flush_interval` old, full (`chunk_bytes`), followed by another message, or flushed;
- past `max_bytes` of queued text a writer waits until some is sent (nothing is ever dropped), except
  the sender itself, and a writer with a `block_timeout` stops waiting but still queues its text.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from ipymini.output.iopub import IOPubQueue
from ipymini.protocol.wire import Wire

KEY = b"iopub-in-process"


@pytest.fixture
def wire():
    return Wire(KEY)


def make_request(wire, msg_type="execute_request"):
    """What the queue reads of a request: the header it parents messages to."""
    return SimpleNamespace(header=wire.msg(msg_type, {})["header"], header_frame=None)


def decode(wire, frames):
    """A popped message as a client reads it (verified with the key), and its topic frame."""
    idents, rest = Wire.split_identities(frames)
    return idents, wire.deserialize(rest)


def drain(queue, wire, now=float("inf")):
    """Everything ready to send at `now` (default: every chunk is due), decoded, in order."""
    out = []
    while True:
        frames, _ = queue.pop(now)
        if frames is None:
            return out
        out.append(decode(wire, frames)[1])


def summary(msgs):
    """(msg_type, the stream's name and text or the parent's msg_id) of each message."""
    return [(m["msg_type"], m["content"]["name"], m["content"]["text"]) if m["msg_type"] == "stream"
            else (m["msg_type"], m["parent_header"].get("msg_id")) for m in msgs]


def test_one_fifo_stream_text_goes_before_what_was_published_after_it(wire):
    q = IOPubQueue(wire)
    req = make_request(wire)
    q.publish("status", {"execution_state": "busy"}, req)
    q.write_stream("stdout", "a", req)
    q.write_stream("stdout", "b", req)
    q.publish("display_data", {"data": {"text/plain": "D"}, "metadata": {}}, req)
    q.write_stream("stderr", "e", req)
    q.write_stream("stdout", "c", req)
    q.publish("status", {"execution_state": "idle"}, req)
    msgs = drain(q, wire)
    rid = req.header["msg_id"]
    assert summary(msgs) == [("status", rid), ("stream", "stdout", "ab"), ("display_data", rid),
                             ("stream", "stderr", "e"), ("stream", "stdout", "c"), ("status", rid)]
    assert all(m["parent_header"]["msg_id"] == rid for m in msgs)
    assert q.enqueued == q.sent == 6  # a chunk counts once however many writes it holds
    assert not q.pending()


def test_topics_name_the_message_type_and_stream(wire):
    q = IOPubQueue(wire)
    req = make_request(wire)
    q.publish("status", {"execution_state": "busy"}, req)
    q.write_stream("stderr", "x", req)
    q.flush()
    topics = []
    while (frames := q.pop(time.monotonic())[0]) is not None:
        topics.append(decode(wire, frames)[0])
    assert topics == [[b"status"], [b"stream.stderr"]]


def test_writes_join_a_chunk_only_for_the_same_stream_and_request(wire):
    q = IOPubQueue(wire)
    one, two = make_request(wire), make_request(wire)
    for text, name, req in [("1", "stdout", one), ("2", "stdout", one), ("3", "stdout", two),
                            ("4", "stdout", two), ("5", "stderr", two), ("6", "stdout", one)]:
        q.write_stream(name, text, req)
    msgs = drain(q, wire)
    assert [(m["content"]["name"], m["content"]["text"], m["parent_header"]["msg_id"]) for m in msgs] == [
        ("stdout", "12", one.header["msg_id"]), ("stdout", "34", two.header["msg_id"]),
        ("stderr", "5", two.header["msg_id"]), ("stdout", "6", one.header["msg_id"])]


def test_output_outside_any_request_has_no_parent(wire):
    q = IOPubQueue(wire)
    q.write_stream("stdout", "from a thread", None)
    q.publish("display_data", {"data": {}, "metadata": {}})
    msgs = drain(q, wire)
    assert [m["parent_header"] for m in msgs] == [{}, {}]
    assert msgs[0]["content"]["text"] == "from a thread"


def test_a_lone_chunk_waits_for_its_flush_interval_unless_flushed(wire):
    q = IOPubQueue(wire, flush_interval=0.5)
    req = make_request(wire)
    q.write_stream("stdout", "pending", req)
    t0 = time.monotonic()
    frames, wait = q.pop(t0)
    assert frames is None and 0 < wait <= 0.5  # not due yet: the consumer learns when it will be
    assert 0 < q.next_due(t0) <= 0.5
    assert q.pending()
    q.write_stream("stdout", " more", req)  # joins the chunk; its age counts from its first text
    assert q.pop(t0 + 0.6)[0] is not None  # due once it is flush_interval old
    assert q.next_due(t0) is None and not q.pending()

    q.write_stream("stdout", "urgent", req)
    assert q.pop(time.monotonic())[0] is None
    q.flush()  # "before a reply": the pending chunk goes now
    assert q.next_due(time.monotonic()) == 0.0
    assert decode(wire, q.pop(time.monotonic())[0])[1]["content"]["text"] == "urgent"


def test_a_chunk_followed_by_another_message_is_sent_at_once(wire):
    q = IOPubQueue(wire, flush_interval=60)
    req = make_request(wire)
    q.write_stream("stdout", "before", req)
    q.publish("status", {"execution_state": "idle"}, req)
    now = time.monotonic()  # long before the chunk's timer
    assert summary(drain(q, wire, now)) == [("stream", "stdout", "before"), ("status", req.header["msg_id"])]


def test_a_full_chunk_is_sent_at_once_and_long_text_is_split(wire):
    q = IOPubQueue(wire, flush_interval=60, chunk_bytes=10)
    req = make_request(wire)
    q.write_stream("stdout", "x" * 25, req)
    now = time.monotonic()
    texts = [m["content"]["text"] for m in drain(q, wire, now)]
    assert texts == ["x" * 10, "x" * 10]  # the last 5 wait for their timer ...
    assert q.pending()
    assert [m["content"]["text"] for m in drain(q, wire)] == ["x" * 5]  # ... and come out whole


def test_kick_is_asked_to_send_when_something_is_ready(wire):
    q = IOPubQueue(wire, flush_interval=60)
    kicks = []
    q.kick = lambda: kicks.append(q.pending())
    req = make_request(wire)
    q.publish("status", {"execution_state": "busy"}, req)
    assert kicks == [True]
    q.write_stream("stdout", "a", req)  # a new chunk: what waited ahead of it may go
    q.write_stream("stdout", "b", req)  # joins the chunk: nothing new to send
    assert len(kicks) == 2
    q.publish("status", {"execution_state": "idle"}, req, wake=False)  # the caller sends later
    assert len(kicks) == 2
    q.flush()
    assert len(kicks) == 3


def _writer(q, req, texts, done):
    for text in texts:
        q.write_stream("stdout", text, req)
    done.set()


def test_a_writer_past_max_bytes_waits_until_text_is_sent_and_nothing_is_dropped(wire):
    q = IOPubQueue(wire, flush_interval=0, chunk_bytes=100, max_bytes=100)
    req = make_request(wire)
    texts = [f"{i:03d}" * 20 for i in range(20)]  # 60 bytes each: room for one at a time
    done = threading.Event()
    writer = threading.Thread(target=_writer, args=(q, req, texts, done), daemon=True)
    writer.start()
    time.sleep(0.2)
    assert not done.is_set(), "the writer went past max_bytes without waiting"
    frames, _ = q.pop(float("inf"))
    received = [decode(wire, frames)[1]["content"]["text"]]
    assert received == [texts[0]]  # bounded: the first write alone was queued while it waited
    deadline = time.monotonic() + 10
    while not (done.is_set() and not q.pending()):
        assert time.monotonic() < deadline, "the writer never got room back"
        received += [m["content"]["text"] for m in drain(q, wire)]
        time.sleep(0.001)
    writer.join(5)
    assert "".join(received) == "".join(texts)  # every byte, in order


def test_the_sender_never_waits_for_room(wire):
    q = IOPubQueue(wire, max_bytes=10)
    q.is_sender = lambda: True  # the thread holding the IO lock: waiting would wait for itself
    req = make_request(wire)
    t0 = time.monotonic()
    for _ in range(5):
        q.write_stream("stdout", "y" * 10, req)
        q.publish("status", {"execution_state": "busy"}, req)
    assert time.monotonic() - t0 < 5  # (a wait for room would be for ever: nobody else sends)
    assert "".join(m["content"]["text"] for m in drain(q, wire) if m["msg_type"] == "stream") == "y" * 50


def test_a_block_timeout_ends_the_wait_but_keeps_the_message(wire):
    q = IOPubQueue(wire, max_bytes=10, block_timeout=0.1)
    req = make_request(wire)
    q.write_stream("stdout", "a" * 10, req)
    t0 = time.monotonic()
    q.publish("display_data", {"data": {"text/plain": "kept"}, "metadata": {}}, req)
    waited = time.monotonic() - t0
    assert 0.09 <= waited < 5
    msgs = drain(q, wire)
    assert summary(msgs)[0] == ("stream", "stdout", "a" * 10)
    assert msgs[1]["content"]["data"] == {"text/plain": "kept"}


def test_sent_counts_what_was_taken_out_so_replies_can_wait_for_their_outputs(wire):
    q = IOPubQueue(wire, flush_interval=60)
    req = make_request(wire)
    q.publish("status", {"execution_state": "busy"}, req)
    q.write_stream("stdout", "out", req)
    barrier = q.enqueued  # what a reply queued now must wait for
    assert barrier == 2 and q.sent == 0
    q.pop(time.monotonic())
    assert q.sent == 1 < barrier
    q.pop(time.monotonic())  # the chunk is not due: the reply still waits
    assert q.sent == 1
    q.flush()
    q.pop(time.monotonic())
    assert q.sent == barrier


def test_after_fork_the_child_sends_nothing_of_the_parents(wire):
    q = IOPubQueue(wire)
    req = make_request(wire)
    q.write_stream("stdout", "parent's", req)
    q.after_fork_in_child(child_pipe=None)
    assert not q.pending()
    q.write_stream("stdout", "child's", req)  # the child's text goes through its own stdout
    q.publish_frames([b"status"])
    assert not q.pending() and q.pop(float("inf")) == (None, None)
