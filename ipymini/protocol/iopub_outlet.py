"""IOPubOutlet: puts an IOPub source's messages on the XPUB socket, losslessly while subscribers read.

Owns the socket side of publishing: sending what the source (`IOPubSource`, output/front.py) has
ready, holding a message a full subscriber refused and retrying it first, the stall policy (a
subscriber that has not read for IPYMINI_IOPUB_STALL_TIMEOUT seconds misses messages, the others
keep receiving everything), and greeting new subscribers (JEP 65). It runs under the lock of the
ChannelThread that owns the socket, and lets that thread's replies go out as soon as the iopub
messages before them are sent.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import zmq

from ipymini import settings
from ipymini.protocol.zmq_calls import NOBLOCK, send_frames

log = logging.getLogger("ipymini")


class IOPubSource(Protocol):
    """Where the IO thread takes iopub messages from (output/front.OutputFront)."""

    enqueued: int  # messages ever queued ...
    sent: int  # ... and taken out to send: a reply waits for `sent` to pass the `enqueued` it saw

    def attach(self, sender) -> None:
        """Register the sending thread (`kick()`, `wake()`, `is_sender()`)."""

    def take(self, now: float) -> tuple:
        """(frames of the next message ready to send, None), or (None, seconds until one is due)."""

    def due_in(self, now: float) -> float | None:
        """Seconds until there is something to do (0: now); None: nothing waits."""

    def sleeping_until(self, when: float | None) -> None:
        """The thread sleeps until `when` (None: awake, or no timer)."""

    def on_timer(self, now: float) -> None:
        """A pass of the thread: publish what waited for a timer."""

    def pending(self) -> bool:
        """Whether anything waits to be sent."""

    def welcome(self, topic: str) -> None:
        """A new subscriber (JEP 65): queue its `iopub_welcome`."""

    def release_all(self) -> None:
        """At exit: queue everything buffered (never waiting for a writer), to be sent now."""


class IOPubOutlet:
    """The iopub socket of a ChannelThread and the source it publishes (see the module docstring)."""

    def __init__(self, socket, source: IOPubSource, outbox, send_outbox):
        """`outbox`, `send_outbox()`: the thread's queued replies, sent once their iopub messages are."""
        self.socket = socket
        self.source = source
        self._outbox = outbox
        self._send_outbox = send_outbox
        self.held = None  # frames refused by a full subscriber, sent first when room returns
        self._blocked_since = None
        self.stall_timeout = settings.value("IPYMINI_IOPUB_STALL_TIMEOUT")
        self._warned_stall = False

    def timeout(self) -> float | None:
        """Seconds until a pass is needed (to retry a held message, or for the source's timers)."""
        if self.held is not None:
            return 0.001  # a subscriber is full: retry soon (libzmq gives no POLLOUT for XPUB)
        return self.source.due_in(time.monotonic())

    def send(self, timers: bool) -> None:
        """Send what the source has ready (`timers`: let it publish what waited for a timer first)."""
        now = time.monotonic()
        if timers:
            self.source.on_timer(now)
        sock = self.socket
        take = self.source.take
        outbox = self._outbox
        while True:
            frames = self.held
            if frames is None:
                frames, _ = take(now)
                if frames is None:
                    break
            try:
                send_frames(sock, frames, NOBLOCK)
            except zmq.Again:
                if not self._stalled_too_long(now):
                    self.held = frames
                    return
                self._send_past_stalled(frames)
                self.held = None
                continue  # still stalled: the next message that finds no room goes the same way
            except zmq.ZMQError as e:
                log.warning("could not publish on iopub: %s", e)
            self.held = None
            self._blocked_since = None
            if outbox:  # replies whose outputs are now sent go out before later iopub messages
                self._send_outbox()

    def _stalled_too_long(self, now: float) -> bool:
        """A subscriber has had no room for `stall_timeout` seconds (a client that stopped reading)."""
        if self._blocked_since is None:
            self._blocked_since = now
        return now - self._blocked_since >= self.stall_timeout

    def _send_past_stalled(self, frames) -> None:
        """Send once without NODROP: subscribers with room get the message, the full one loses it.

        Output never waits forever on a client that stopped reading, and clients that read keep
        receiving everything. The next message tries losslessly again, so a client that resumes
        reading gets lossless delivery back at once.
        """
        sock = self.socket
        if not self._warned_stall:
            log.warning("an iopub subscriber has not read for %.0f s; it misses messages until it "
                        "reads again", self.stall_timeout)
            self._warned_stall = True
        sock.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            send_frames(sock, frames, NOBLOCK)
        finally:
            sock.setsockopt(zmq.XPUB_NODROP, 1)

    def greet_subscribers(self) -> None:
        """Receive subscriptions; a new subscriber's topic gets its `iopub_welcome`."""
        while True:
            try:
                frame = self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01":
                topic = frame[1:].decode("utf-8", "replace")
                self.source.welcome(topic)

    def drain(self, deadline: float) -> None:
        """At exit: send everything the source holds, until `deadline` (time.monotonic())."""
        source = self.source
        while time.monotonic() < deadline:
            source.release_all()
            self.send(timers=False)
            if self.held is None and not source.pending():
                return
            time.sleep(0.002)
