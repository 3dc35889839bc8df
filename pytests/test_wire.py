"""wire.py against jupyter_client's Session: the same frames both ways, the same refusals.

Unit tests on top of the real-kernel tests (every other test module talks to the kernel through
jupyter_client, so a wire incompatibility fails them all); these pin the edge cases.
"""

from __future__ import annotations

import gc
import math
from datetime import datetime, timezone

import pytest
from jupyter_client.session import Session

from ipymini.protocol.wire import DELIM, Wire

KEY = b"a-connection-key"


def test_our_messages_verify_and_decode_in_jupyter_client():
    wire = Wire(KEY)
    session = Session(key=KEY)
    parent = session.msg("execute_request", {"code": "1"})
    msg = wire.msg("execute_reply", {"status": "ok", "text": "héllo ✓", "n": 3},
                   parent=parent["header"], metadata={"status": "ok"})
    frames = wire.serialize(msg, ident=[b"client-id"])
    idents, rest = session.feed_identities(frames)
    assert idents == [b"client-id"]
    got = session.deserialize(rest)
    assert got["content"] == {"status": "ok", "text": "héllo ✓", "n": 3}
    assert got["metadata"] == {"status": "ok"}
    assert got["header"]["msg_type"] == "execute_reply"
    assert got["header"]["version"] == "5.6"
    assert got["parent_header"]["msg_id"] == parent["header"]["msg_id"]
    assert isinstance(got["header"]["date"], datetime) and got["header"]["date"].tzinfo is not None


def test_jupyter_client_messages_verify_and_decode_here():
    wire = Wire(KEY, "hmac-sha256")
    session = Session(key=KEY)
    msg = session.msg("comm_msg", {"comm_id": "c", "data": {"x": [1, 2]}})
    msg["buffers"] = [b"\x00\x01binary"]
    frames = session.serialize(msg, ident=b"route") + [b"\x00\x01binary"]
    idents, rest = wire.split_identities(frames)
    got = wire.deserialize(rest)
    assert idents == [b"route"]
    assert got["content"] == {"comm_id": "c", "data": {"x": [1, 2]}}
    assert got["header"]["msg_id"] == msg["header"]["msg_id"]
    assert [bytes(b) for b in got["buffers"]] == [b"\x00\x01binary"]


def test_replay_memory_is_bounded_to_the_latest_signatures(monkeypatch):
    """A long session must not keep every signature: the last REPLAY_MEMORY are refused if replayed,
    older ones are forgotten (in-process; the kernel's memory over 20,000 cells is in test_memory)."""
    from ipymini.protocol import wire as wire_module

    monkeypatch.setattr(wire_module, "REPLAY_MEMORY", 4)
    wire = Wire(KEY)
    session = Session(key=KEY)
    sent = [wire.split_identities(session.serialize(session.msg("kernel_info_request")))[1]
            for _ in range(6)]
    for rest in sent:
        wire.deserialize(list(rest))
    assert len(wire.seen_signatures) == 4
    for rest in sent[2:]:
        with pytest.raises(ValueError, match="replayed"):
            wire.deserialize(list(rest))
    wire.deserialize(list(sent[0]))  # forgotten: accepted again (jupyter_client's Session culls too)


def test_bad_tampered_replayed_and_unsigned_messages_are_refused():
    wire = Wire(KEY)
    session = Session(key=KEY)
    frames = session.serialize(session.msg("kernel_info_request"))
    _, rest = wire.split_identities(frames)
    wire.deserialize(list(rest))
    with pytest.raises(ValueError, match="replayed"):
        wire.deserialize(list(rest))
    fresh = wire.split_identities(session.serialize(session.msg("kernel_info_request")))[1]
    tampered = fresh[:4] + [b'{"code": "evil"}']
    with pytest.raises(ValueError, match="invalid signature"):
        wire.deserialize(tampered)
    with pytest.raises(ValueError, match="unsigned"):
        wire.deserialize([b""] + fresh[1:])
    with pytest.raises(ValueError, match="malformed"):
        wire.deserialize(fresh[:3])
    other = Session(key=b"another-key")
    with pytest.raises(ValueError, match="invalid signature"):
        wire.deserialize(wire.split_identities(other.serialize(other.msg("kernel_info_request")))[1])
    with pytest.raises(ValueError):
        wire.split_identities([b"no", b"delimiter"])


def test_header_without_msg_id_is_refused():
    wire = Wire(KEY)
    parts = [b'{"msg_type": "execute_request"}', b"{}", b"{}", b"{}"]
    with pytest.raises(ValueError, match="msg_id"):
        wire.deserialize([wire.sign(parts)] + parts)


