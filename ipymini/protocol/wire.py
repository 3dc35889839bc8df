"""The Jupyter wire format: building, signing, verifying and (de)serializing messages.

One small class, byte-compatible with jupyter_client's Session (the same frames, HMAC over header,
parent header, metadata and content, the same JSON rules), written for the kernel's hot path: it builds
a header without datetime round trips, never parses dates it does not use, and does not import the
jupyter_client package (whose import was half of the kernel's start-up time). Incoming headers keep their
`date` as the string the client sent.

Frames of a message: [routing identities..., DELIM, signature, header, parent_header, metadata, content,
buffers...].
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import math
import numbers
import os
import threading
import time
import uuid
from binascii import b2a_base64
from collections import deque
from collections.abc import Iterable
from datetime import date, datetime, timezone

from ipymini.protocol import PROTOCOL_VERSION

log = logging.getLogger("ipymini")

DELIM = b"<IDS|MSG>"
MIN_FRAMES = 5  # signature, header, parent_header, metadata, content
REPLAY_MEMORY = 1 << 16  # signatures remembered for replay refusal (about 10 MB at most)


_second = (None, "")  # (a UTC second, its "YYYY-MM-DDTHH:MM:SS"): replaced whole, so thread-safe


def now_iso() -> str:
    """The current UTC time as the protocol writes dates (ISO 8601, ending in Z), exactly as
    `datetime.now(timezone.utc).isoformat()` spells it (no fraction when the microseconds are 0),
    formatting the date and time of day only once a second."""
    global _second
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    known, text = _second
    if known != sec:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second = (sec, text)
    return f"{text}.{us:06d}Z" if us else text + "Z"


def _json_default(obj):
    """What JSON cannot encode natively, converted as jupyter_client does."""
    if isinstance(obj, datetime):
        if obj.tzinfo is None:
            obj = obj.replace(tzinfo=timezone.utc)
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return b2a_base64(obj, newline=False).decode("ascii")
    if isinstance(obj, Iterable):
        return list(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise TypeError(f"{obj!r} is not JSON serializable")


def _clean(obj):
    """Last resort for a message JSON refused: non-finite floats become their repr, keys strings."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_clean(v) for v in obj]
    return obj


def _make_encode():
    """json.dumps(obj, default=_json_default, ensure_ascii=False, allow_nan=False), minus the cost of
    building an encoder for every call (about half of packing a small header): one C encoder, kept.
    It has no cycle check, so a cyclic message part fails with RecursionError instead."""
    from json.encoder import c_make_encoder, encode_basestring

    if c_make_encoder is None:  # the pure-Python json module
        return json.JSONEncoder(default=_json_default, ensure_ascii=False, allow_nan=False).encode
    encoder = c_make_encoder(None, _json_default, encode_basestring, None, ": ", ", ", False, False,
                             False)
    return lambda obj: "".join(encoder(obj, 0))


_encode = _make_encode()

# characters JSON must escape in a string, but for the newline (the one a stream's text is full of)
_ESCAPED_BUT_NEWLINE = bytes(range(32)).replace(b"\n", b"") + b'"\\'
_NOT_ESCAPED = bytes(i for i in range(256) if i not in _ESCAPED_BUT_NEWLINE)


def pack(obj) -> bytes:
    """JSON bytes of a message part (UTF-8; lone surrogates pass through as jupyter_client does)."""
    try:
        text = _encode(obj)
    except (TypeError, ValueError, RecursionError) as e:
        try:
            text = _encode(_clean(obj))
        except RecursionError:
            raise ValueError("a message part refers to itself; it cannot be sent as JSON") from None
        log.warning("a message part was not valid JSON (%s); sent a cleaned copy", e)
    return text.encode("utf-8", "surrogateescape")


def stream_content(name: str, text: str) -> bytes:
    """pack({"name": name, "text": text}), byte for byte, at several times the speed for the text
    streams mostly carry (ASCII whose only character to escape is the newline); anything else goes
    through the JSON encoder."""
    if text.isascii():
        data = text.encode()
        if not data.translate(None, _NOT_ESCAPED):
            return b'{"name": %s, "text": "%s"}' % (pack(name), data.replace(b"\n", b"\\n"))
    return pack({"name": name, "text": text})


