"""jupyter_client's `Session` API over the kernel's own wire code, for `get_ipython().kernel.session`.

Under ipykernel, `kernel.session` is a jupyter_client Session, and code in the wild builds, signs and
sends messages with it (`session.send(kernel.iopub_socket, ...)`, `session.msg(...)`,
`session.serialize(...)`, `session.deserialize(...)`). `Session` here behaves as jupyter_client 8's does
for those calls (the same dicts, keys, value types and errors: a header's `date` is a timezone-aware
datetime, `send` returns the message with a `tracker`), with the kernel's key, session id, message
counter and replay memory (`digest_history`), without importing jupyter_client (start-up time) or
traitlets. Not offered: the traitlets machinery (`config`, `observe`, ...), `clone`, `unserialize`,
and adapting messages of protocol version 4 in `deserialize`.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
from datetime import datetime, timezone

import zmq

from ipymini.protocol.wire import DELIM, MIN_FRAMES, REPLAY_MEMORY, pack, unpack

log = logging.getLogger("ipymini")

# a MessageTracker that is always done (what jupyter_client returns when nothing is tracked)
DONE = zmq.MessageTracker()
# jupyter_client.jsonutil's ISO 8601 pattern: strings of this form become datetimes when received
_ISO8601 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d{1,6})?(Z|([\+\-]\d{2}:?\d{2}))?$")


def _parse_date(text: str):
    if not _ISO8601.match(text):
        return text
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo is not None else dt.astimezone()  # naive: local time, as jupyter_client


def extract_dates(obj):
    """A copy of an unpacked JSON value with its ISO 8601 strings turned into datetimes."""
    if isinstance(obj, dict):
        return {k: extract_dates(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [extract_dates(v) for v in obj]
    if isinstance(obj, str):
        return _parse_date(obj)
    return obj


def extract_header(msg_or_header) -> dict:
    """The header of a message, or the header itself (jupyter_client's extract_header)."""
    if not msg_or_header:
        return {}
    try:
        header = msg_or_header["header"]
    except KeyError:
        msg_or_header["msg_id"]  # neither a message nor a header: KeyError, as jupyter_client
        header = msg_or_header
    return header if isinstance(header, dict) else dict(header)


class Session:
    """The kernel's messages as jupyter_client's Session makes them, over `wire` (a protocol.wire.Wire).

    The session id, username, key and message ids are the kernel's own, so what user code sends is
    indistinguishable from what the kernel sends."""

    packer = unpacker = "json"
    debug = False
    adapt_version = 0
    copy_threshold = 1 << 16
    buffer_threshold = 1024
    item_threshold = 64
    digest_history_size = REPLAY_MEMORY
    keyfile = ""
    none = b"{}"

    def __init__(self, wire):
        self._wire = wire
        self.pack = pack
        self.unpack = unpack
        self.metadata: dict = {}
        self.check_pid = True
        self.pid = os.getpid()

    # -- identity and keys --

    @property
    def session(self) -> str:
        """This kernel's session id (headers' `session`)."""
        return self._wire.session_id

    @property
    def bsession(self) -> bytes:
        return self._wire.session_id.encode("ascii")

    @property
    def username(self) -> str:
        return self._wire.username

    @property
    def key(self) -> bytes:
        return self._wire.key

    @property
    def signature_scheme(self) -> str:
        return self._wire.signature_scheme

    @property
    def auth(self):
        """The HMAC object messages are signed with (None without a key)."""
        return self._wire.auth

    @property
    def digest_history(self) -> set:
        """Signatures of the messages received lately (a replayed one is refused); shared with the
        kernel's own receiving."""
        return self._wire.seen_signatures

    @property
    def msg_id(self) -> str:
        """A new message id (each read gives the next one)."""
        return self._wire.new_msg_id()

    # -- building --

    def msg_header(self, msg_type: str) -> dict:
        """A new header: msg_id, msg_type, username, session, date (a timezone-aware datetime),
        version."""
        return {"msg_id": self.msg_id, "msg_type": msg_type, "username": self.username,
                "session": self.session, "date": datetime.now(timezone.utc),
                "version": self._wire.version}

    def msg(self, msg_type: str, content: dict | None = None, parent: dict | None = None,
            header: dict | None = None, metadata: dict | None = None) -> dict:
        """The nested message dict (`parent`: a message or a header)."""
        header = self.msg_header(msg_type) if header is None else header
        msg_metadata = self.metadata.copy()
        if metadata is not None:
            msg_metadata.update(metadata)
        return {"header": header, "msg_id": header["msg_id"], "msg_type": header["msg_type"],
                "parent_header": {} if parent is None else extract_header(parent),
                "content": {} if content is None else content, "metadata": msg_metadata}

    def sign(self, msg_list: list) -> bytes:
        """HMAC hex digest of the packed parts (b'' without a key)."""
        return self._wire.sign(msg_list)

    def serialize(self, msg: dict, ident=None) -> list:
        """[idents..., DELIM, signature, header, parent_header, metadata, content] as bytes."""
        content = msg.get("content", {})
        if content is None:
            content = self.none
        elif isinstance(content, dict):
            content = self.pack(content)
        elif isinstance(content, str):
            content = content.encode("utf8")
        elif not isinstance(content, bytes):
            raise TypeError(f"Content incorrect type: {type(content)}")
        parts = [self.pack(msg["header"]), self.pack(msg["parent_header"]), self.pack(msg["metadata"]),
                 content]
        frames = list(ident) if isinstance(ident, list) else [] if ident is None else [ident]
        frames.append(DELIM)
        frames.append(self.sign(parts))
        frames.extend(parts)
        return frames

    def send(self, stream, msg_or_type, content: dict | None = None, parent: dict | None = None,
             ident=None, buffers=None, track: bool = False, header: dict | None = None,
             metadata: dict | None = None):
        """Build (unless given a message dict), sign and send on `stream` (a socket, or the kernel's
        `iopub_socket`; None: build only). Returns the message with a `tracker`; None in a forked
        child while `check_pid` is set (nothing is sent there)."""
        if not isinstance(stream, zmq.Socket):
            track = False  # only real sockets track
        if isinstance(msg_or_type, dict):
            msg = msg_or_type
            buffers = buffers or msg.get("buffers", [])
        else:
            msg = self.msg(msg_or_type, content=content, parent=parent, header=header, metadata=metadata)
        if self.check_pid and os.getpid() != self.pid:
            log.warning("WARNING: attempted to send message from fork\n%s", msg)
            return None
        buffers = [] if buffers is None else buffers
        for i, buf in enumerate(buffers):
            try:
                view = buf if isinstance(buf, memoryview) else memoryview(buf)
            except TypeError as e:
                raise TypeError("Buffer objects must support the buffer protocol.") from e
            if not view.contiguous:
                raise ValueError(f"Buffer {i} ({buf!r}) is not contiguous")
        if self.adapt_version:
            from jupyter_client.adapter import adapt  # only when a user asks for an old version

            msg = adapt(msg, self.adapt_version)
        frames = self.serialize(msg, ident)
        frames.extend(buffers)
        copy = max(len(f) for f in frames) < self.copy_threshold
        tracker = DONE
        if stream and buffers and track and not copy:
            tracker = stream.send_multipart(frames, copy=False, track=True)
        elif stream:
            stream.send_multipart(frames, copy=copy)
        msg["tracker"] = tracker
        return msg

    def send_raw(self, stream, msg_list: list, flags: int = 0, copy: bool = True, ident=None) -> None:
        """Send already packed parts [header, parent, metadata, content, buffers...], signed here."""
        frames = [ident] if isinstance(ident, bytes) else list(ident or ())
        frames.append(DELIM)
        frames.append(self.sign(msg_list[0:4]))
        frames.extend(msg_list)
        stream.send_multipart(frames, flags, copy=copy)

    # -- reading --

    def feed_identities(self, msg_list: list, copy: bool = True) -> tuple[list, list]:
        """(routing identities, the frames after the delimiter); ValueError without a delimiter."""
        if copy:
            i = msg_list.index(DELIM)
            return msg_list[:i], msg_list[i + 1:]
        for i, frame in enumerate(msg_list):
            if frame.bytes == DELIM:
                return [bytes(m.bytes) for m in msg_list[:i]], msg_list[i + 1:]
        raise ValueError("DELIM not in msg_list")

    def deserialize(self, msg_list: list, content: bool = True, copy: bool = True) -> dict:
        """The message dict of frames after the delimiter, verified (a replayed signature is refused)
        and with header dates as datetimes."""
        if not copy:
            msg_list = [bytes(m.bytes) for m in msg_list[:MIN_FRAMES]] + list(msg_list[MIN_FRAMES:])
        if self.auth is not None:
            signature = msg_list[0]
            if not signature:
                raise ValueError("Unsigned Message")
            if signature in self.digest_history:
                raise ValueError(f"Duplicate Signature: {signature!r}")
            if content:  # a peek (content=False) does not count as receiving it
                self._wire.remember(signature)
            if not hmac.compare_digest(signature, self.sign(msg_list[1:5])):
                raise ValueError(f"Invalid Signature: {signature!r}")
        if len(msg_list) < MIN_FRAMES:
            raise TypeError(f"malformed message, must have at least {MIN_FRAMES} elements")
        header = self.unpack(msg_list[1])
        buffers = [memoryview(b) for b in msg_list[5:]]
        if buffers and buffers[0].shape is None:  # zmq.Frame views (pyzmq #646): copy
            buffers = [memoryview(bytes(b.bytes)) for b in msg_list[5:]]
        return {"header": extract_dates(header), "msg_id": header["msg_id"],
                "msg_type": header["msg_type"], "parent_header": extract_dates(self.unpack(msg_list[2])),
                "metadata": self.unpack(msg_list[3]),
                "content": self.unpack(msg_list[4]) if content else msg_list[4], "buffers": buffers}

    def recv(self, socket, mode: int = zmq.NOBLOCK, content: bool = True, copy: bool = True):
        """(identities, message) received from `socket`; (None, None) when nothing waits."""
        try:
            msg_list = socket.recv_multipart(mode, copy=copy)
        except zmq.ZMQError as e:
            if e.errno == zmq.EAGAIN:
                return None, None
            raise
        idents, msg_list = self.feed_identities(msg_list, copy)
        return idents, self.deserialize(msg_list, content=content, copy=copy)