def test_no_key_means_no_signature_either_way():
    wire = Wire(b"")
    session = Session(key=b"")
    frames = wire.serialize(wire.msg("status", {"execution_state": "idle"}))
    assert frames[frames.index(DELIM) + 1] == b""
    assert session.deserialize(session.feed_identities(frames)[1])["content"]["execution_state"] == "idle"
    got = wire.deserialize(wire.split_identities(session.serialize(session.msg("kernel_info_request")))[1])
    assert got["msg_type"] == "kernel_info_request"


def test_other_signature_schemes_and_unknown_ones():
    wire = Wire(KEY, "hmac-sha512")
    session = Session(key=KEY, signature_scheme="hmac-sha512")
    frames = wire.serialize(wire.msg("status", {"execution_state": "busy"}))
    assert session.deserialize(session.feed_identities(frames)[1])["content"]["execution_state"] == "busy"
    with pytest.raises(ValueError, match="signature scheme"):
        Wire(KEY, "rot13")


def test_values_json_cannot_hold_are_converted_as_jupyter_client_does():
    wire = Wire(KEY)
    session = Session(key=KEY)
    when = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
    content = {"when": when, "raw": b"\x00\xff", "items": (1, 2), "nan": math.nan}
    ours = wire.serialize(wire.msg("display_data", content))
    decoded = session.deserialize(session.feed_identities(ours)[1])["content"]
    assert decoded["raw"] == "AP8=" and decoded["items"] == [1, 2] and decoded["nan"] == "nan"
    assert decoded["when"] == "2026-11-21T12:00:00Z"


def test_message_ids_are_unique_across_threads():
    import threading

    wire = Wire(KEY)
    ids: list = []

    def make():
        ids.extend(wire.header("status")["msg_id"] for _ in range(2000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 8000


def test_a_cyclic_message_part_is_a_clear_error():
    wire = Wire(KEY)
    content = {"a": []}
    content["a"].append(content)
    # the encoder recurses to the limit: a collection there would run earlier tests' finalizers with
    # no stack left, and pytest reports their RecursionErrors as unraisable (seen once on 3.12)
    gc.disable()
    try:
        with pytest.raises(ValueError, match="refers to itself"):
            wire.serialize(wire.msg("display_data", content))
    finally:
        gc.enable()



def test_fast_paths_give_the_same_bytes_as_the_general_ones(monkeypatch):
    """message_frames (the publisher's path) and stream_content (a stream chunk's content) must give
    exactly the frames msg() + serialize() and pack() give; the hand-rolled HMAC must equal hmac's."""
    import hashlib
    import hmac as hmac_module

    from ipymini.protocol import wire as wire_module
    from ipymini.protocol.wire import pack, stream_content

    monkeypatch.setattr(wire_module, "now_iso", lambda: "2026-01-02T03:04:05.000006Z")
    long_key = b"k" * 200  # longer than SHA-256's block: hashed first, as RFC 2104 says
    for key, scheme in ((KEY, "hmac-sha256"), (long_key, "hmac-sha256"), (KEY, "hmac-sha512"), (b"", "hmac-sha256")):
        wire = Wire(key, scheme, username="ü\"ser")
        parent = Wire(KEY).msg("execute_request", {"code": "1"})
        parent_frame = pack(parent["header"])
        for msg_type, content, metadata in (("display_data", {"data": {"text/plain": "5"}}, None),
                                            ("comm_msg", {"x": "é\n\"\\"}, {"k": 1}),
                                            ("ty\"pe", None, {})):
            got_msg, frames = wire.message_frames(msg_type, content, parent["header"], parent_frame,
                                                  metadata, [b"topic"])
            again = wire.serialize(got_msg, ident=[b"topic"], parent_frame=parent_frame)
            assert frames == again
            assert frames[3] == pack(got_msg["header"])
            assert got_msg == {**wire.msg(msg_type, content, parent=parent["header"], metadata=metadata,
                                          header=got_msg["header"])}
            if key:
                expected = hmac_module.new(key, b"".join(frames[3:7]), getattr(hashlib, scheme[5:]))
                assert frames[2] == expected.hexdigest().encode()
    texts = ["", "plain\n" * 1000, "tab\tand \"quotes\" and \\ back\n", "\x00\x1f\x7f", "héllo ✓\n",
             "lone \udcff surrogate\n", "\r\n\b\f", "x" * 100 + "\n"]
    for name in ("stdout", "stderr"):
        for text in texts:
            assert stream_content(name, text) == pack({"name": name, "text": text}), repr(text)


def test_now_iso_spells_dates_as_datetime_does(monkeypatch):
    from ipymini.protocol import wire as wire_module

    for ns in (1_700_000_000_000_000_000, 1_700_000_000_123_456_789, 1_700_000_001_000_001_000):
        monkeypatch.setattr(wire_module.time, "time_ns", lambda ns=ns: ns)
        expected = datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc).replace(
            microsecond=ns // 1000 % 1_000_000)
        assert wire_module.now_iso() == expected.isoformat().replace("+00:00", "Z")
