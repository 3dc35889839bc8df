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
import uuid
from binascii import b2a_base64
from collections import deque
from collections.abc import Iterable
from datetime import date, datetime, timezone

from ipymini import PROTOCOL_VERSION

log = logging.getLogger("ipymini")

DELIM = b"<IDS|MSG>"
MIN_FRAMES = 5  # signature, header, parent_header, metadata, content
REPLAY_MEMORY = 1 << 16  # signatures remembered for replay refusal (about 10 MB at most)


def now_iso() -> str:
    """The current UTC time as the protocol writes dates (ISO 8601, ending in Z)."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


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


def unpack(data) -> dict:
    """A message part from JSON bytes."""
    if not isinstance(data, str):
        data = bytes(data).decode("utf-8", "replace")
    return json.loads(data)


class Wire:
    """Builds, signs, verifies and (de)serializes messages for one kernel's connection key."""

    def __init__(self, key: bytes = b"", signature_scheme: str = "hmac-sha256", username: str = "kernel"):
        if isinstance(key, str):
            key = key.encode()
        algorithm = signature_scheme.split("-", 1)[1] if signature_scheme.startswith("hmac-") else ""
        if algorithm not in hashlib.algorithms_available:
            raise ValueError(f"unsupported signature scheme {signature_scheme!r}")
        self.auth = hmac.new(key, digestmod=algorithm) if key else None
        self.session_id = str(uuid.uuid4())
        self.username = username
        self._id_prefix = f"{self.session_id}_{os.getpid()}_"
        self._counter = itertools.count()  # next() is atomic: ids stay unique across threads
        # replay refusal: the signatures of the last REPLAY_MEMORY messages received (bounded memory
        # over a long session; an older message replayed is accepted again, as jupyter_client's
        # Session, which keeps 2**16 and culls at random, may also accept)
        self.seen_signatures: set = set()
        self._seen_order: deque = deque()
        self._seen_lock = threading.Lock()  # shell, control and stdin are read on different threads

    # -- building --

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

    def sign(self, parts: list) -> bytes:
        """HMAC hex digest of the four JSON parts (empty when the connection has no key)."""
        if self.auth is None:
            return b""
        h = self.auth.copy()
        for part in parts:
            h.update(part)
        return h.hexdigest().encode()

    def serialize(self, msg: dict, ident=None, parent_frame: bytes | None = None) -> list:
        """Frames for a message dict, with routing identities `ident` (bytes or a list) in front.

        parent_frame: the parent's header exactly as it came on the wire (it is what the message's
        parent_header holds), sent back as it is instead of being encoded again. Content may be
        given already encoded (bytes)."""
        content = msg.get("content")
        metadata = msg.get("metadata")
        parts = [pack(msg["header"]),
                 parent_frame if parent_frame is not None else pack(msg["parent_header"]),
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

    def _remember(self, signature: bytes) -> None:
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
            self._remember(signature)
        header = unpack(frames[1])
        if not isinstance(header, dict) or "msg_id" not in header or "msg_type" not in header:
            raise ValueError("message header is not an object with msg_id and msg_type")
        return {"header": header, "msg_id": header["msg_id"], "msg_type": header["msg_type"],
                "parent_header": unpack(frames[2]), "metadata": unpack(frames[3]),
                "content": unpack(frames[4]), "buffers": [memoryview(b) for b in frames[5:]]}
