"""The IOPub outgoing queue: every iopub message, in order, coalesced and bounded.

Any thread publishes here; the thread holding the IO lock (usually the publisher itself, see
protocol.channel_thread.ChannelThread.kick) takes messages out and puts them on the socket.
- Order: one FIFO for all iopub messages, so stream text written before a display, an error or `idle`
  is always sent before it.
- Coalescing: consecutive stream writes for the same (stream name, request) grow one pending chunk,
  which is sent when it is `flush_interval` old, reaches `chunk_bytes`, is followed by another message,
  or is flushed explicitly. A flood of small prints becomes a few large messages.
- Backpressure: past `max_bytes` of queued text a writer waits until some has been sent, so
  output is never dropped for a client that keeps reading and memory stays bounded for one that does not.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque

from ipymini.protocol.wire import stream_content


class _Chunk:
    """Stream text waiting to become one `stream` message."""

    __slots__ = ("name", "request", "parts", "size", "born", "urgent")

    def __init__(self, name, request, text, now):
        self.name, self.request = name, request
        self.parts, self.size = [text], len(text)
        self.born, self.urgent = now, False


CHILD_DISPLAYS = ("display_data", "update_display_data", "clear_output", "execute_result")


def _publish_in_child(child_pipe, msg: dict, wake: bool = True, parent_frame=None) -> None:
    """publish_msg in a forked child: a display goes to the parent whole through the children's pipe
    (childpipe.py) when there is one, after the text printed before it; otherwise what a user would see
    (its text/plain, an error's traceback) is written to the child's stdout/stderr. Status and comm
    messages are dropped."""
    import sys

    content = msg.get("content")
    if not isinstance(content, dict):
        return
    kind = msg["header"]["msg_type"]
    if child_pipe is not None and kind in CHILD_DISPLAYS:
        sys.stdout.flush()
        sys.stderr.flush()
        child_pipe.send({"kind": "message", "msg_type": kind, "content": content,
                         "metadata": msg.get("metadata") or {}, "parent": msg.get("parent_header") or {}})
    elif kind in ("display_data", "update_display_data", "execute_result"):
        text = (content.get("data") or {}).get("text/plain")
        if isinstance(text, str):
            sys.stdout.write(text + "\n")
    elif kind == "error":
        lines = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
        sys.stderr.write("\n".join(map(str, lines)) + "\n")


class IOPubQueue:
    """Ordered, coalescing, bounded queue of iopub messages (see module docstring)."""

    def __init__(self, wire, flush_interval=0.01, chunk_bytes=1 << 18, max_bytes=1 << 26,
                 block_timeout=None):
        self.wire = wire
        # set by the sockets (protocol/sockets.py): send what is ready now; wake the IO thread so it
        # re-arms its flush timer; whether the calling thread must not wait for room (it is the sender)
        self.kick = self.wake = lambda: None
        self.is_sender = lambda: False
        self.flush_interval = flush_interval
        self.chunk_bytes = chunk_bytes
        self.max_bytes = max_bytes
        self.block_timeout = block_timeout
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._room_waiters = 0  # writers waiting in _wait_for_room (notified only when there are)
        self._items: deque = deque()  # _Chunk or (frames, size)
        self._bytes = 0
        self.partials_due = None  # when the IO thread should publish threads' unfinished lines
        # when the sleeping IO thread wakes on its own (set by it; None: awake, or not on a timer)
        self.io_wakes_at = None
        self.enqueued = 0  # messages ever queued (a chunk counts once) ...
        self.sent = 0  # ... and taken out to send: replies wait for `sent` to pass their barrier

    # -- producers (any thread) --

    def publish(self, msg_type: str, content: dict, request=None, metadata=None, buffers=None,
                header=None, wake: bool = True) -> dict:
        """Queue a message for iopub, parented to `request` (a Request or None), and send what is
        ready. Returns the message. wake=False: a message queued right after this one sends both."""
        if header is not None:
            return self._publish_built(msg_type, content, request, metadata, buffers, header, wake)
        msg, frames = self.wire.message_frames(
            msg_type, content, request.header if request is not None else {},
            request.header_frame if request is not None else None, metadata, [msg_type.encode()])
        if buffers:
            msg["buffers"] = buffers
            frames.extend(buffers)
        self.publish_frames(frames, wake)
        return msg

    def _publish_built(self, msg_type, content, request=None, metadata=None, buffers=None,
                       header=None, wake=True) -> dict:
        """`publish` by way of a message dict and `publish_msg` (a given header; a forked child)."""
        parent = request.header if request is not None else {}
        msg = self.wire.msg(msg_type, content, parent=parent, metadata=metadata, header=header)
        if buffers:
            msg["buffers"] = buffers
        self.publish_msg(msg, wake, request.header_frame if request is not None else None)
        return msg

    def publish_msg(self, msg: dict, wake: bool = True, parent_frame: bytes | None = None) -> None:
        """Queue an already built message (parent_frame: its parent's header as received)."""
        frames = self.wire.serialize(msg, ident=[msg["header"]["msg_type"].encode()],
                                        parent_frame=parent_frame)
        if msg.get("buffers"):
            frames.extend(msg["buffers"])
        self.publish_frames(frames, wake)

    def publish_frames(self, frames: list, wake: bool = True) -> None:
        """Queue a message already serialized and signed (topic frame first)."""
        size = sum(map(len, frames))
        with self._lock:
            self._wait_for_room(size)
            self._items.append((frames, size))
            self._bytes += size
            self.enqueued += 1
        if wake:
            self.kick()

    def write_stream(self, name: str, text: str, request) -> None:
        """Queue stream text; it joins the pending chunk when that is for the same stream and request."""
        if not text:
            return
        step = self.chunk_bytes
        pieces = (text,) if len(text) <= step else [text[i:i + step] for i in range(0, len(text), step)]
        for piece in pieces:
            with self._lock:
                self._wait_for_room(len(piece))
                items = self._items
                tail = items[-1] if items else None
                if (tail.__class__ is _Chunk and tail.request is request and tail.name == name
                        and tail.size < self.chunk_bytes):
                    tail.parts.append(piece)
                    tail.size += len(piece)
                    full, new = tail.size >= self.chunk_bytes, False
                else:
                    items.append(_Chunk(name, request, piece, time.monotonic()))
                    self.enqueued += 1
                    full, new = len(piece) >= self.chunk_bytes, True
                self._bytes += len(piece)
            if full or new:
                self.kick()  # a full chunk goes now, and so does whatever waited ahead of a new one
            if new:
                self._wake_by(time.monotonic() + self.flush_interval)  # the new chunk's flush timer

    def partial_waiting(self) -> None:
        """A thread holds an unfinished line: make sure the IO thread publishes it soon."""
        if self.partials_due is None:
            self.partials_due = due = time.monotonic() + self.flush_interval
            self._wake_by(due)

    def _wake_by(self, due: float) -> None:
        """Make sure the IO thread wakes by `due` (each needless wake-up costs a GIL hand-over)."""
        wakes_at = self.io_wakes_at
        if wakes_at is None or wakes_at > due:
            self.wake()

    def flush(self, wake: bool = True) -> None:
        """Ask for the pending stream chunk to be sent now instead of at its timer."""
        with self._lock:
            if self._items and self._items[-1].__class__ is _Chunk:
                self._items[-1].urgent = True
        if wake:
            self.kick()

    def _wait_for_room(self, size: int) -> None:
        # Called with the lock held. The sender (who holds the IO lock) must never wait for itself.
        if self._bytes + size <= self.max_bytes or not self._bytes:
            return
        if self.is_sender():
            return
        deadline = None if self.block_timeout is None else time.monotonic() + self.block_timeout
        while self._bytes and self._bytes + size > self.max_bytes:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return  # give up waiting; the message is still queued, never dropped here
            self._room_waiters += 1
            try:
                self._drained.wait(remaining)
            finally:
                self._room_waiters -= 1

    def after_fork_in_child(self, child_pipe=None) -> None:
        """In a forked child nothing is ever sent (the sockets are the parent's): forget what the
        parent had queued, and hand what the child publishes to the parent through `child_pipe`, or
        as text on its stdout/stderr (see `_publish_in_child`)."""
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._room_waiters = 0
        self._items.clear()
        self._bytes = 0
        self.kick = self.wake = lambda: None
        self.publish = self._publish_built
        self.publish_msg = functools.partial(_publish_in_child, child_pipe)
        self.publish_frames = lambda *args, **kwargs: None
        self.write_stream = lambda *args, **kwargs: None

    # -- consumer (the thread holding the IO lock) --

    def pop(self, now: float):
        """Next message frames ready to send, or (None, seconds until the pending chunk is due)."""
        with self._lock:
            if not self._items:
                return None, None
            head = self._items[0]
            if head.__class__ is _Chunk:
                due = head.born + self.flush_interval
                if (len(self._items) == 1 and not head.urgent and head.size < self.chunk_bytes
                        and now < due):
                    return None, due - now
                self._items.popleft()
                self._bytes -= head.size
            else:
                self._items.popleft()
                self._bytes -= head[1]
            self.sent += 1
            if self._room_waiters:
                self._drained.notify_all()
        if head.__class__ is _Chunk:
            text = head.parts[0] if len(head.parts) == 1 else "".join(head.parts)
            request = head.request
            _, frames = self.wire.message_frames(
                "stream", stream_content(head.name, text),
                request.header if request is not None else {},
                request.header_frame if request is not None else None,
                ident=[b"stream." + head.name.encode()])
            return frames, None
        return head[0], None

    def next_due(self, now: float):
        """Seconds until the next message is ready to send: 0 if one is, None if the queue is empty."""
        with self._lock:
            if not self._items:
                return None
            head = self._items[0]
            if head.__class__ is _Chunk and len(self._items) == 1 and not head.urgent \
                    and head.size < self.chunk_bytes:
                return max(0.0, head.born + self.flush_interval - now)
            return 0.0

    def pending(self) -> bool:
        """Whether anything is waiting to be sent."""
        return bool(self._items)