def unpack(data) -> dict:
    """A message part from JSON bytes."""
    if not isinstance(data, str):
        data = bytes(data).decode("utf-8", "replace")
    return json.loads(data)


def _hmac_pads(key: bytes, algorithm: str):
    """HMAC (RFC 2104) as two hash states, the key already absorbed: signing a message is then two
    copies and updates, without the hmac module's per-call object."""
    inner, outer = hashlib.new(algorithm), hashlib.new(algorithm)
    if len(key) > inner.block_size:
        key = hashlib.new(algorithm, key).digest()
    key = key.ljust(inner.block_size, b"\0")
    inner.update(bytes(b ^ 0x36 for b in key))
    outer.update(bytes(b ^ 0x5C for b in key))
    return inner, outer


class Wire:
    """Builds, signs, verifies and (de)serializes messages for one kernel's connection key."""

    version = PROTOCOL_VERSION

    def __init__(self, key: bytes = b"", signature_scheme: str = "hmac-sha256",
                 username: str | None = None):
        if isinstance(key, str):
            key = key.encode()
        if username is None:  # jupyter_client's Session default, which ipykernel's headers carry
            username = os.environ.get("USER", "username")
        self.key = key
        self.signature_scheme = signature_scheme
        algorithm = signature_scheme.split("-", 1)[1] if signature_scheme.startswith("hmac-") else ""
        if algorithm not in hashlib.algorithms_available:
            raise ValueError(f"unsupported signature scheme {signature_scheme!r}")
        self.auth = hmac.new(key, digestmod=algorithm) if key else None
        self._pads = _hmac_pads(key, algorithm) if key else None
        self.session_id = str(uuid.uuid4())
        self.username = username
        self._id_prefix = f"{self.session_id}_{os.getpid()}_"
        self._counter = itertools.count()  # next() is atomic: ids stay unique across threads
        # a header as pack() encodes it, between its msg_type and its date (see message_frames)
        self._header_middle = (f', "username": {_encode(username)}, "session": '
                               f'{_encode(self.session_id)}, "date": "')
        self._header_end = f'", "version": {_encode(PROTOCOL_VERSION)}}}'
        self._types: dict = {}  # msg_type -> its JSON
        # replay refusal: the signatures of the last REPLAY_MEMORY messages received (bounded memory
        # over a long session; an older message replayed is accepted again, as jupyter_client's
        # Session, which keeps 2**16 and culls at random, may also accept)
        self.seen_signatures: set = set()
        self._seen_order: deque = deque()
        self._seen_lock = threading.Lock()  # shell, control and stdin are read on different threads

    # -- building --

    def new_msg_id(self) -> str:
        """A new message id: the session id, the pid and a counter (as jupyter_client's Session)."""
        return self._id_prefix + str(next(self._counter))

    def header(self, msg_type: str) -> dict:
        """A new message header."""
        return {"msg_id": self._id_prefix + str(next(self._counter)), "msg_type": msg_type,
                "username": self.username, "session": self.session_id,
                "date": now_iso(), "version": PROTOCOL_VERSION}

    def msg(self, msg_type: str, content: dict | None = None, parent: dict | None = None,
            header: dict | None = None, metadata: dict | None = None) -> dict:
        """A message dict (the shape jupyter_client's Session.msg returns). `parent` is a header or a
        whole message."""
        header = self.header(msg_type) if header is None else header
        if parent is None:
            parent_header = {}
        else:  # shared, not copied: a message's parent header is never changed
            parent_header = parent["header"] if "header" in parent else parent
        return {"header": header, "msg_id": header["msg_id"], "msg_type": header["msg_type"],
                "parent_header": parent_header, "content": {} if content is None else content,
                "metadata": {} if metadata is None else dict(metadata)}

    def message_frames(self, msg_type: str, content, parent: dict, parent_frame: bytes | None,
                       metadata: dict | None = None, ident=None) -> tuple[dict, list]:
        """A new message and its frames: what `msg` then `serialize` give, byte for byte, with the
        header encoded from the values it is built of (a publisher's hot path)."""
        msg_id = self._id_prefix + str(next(self._counter))
        date = now_iso()
        header = {"msg_id": msg_id, "msg_type": msg_type, "username": self.username,
                  "session": self.session_id, "date": date, "version": PROTOCOL_VERSION}
        msg = {"header": header, "msg_id": msg_id, "msg_type": msg_type, "parent_header": parent,
               "content": {} if content is None else content,
               "metadata": {} if metadata is None else dict(metadata)}
        kind = self._types.get(msg_type)
        if kind is None:
            kind = self._types[msg_type] = _encode(msg_type)
        # the id is the session's uuid, the pid and a counter, the date digits: nothing to escape
        head = (f'{{"msg_id": "{msg_id}", "msg_type": {kind}{self._header_middle}{date}'
                f'{self._header_end}').encode("utf-8", "surrogateescape")
        return msg, self._frames(msg, head, parent_frame, ident)

    def sign(self, parts: list) -> bytes:
        """HMAC hex digest of the four JSON parts (empty when the connection has no key)."""
        if self._pads is None:
            return b""
        inner, outer = self._pads
        h = inner.copy()
        for part in parts:
            h.update(part)
        h2 = outer.copy()
        h2.update(h.digest())
        return h2.hexdigest().encode()

    def serialize(self, msg: dict, ident=None, parent_frame: bytes | None = None) -> list:
        """Frames for a message dict, with routing identities `ident` (bytes or a list) in front.

        parent_frame: the parent's header exactly as it came on the wire (it is what the message's
        parent_header holds), sent back as it is instead of being encoded again. Content may be
        given already encoded (bytes)."""
        return self._frames(msg, pack(msg["header"]), parent_frame, ident)

    def _frames(self, msg: dict, header: bytes, parent_frame, ident) -> list:
        content = msg.get("content")
        metadata = msg.get("metadata")
        parts = [header, parent_frame if parent_frame is not None else pack(msg["parent_header"]),
                 pack(metadata) if metadata else b"{}",
                 content if isinstance(content, bytes) else pack({} if content is None else content)]
        frames = list(ident) if isinstance(ident, list) else ([] if ident is None else [ident])
        frames.append(DELIM)
        frames.append(self.sign(parts))
        frames.extend(parts)
        return frames

    # -- reading --

    @staticmethod
    def split_identities(frames: list) -> tuple[list, list]:
        """(routing identities, the rest after the delimiter); ValueError if there is no delimiter."""
        i = frames.index(DELIM)
        return frames[:i], frames[i + 1:]

    def remember(self, signature: bytes) -> None:
        """Refuse this signature if it comes again (within the replay memory)."""
        with self._seen_lock:
            self.seen_signatures.add(signature)
            self._seen_order.append(signature)
            if len(self._seen_order) > REPLAY_MEMORY:
                self.seen_signatures.discard(self._seen_order.popleft())

    def deserialize(self, frames: list) -> dict:
        """A verified message dict from the frames after the delimiter; ValueError if the signature is
        missing, wrong or replayed, or the message is malformed."""
        if len(frames) < MIN_FRAMES:
            raise ValueError(f"malformed message: {len(frames)} frames after the delimiter")
        if self.auth is not None:
            signature = bytes(frames[0])
            if not signature:
                raise ValueError("unsigned message")
            if signature in self.seen_signatures:
                raise ValueError("replayed message (duplicate signature)")
            if not hmac.compare_digest(signature, self.sign(frames[1:5])):
                raise ValueError("invalid signature")
            self.remember(signature)
        header = unpack(frames[1])
        if not isinstance(header, dict) or "msg_id" not in header or "msg_type" not in header:
            raise ValueError("message header is not an object with msg_id and msg_type")
        return {"header": header, "msg_id": header["msg_id"], "msg_type": header["msg_type"],
                "parent_header": unpack(frames[2]), "metadata": unpack(frames[3]),
                "content": unpack(frames[4]), "buffers": [memoryview(b) for b in frames[5:]]}
