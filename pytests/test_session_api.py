"""`kernel.session` (protocol/session.py) against jupyter_client's Session, call by call, in-process.

The real kernel's `kernel.session` is compared with ipykernel's in test_differential.py
(`session_send_returns`, `session_members`) and used in test_ipykernel_parity.py; these pin every
member and edge case against jupyter_client 8 itself, with the same key and the same inputs.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest
import zmq
from jupyter_client.session import Session as ClientSession

from ipymini.protocol.session import Session
from ipymini.protocol.wire import Wire

KEY = b"session-api-key"


@pytest.fixture
def pair():
    """(ipymini's Session, jupyter_client's Session) with the same key, session id and username."""
    wire = Wire(KEY)
    ours = Session(wire)
    theirs = ClientSession(key=KEY, session=wire.session_id, username=wire.username)
    return ours, theirs


def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v]
    if isinstance(v, datetime):
        return ("datetime", v.utcoffset())
    return type(v).__name__


class Recorder:
    """A stream that records what is sent on it (as a socket would get it)."""

    def __init__(self):
        self.sent = []

    def send_multipart(self, frames, *args, **kwargs):
        self.sent.append(([bytes(f) for f in frames], args, kwargs))


def test_header_and_message_shapes(pair):
    ours, theirs = pair
    assert shape(ours.msg_header("x")) == shape(theirs.msg_header("x"))
    assert list(ours.msg_header("x")) == ["msg_id", "msg_type", "username", "session", "date", "version"]
    assert ours.msg_header("x")["date"].tzinfo is timezone.utc
    for kwargs in ({}, {"content": {"a": 1}, "metadata": {"m": 1}}, {"parent": theirs.msg("p")},
                   {"parent": theirs.msg_header("p")}, {"parent": {}}, {"header": theirs.msg_header("h")}):
        assert shape(ours.msg("x", **kwargs)) == shape(theirs.msg("x", **kwargs)), kwargs
    parent = theirs.msg("p")
    assert ours.msg("x", parent=parent)["parent_header"] is parent["header"]  # not copied, as theirs
    with pytest.raises(KeyError):
        ours.msg("x", parent={"not": "a header"})
    ours.metadata["session_wide"] = 1
    assert ours.msg("x", metadata={"m": 2})["metadata"] == {"session_wide": 1, "m": 2}


def test_message_ids_are_the_kernels_counter(pair):
    ours, _ = pair
    first, second = ours.msg_id, ours.msg_header("x")["msg_id"]
    prefix = f"{ours.session}_{os.getpid()}_"
    assert first.startswith(prefix) and second.startswith(prefix)
    assert int(second[len(prefix):]) == int(first[len(prefix):]) + 1


def test_serialize_and_sign_give_the_same_bytes(pair):
    ours, theirs = pair
    header = theirs.msg_header("t")
    for content in ({"a": [1, "é"]}, None, b'{"raw": 1}', '{"str": 1}'):
        msg = theirs.msg("t", header=header, parent=theirs.msg("p"), metadata={"m": 1})
        msg["content"] = content
        for ident in (None, b"one", [b"a", b"b"]):
            assert ours.serialize(msg, ident) == theirs.serialize(msg, ident), (content, ident)
    msg["content"] = ["not", "a", "dict"]
    with pytest.raises(TypeError) as e_ours:
        ours.serialize(msg)
    with pytest.raises(TypeError) as e_theirs:
        theirs.serialize(msg)
    assert str(e_ours.value) == str(e_theirs.value)
    parts = [b"a", b"bc", b"{}"]
    assert ours.sign(parts) == theirs.sign(parts)
    unkeyed = Session(Wire(b""))
    assert unkeyed.sign(parts) == b"" and unkeyed.auth is None


def test_send_returns_the_message_as_jupyter_client_does(pair):
    ours, theirs = pair
    header = theirs.msg_header("display_data")
    got, expected = Recorder(), Recorder()
    content = {"data": {"text/plain": "x"}, "metadata": {}}
    a = ours.send(got, "display_data", content, parent=theirs.msg("p"), ident=b"topic", header=header,
                  metadata={"m": 1}, buffers=[b"buf"])
    b = theirs.send(expected, "display_data", content, parent=theirs.msg("p"), ident=b"topic", header=header,
                    metadata={"m": 1}, buffers=[b"buf"])
    assert list(a) == list(b) == ["header", "msg_id", "msg_type", "parent_header", "content", "metadata",
                                  "tracker"]
    assert shape(a) == shape(b) and a["tracker"].done
    # the same frames, sent the same way (the parent's header differs only in its id and date)
    (frames_a, args_a, kw_a), (frames_b, args_b, kw_b) = got.sent[0], expected.sent[0]
    assert [frames_a[i] for i in (0, 1, 3, 5, 6, 7)] == [frames_b[i] for i in (0, 1, 3, 5, 6, 7)]
    assert (args_a, kw_a) == (args_b, kw_b) == ((), {"copy": True})
    # stream None: built, not sent; a message dict: sent as it is, and returned (the same object)
    built = ours.send(None, "custom", {"a": 1})
    assert shape(built) == shape(theirs.send(None, "custom", {"a": 1}))
    msg = ours.msg("display_data", content)
    assert ours.send(got, msg) is msg and msg["tracker"].done


def test_send_checks_buffers_and_tracks_only_on_sockets(pair):
    ours, theirs = pair
    for session in (ours, theirs):
        with pytest.raises(TypeError, match="Buffer objects must support the buffer protocol"):
            session.send(Recorder(), "x", {}, buffers=[object()])
        with pytest.raises(ValueError, match="is not contiguous"):
            session.send(Recorder(), "x", {}, buffers=[memoryview(b"abcdef")[::2]])
    # a large buffer on a real socket with track=True: a real tracker (zero-copy send)
    ctx = zmq.Context()
    try:
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        big = b"x" * (ours.copy_threshold + 1)
        sent = ours.send(push, "x", {}, buffers=[big], track=True)
        assert isinstance(sent["tracker"], zmq.MessageTracker)
        assert pull.poll(10_000)
        idents, msg = theirs.recv(pull, mode=0)
        assert idents == [] and bytes(msg["buffers"][0]) == big
        sent["tracker"].wait(10)
        assert sent["tracker"].done
    finally:
        push.close(0), pull.close(0)
        ctx.term()


def test_send_in_a_forked_child_sends_nothing(pair):
    ours, theirs = pair
    for session in (ours, theirs):  # as after a fork: the pid the session was made in is another
        session.pid = -1
        stream = Recorder()
        assert session.send(stream, "x", {}) is None and stream.sent == []
    ours.check_pid = False
    assert ours.send(Recorder(), "x", {}) is not None


def test_feed_identities_and_deserialize(pair):
    ours, theirs = pair
    msg = theirs.msg("x", {"c": 1}, parent=theirs.msg("p"), metadata={"m": 1})
    frames = theirs.serialize(msg, ident=[b"r1", b"r2"]) + [b"buffer"]
    assert ours.feed_identities(frames) == theirs.feed_identities(frames)
    zframes = [zmq.Frame(f) for f in frames]
    idents, rest = ours.feed_identities(zframes, copy=False)
    assert idents == [b"r1", b"r2"] and [f.bytes for f in rest] == frames[3:]
    for session in (ours, theirs):
        with pytest.raises(ValueError):
            session.feed_identities([b"no", b"delimiter"])
        with pytest.raises(ValueError):
            session.feed_identities([zmq.Frame(b"no")], copy=False)
    rest = frames[3:]
    a, b = ours.deserialize(rest), theirs.deserialize(rest)
    assert list(a) == list(b)
    assert {k: a[k] for k in ("header", "msg_id", "msg_type", "parent_header", "metadata", "content")} == \
        {k: b[k] for k in ("header", "msg_id", "msg_type", "parent_header", "metadata", "content")}
    assert shape(a) == shape(b) and [bytes(x) for x in a["buffers"]] == [b"buffer"]
    assert rest[0] in ours.digest_history
    # a peek (content=False) leaves the content packed and the signature usable
    peek_frames = theirs.serialize(theirs.msg("y", {"d": 2}))[1:]
    assert ours.deserialize(peek_frames, content=False)["content"] == peek_frames[4]
    assert ours.deserialize(peek_frames)["content"] == {"d": 2}
    zrest = [zmq.Frame(f) for f in theirs.serialize(theirs.msg("z", {}))[1:]]
    assert ours.deserialize(zrest, copy=False)["msg_type"] == "z"


def test_deserialize_refuses_as_jupyter_client(pair):
    ours, _ = pair
    theirs = ClientSession(key=KEY)
    good = theirs.serialize(theirs.msg("x", {}))[1:]
    short = [theirs.sign(good[1:3])] + good[1:3]
    cases = [good, good, [b""] + good[1:], [b"0" * 64] + good[1:], short]
    errors = []
    for session in (ours, theirs):
        got = []
        for frames in cases:
            try:
                session.deserialize(list(frames))
                got.append(None)
            except Exception as e:
                got.append((type(e).__name__, str(e)))
        errors.append(got)
    assert errors[0] == errors[1]
    assert errors[0][0] is None and errors[0][1][0] == "ValueError" and errors[0][4][0] == "TypeError"


def test_dates_in_received_headers_become_datetimes(pair):
    ours, theirs = pair
    msg = theirs.msg("x", {"when": "2020-01-02T03:04:05.5Z"})
    msg["header"]["date"] = "2020-01-02T03:04:05.123+01:00"
    msg["parent_header"] = {"msg_id": "p", "date": "2021-05-06T07:08:09Z", "not_a_date": "2021-05"}
    got = ours.deserialize(ours.serialize(msg)[1:])
    expected = ClientSession(key=KEY).deserialize(theirs.serialize(msg)[1:])
    assert got["header"] == expected["header"] and got["parent_header"] == expected["parent_header"]
    assert isinstance(got["header"]["date"], datetime)
    assert got["content"] == {"when": "2020-01-02T03:04:05.5Z"}  # content keeps its strings


def test_pack_unpack_and_plain_members(pair):
    ours, theirs = pair
    obj = {"a": [1, "é", None], "d": datetime(2020, 1, 2, tzinfo=timezone.utc), "b": b"bytes", "t": (1, 2)}
    assert ours.pack(obj) == theirs.pack(obj)
    for data in (b'{"a": [1, "\\u00e9"]}', '{"s": "str"}', b'[1, 2]'):
        assert ours.unpack(data) == theirs.unpack(data)
    for name in ("packer", "unpacker", "check_pid", "debug", "adapt_version", "metadata",
                 "digest_history_size", "copy_threshold", "buffer_threshold", "item_threshold", "keyfile",
                 "none", "signature_scheme", "key", "session", "bsession", "username", "pid"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert isinstance(ours.digest_history, set) and type(ours.auth) is type(theirs.auth)


def test_send_raw_and_recv(pair):
    ours, theirs = pair
    msg = theirs.msg("x", {"c": 1})
    packed = theirs.serialize(msg)[3:]
    got, expected = Recorder(), Recorder()
    ours.send_raw(got, packed, ident=b"id")
    theirs.send_raw(expected, packed, ident=b"id")
    assert got.sent[0][0] == expected.sent[0][0]
    ctx = zmq.Context()
    try:
        push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        assert ours.recv(pull) == (None, None)  # nothing waiting (NOBLOCK)
        theirs.send(push, "hello", {"n": 1})
        assert pull.poll(10_000)
        idents, received = ours.recv(pull)
        assert idents == [] and received["content"] == {"n": 1} and received["msg_type"] == "hello"
    finally:
        push.close(0), pull.close(0)
        ctx.term()
