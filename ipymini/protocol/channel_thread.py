"""ChannelThread: a group of ZMQ sockets behind one lock, and the thread that serves them.

Owns the socket-level send and receive paths: verifying and handing on what arrives, sending what any
thread queues (replies after the iopub messages queued before them), and when the group has the iopub
socket, running its `IOPubOutlet` (iopub_outlet.py: what an `IOPubSource` has ready goes out, with the
stall policy and subscriber greetings). Also `Waker`, the self-pipe the thread sleeps on.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque

import zmq

from ipymini.protocol.iopub_outlet import IOPubOutlet, IOPubSource
from ipymini.protocol.zmq_calls import input_waiting, send_frames

log = logging.getLogger("ipymini")

KICK_WAIT = 1.0  # seconds a sender waits for the sockets before leaving its message to the IO thread


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

    def __init__(self, name: str, wire, sockets: dict, on_message, iopub_socket=None,
                 iopub: IOPubSource | None = None, waker=None, on_crash=None, lock=None):
        """`iopub_socket` and `iopub` (its IOPubSource, which this thread registers with): the
        iopub socket this thread publishes on, if any."""
        super().__init__(name=f"ipymini-{name}", daemon=True)
        self.wire = wire
        self.sockets = sockets  # channel name -> socket
        self.on_message = on_message  # (channel, idents, msg, header frame), called with the lock held
        self.iopub_socket = iopub_socket
        self.iopub = iopub
        self.outbox: deque = deque()  # (channel, frames, iopub barrier or None)
        self.iopub_out = (IOPubOutlet(iopub_socket, iopub, self.outbox, self._send_outbox)
                          if iopub is not None else None)
        self.waker = waker or Waker()
        self.on_crash = on_crash  # called if this thread dies of an error: the kernel shuts down
        self.lock = lock or threading.Lock()  # guards every operation on this thread's sockets
        self.lock_holder = None  # thread ident holding `lock` (it must never wait for iopub room)
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
        if iopub is not None:
            iopub.attach(self)

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
            if self.iopub_out is not None and self.iopub_out.held is not None:
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

    def is_sender(self) -> bool:
        """Whether the calling thread sends on these sockets now (this thread, or the lock's holder)."""
        return threading.get_ident() in (self.lock_holder, self.ident)

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
                    self.iopub.sleeping_until(None if timeout is None
                                              else time.monotonic() + timeout / 1000)
                self._epoll.poll(-1 if timeout is None else timeout / 1000)
                if self.iopub is not None:
                    self.iopub.sleeping_until(None)
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
        if self.iopub_out is not None:
            self.iopub_out.greet_subscribers()

    def _check_holder(self) -> None:
        # every socket operation happens under the lock, by the thread recorded as holding it
        if self.lock_holder != threading.get_ident():
            log.error("BUG: %s sockets used by a thread that does not hold their lock", self.name)

    def _send_ready(self, timers: bool = False) -> None:
        self._check_holder()
        self._send_outbox()
        if self.iopub_out is not None:
            self.iopub_out.send(timers)

    def _timeout_ms(self):
        due = self.iopub_out.timeout() if self.iopub_out is not None else None
        if due is None:
            return None
        return max(0, int(due * 1000) + 1)

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
            if barrier is not None and self.iopub_out.held is None and self.iopub.sent < barrier:
                return  # iopub messages queued before this one go first
            outbox.popleft()
            self._sent_on_channels = True
            try:
                send_frames(self.sockets[channel], frames)
            except zmq.ZMQError as e:
                log.warning("could not send on %s: %s", channel, e)

    def _drain_at_exit(self, seconds: float = 2.0) -> None:
        """Send what is still queued (replies, final iopub messages) before the sockets close."""
        deadline = time.monotonic() + seconds
        self._send_outbox()
        if self.iopub_out is not None:
            self.iopub_out.drain(deadline)
