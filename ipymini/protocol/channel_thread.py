"""ChannelThread: a group of ZMQ sockets behind one lock, and the thread that serves them.

Owns the socket-level send and receive paths: verifying and handing on what arrives, sending what any
thread queues (replies after the iopub messages queued before them), publishing the IOPub queue with
its flush timer, backpressure and stall policy, and greeting new iopub subscribers (JEP 65). Also the
small tools for that: `send_frames`, `input_waiting`, `Waker`.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque

import zmq

from ipymini import settings

log = logging.getLogger("ipymini")

KICK_WAIT = 1.0  # seconds a sender waits for the sockets before leaving its message to the IO thread

# pyzmq's Python layer costs ~1 µs per frame (enum flags, routing options): a message is 7+ frames and
# a `pass` cell sends four, so the hot path calls the Cython socket methods with plain int constants.
_send = zmq.backend.Socket.send
_poll = zmq.backend.zmq_poll  # reads ZMQ_EVENTS as getsockopt does, without its option enum (~1 µs)
_NOBLOCK, _SNDMORE, _POLLIN = 1, 2, 1
_COPY_BELOW = 1 << 16  # smaller frames are copied (cheaper than zero-copy bookkeeping)


def send_frames(sock, frames: list, flags: int = 0) -> None:
    """Send one multipart message (send_multipart without pyzmq's per-frame Python overhead)."""
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, more if i < last else flags, len(frame) < _COPY_BELOW)


def input_waiting(sock) -> bool:
    """Whether a message waits to be received on `sock` (reading ZMQ_EVENTS)."""
    return bool(_poll([(sock, _POLLIN)], 0))


class Waker:
    """A self-pipe a thread can poll on. `wake()` always writes a byte: a flag to skip the syscall
    could be left set by a KeyboardInterrupt landing between its two steps, and a lost wake-up would
    leave the IO thread asleep with messages queued."""

    def __init__(self):
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)

    def wake(self) -> None:
        try:
            os.write(self.wfd, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def clear(self) -> None:
        try:
            while os.read(self.rfd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.rfd)
        os.close(self.wfd)


class ChannelThread(threading.Thread):
    """Owns some ROUTER sockets (and optionally iopub): receives, verifies and hands on requests, and
    sends what other threads queue for its sockets.

    The sockets are guarded by one lock rather than confined to this thread: a thread that queues a
    message sends it itself when the lock is free (`kick`), so a cell's busy, outputs, reply and idle
    leave without waking this thread or handing the GIL back and forth. This thread sleeps in epoll
    on the sockets' ZMQ_FD notification descriptors, which never touches the sockets themselves, and
    takes the lock to receive, to send what was left for it, and for the flush timer.

    ZMQ_FD is edge-triggered: any operation on a socket may consume the notification of a message
    that has arrived. So whoever holds the lock reads until a socket reports no more input, and after
    its operations pokes whoever reads a socket that still has input waiting (`_notify_input`).
    """

    def __init__(self, name: str, wire, sockets: dict, on_message, iopub_socket=None, iopub=None,
                 waker=None, on_crash=None, lock=None):
        super().__init__(name=f"ipymini-{name}", daemon=True)
        self.wire = wire
        self.sockets = sockets  # channel name -> socket
        self.on_message = on_message  # (channel, idents, msg, header frame), called with the lock held
        self.iopub_socket = iopub_socket
        self.iopub = iopub
        self.waker = waker or Waker()
        self.on_crash = on_crash  # called if this thread dies of an error: the kernel shuts down
        self.lock = lock or threading.Lock()  # guards every operation on this thread's sockets
        self.lock_holder = None  # thread ident holding `lock` (it must never wait for iopub room)
        self.outbox: deque = deque()  # (channel, frames, iopub barrier or None)
        self.stopping = False
        self.closed = False  # the sockets are closed: nobody may touch them
        self.stopped = threading.Event()
        self._polled = [s for s in sockets.values()] + ([iopub_socket] if iopub_socket is not None else [])
        self.watched_elsewhere: dict = {}  # channel -> callback: another thread's loop reads it
        # what this thread sleeps on; other threads change it directly (epoll allows that while the
        # thread waits in it), so handing a socket over needs no wake-up
        self._epoll = select.epoll()
        self._epoll.register(self.waker.rfd, select.EPOLLIN)
        for sock in self._polled:
            self._epoll.register(sock.getsockopt(zmq.FD), select.EPOLLIN)
        self._more_input = False  # input is waiting that this thread must read: poll again at once
        self._sent_on_channels = False  # a socket other than iopub was used (see kick)
        self._iopub_blocked_since = None
        self._held = None  # iopub frames refused by a full subscriber, sent first when room returns
        self.stall_timeout = settings.value("IPYMINI_IOPUB_STALL_TIMEOUT")
        self._warned_stall = False
        self.flush_all = None  # publish every buffered stream text (streams.flush_all), at exit
        self.flush_partials = None  # the streams' timed flush (streams.flush_on_timer, set by the kernel)

    # -- called from any thread --

    def send(self, channel: str, frames: list) -> None:
        """Send frames on one of this thread's sockets (now, if the sockets are free)."""
        self.outbox.append((channel, frames, None))
        self.kick()

    def send_after_iopub(self, channel: str, frames: list, wake: bool = True) -> None:
        """Queue frames to go out once every iopub message queued before them has been sent.

        Replies and input requests use this so a client sees a request's outputs before its reply. If
        iopub is stalled by a subscriber that does not read, they go ahead rather than wait for it.
        wake=False: a message queued right after this one will send both.
        """
        self.outbox.append((channel, frames, self.iopub.enqueued))
        if wake:
            self.kick()

    def kick(self) -> None:
        """Send whatever is ready now, on the calling thread.

        If another thread holds the sockets, wait for it: it holds them only for a bounded pass,
        and giving up would leave the sending to a thread that must win the GIL back first (in a
        print flood that starved the IO thread and the cell alike)."""
        me = threading.get_ident()
        if me == self.ident:
            return  # this thread sends everything before it sleeps again
        if me == self.lock_holder:  # queued while this thread sends (a finalizer that prints, say)
            self.waker.wake()  # it may be past that message already: the IO thread will look
            return
        if not self.lock.acquire(timeout=KICK_WAIT):
            self.waker.wake()
            return
        try:
            if self.closed:
                return
            self.lock_holder = me
            self._sent_on_channels = False
            self._send_ready()
            # a send consumes only its own socket's notifications: after iopub alone, look at iopub
            self._notify_input(iopub_only=not self._sent_on_channels)
            if self._held is not None:
                self.waker.wake()  # a full subscriber: this thread retries on its timer
        finally:
            self.lock_holder = None
            self.lock.release()

    def watch_elsewhere(self, channel: str, on_input) -> None:
        """Let another thread's event loop read `channel` (it calls `receive`): this thread stops
        polling it, and `on_input()` is called (under the lock, from any thread) whenever input may
        be waiting there that the other loop's poll cannot see."""
        with self.lock:
            if self._epoll.closed:
                return  # this thread has ended
            if channel not in self.watched_elsewhere:
                self._epoll.unregister(self.sockets[channel].getsockopt(zmq.FD))
            self.watched_elsewhere[channel] = on_input
            self._locked_notify_input()

    def watch_here(self, channel: str) -> None:
        """Let this thread read `channel` (again)."""
        with self.lock:
            if self._epoll.closed:
                return  # this thread has ended
            if self.watched_elsewhere.pop(channel, None) is not None:
                self._epoll.register(self.sockets[channel].getsockopt(zmq.FD), select.EPOLLIN)
            self._locked_notify_input()

    def _locked_notify_input(self) -> None:
        if self.closed:
            return
        self.lock_holder = threading.get_ident()
        try:
            self._notify_input()
        finally:
            self.lock_holder = None

    def receive(self, channel: str) -> None:
        """Receive and hand on what waits on `channel`, on the calling thread (its loop watches it)."""
        with self.lock:
            if self.closed:
                return
            self.lock_holder = threading.get_ident()
            try:
                self._receive(self.sockets[channel], channel)
                self._send_ready()  # what handling it queued (a refusal's reply)
                self._notify_input()
            finally:
                self.lock_holder = None

    def wake(self) -> None:
        """Make this thread run a pass soon (to re-arm its flush timer)."""
        self.waker.wake()

    def sync(self, timeout: float = 1.0) -> bool:
        """Receive (and hand on) everything already waiting on this thread's sockets."""
        if not self.lock.acquire(timeout=timeout):
            return False
        try:
            if not self.closed:
                self.lock_holder = threading.get_ident()
                self._receive_all(everything=True)
                self._send_ready()
                self._notify_input()
        finally:
            self.lock_holder = None
            self.lock.release()
        return True

    def stop(self) -> None:
        self.stopping = True
        self.waker.wake()

    def after_fork_in_child(self) -> None:
        """In a forked child the sockets belong to the parent (libzmq is not fork-safe: touching them
        could disturb the parent's): never use them, nor wake the parent's thread."""
        self.closed = True
        self.lock = threading.Lock()
        self.lock_holder = None
        self.outbox.clear()
        self.kick = self.wake = self.waker.wake = lambda: None

    # -- the thread --

    def run(self) -> None:
        try:
            while not self.stopping:
                timeout = 0 if self._more_input else self._timeout_ms()
                if self.iopub is not None and timeout:
                    # producers need not wake a thread that will wake by then anyway
                    self.iopub.io_wakes_at = (None if timeout is None
                                              else time.monotonic() + timeout / 1000)
                self._epoll.poll(-1 if timeout is None else timeout / 1000)
                if self.iopub is not None:
                    self.iopub.io_wakes_at = None
                self.waker.clear()
                with self.lock:
                    self.lock_holder = self.ident
                    try:
                        self._receive_all()
                        self._send_ready(timers=True)
                        self._notify_input()
                    finally:
                        self.lock_holder = None
            with self.lock:
                self.lock_holder = self.ident
                self._drain_at_exit()
        except Exception:
            log.exception("%s crashed; shutting the kernel down", self.name)
            if self.on_crash is not None and not self.stopping:
                self.on_crash()
        finally:
            self.lock_holder = None
            with self.lock:
                self._epoll.close()
            self.stopped.set()

    def _notify_input(self, iopub_only: bool = False) -> None:
        """Called with the lock held, after any socket operation: make sure whoever reads a socket
        with input waiting will look (the operation may have consumed its ZMQ_FD notification).
        iopub_only: only iopub was used since the last call."""
        here = threading.get_ident() == self.ident
        for channel, sock in () if iopub_only else self.sockets.items():
            if input_waiting(sock):
                on_input = self.watched_elsewhere.get(channel)
                if on_input is not None:
                    on_input()
                elif here:
                    self._more_input = True
                else:
                    self.waker.wake()
        if self.iopub_socket is not None and input_waiting(self.iopub_socket):
            if here:
                self._more_input = True
            else:
                self.waker.wake()

    def _receive_all(self, everything: bool = False) -> None:
        """Receive on the sockets this thread reads (all of them when `everything`)."""
        self._more_input = False
        for channel, sock in self.sockets.items():
            if everything or channel not in self.watched_elsewhere:
                while self._receive(sock, channel) and everything:
                    pass
        if self.iopub_socket is not None:
            self._greet_subscribers()

    def _check_holder(self) -> None:
        # every socket operation happens under the lock, by the thread recorded as holding it
        if self.lock_holder != threading.get_ident():
            log.error("BUG: %s sockets used by a thread that does not hold their lock", self.name)

    def _send_ready(self, timers: bool = False) -> None:
        self._check_holder()
        self._send_outbox()
        if self.iopub is not None:
            self._send_iopub(timers)

    def _timeout_ms(self):
        if self.iopub is None:
            return None
        if self._held is not None:
            return 2  # a subscriber is full: retry soon (libzmq gives no POLLOUT for XPUB)
        now = time.monotonic()
        waits = []
        if self.iopub.partials_due is not None:
            waits.append(self.iopub.partials_due - now)
        due = self.iopub.next_due(now)
        if due is not None:
            waits.append(due)
        if not waits:
            return None
        return max(0, int(min(waits) * 1000) + 1)

    def _receive(self, sock, channel: str, limit: int = 64) -> bool:
        """Receive up to `limit` messages; True if it stopped at the limit."""
        self._check_holder()
        for _ in range(limit):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            parsed = self.parse(frames, channel)
            if parsed is not None:
                try:
                    self.on_message(channel, *parsed)
                except Exception:
                    log.exception("error handling a %s message", channel)
        return True  # fairness between sockets: the rest on the next pass (_notify_input sees it)

    def parse(self, frames: list, channel: str):
        """Verify and decode a multipart message: (idents, msg, the header frame as received), or
        None after logging why not."""
        try:
            idents, rest = self.wire.split_identities(frames)
        except Exception:
            log.warning("dropped a malformed message on %s: no delimiter frame", channel)
            return None
        try:
            msg = self.wire.deserialize(rest)
        except Exception as e:
            log.warning("dropped a message on %s that failed verification or decoding: %s", channel, e)
            return None
        return idents, msg, bytes(rest[1])

    def _send_outbox(self) -> None:
        outbox = self.outbox
        while outbox:
            channel, frames, barrier = outbox[0]
            if barrier is not None and self._held is None and self.iopub.sent < barrier:
                return  # iopub messages queued before this one go first
            outbox.popleft()
            self._sent_on_channels = True
            try:
                send_frames(self.sockets[channel], frames)
            except zmq.ZMQError as e:
                log.warning("could not send on %s: %s", channel, e)

    def _send_iopub(self, timers: bool) -> None:
        now = time.monotonic()
        due = self.iopub.partials_due
        if timers and due is not None and now >= due:
            self.iopub.partials_due = None
            if self.flush_partials is not None:
                still_held = self.flush_partials()
                if still_held is not None:
                    self.iopub.flush()  # that text has waited its interval already: send it now
                if still_held is not False:  # a writer held the lock, or an unfinished line waits
                    self.iopub.partials_due = now + self.iopub.flush_interval
        sock = self.iopub_socket
        while True:
            frames = self._held
            if frames is None:
                frames, _ = self.iopub.pop(now)
                if frames is None:
                    break
            try:
                send_frames(sock, frames, _NOBLOCK)
            except zmq.Again:
                if not self._stalled_too_long(now):
                    self._held = frames
                    return
                self._send_past_stalled(frames)
                self._held = None
                continue  # still stalled: the next message that finds no room goes the same way
            except zmq.ZMQError as e:
                log.warning("could not publish on iopub: %s", e)
            self._held = None
            self._iopub_blocked_since = None
            if self.outbox:  # replies whose outputs are now sent go out before later iopub messages
                self._send_outbox()

    def _stalled_too_long(self, now: float) -> bool:
        """A subscriber has had no room for `stall_timeout` seconds (a client that stopped reading)."""
        if self._iopub_blocked_since is None:
            self._iopub_blocked_since = now
        return now - self._iopub_blocked_since >= self.stall_timeout

    def _send_past_stalled(self, frames) -> None:
        """Send once without NODROP: subscribers with room get the message, the full one loses it.

        Output never waits forever on a client that stopped reading, and clients that read keep
        receiving everything. The next message tries losslessly again, so a client that resumes
        reading gets lossless delivery back at once.
        """
        sock = self.iopub_socket
        if not self._warned_stall:
            log.warning("an iopub subscriber has not read for %.0f s; it misses messages until it "
                        "reads again", self.stall_timeout)
            self._warned_stall = True
        sock.setsockopt(zmq.XPUB_NODROP, 0)
        try:
            send_frames(sock, frames, _NOBLOCK)
        finally:
            sock.setsockopt(zmq.XPUB_NODROP, 1)

    def _greet_subscribers(self) -> None:
        while True:
            try:
                frame = self.iopub_socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01":
                topic = frame[1:].decode("utf-8", "replace")
                self.iopub.publish("iopub_welcome", {"subscription": topic})

    def _drain_at_exit(self, seconds: float = 2.0) -> None:
        """Send what is still queued (replies, final iopub messages) before the sockets close."""
        deadline = time.monotonic() + seconds
        self._send_outbox()
        if self.iopub is None:
            return
        if self.flush_all is not None:
            self.flush_all(False)
        while time.monotonic() < deadline:
            self.iopub.flush()
            self._send_iopub(timers=False)
            if self._held is None and not self.iopub.pending():
                return
            time.sleep(0.002)
