"""ZMQ transport: the kernel's five sockets and the threads that own them.

A ZMQ socket must only be used by one thread, so each socket has exactly one owner:
- the IO thread owns shell, stdin and iopub: it receives requests and input replies, sends replies and
  input requests that other threads queue for it, drains the IOPub queue, and greets new iopub
  subscribers with `iopub_welcome` (JEP 65);
- the control thread owns control, so control requests are answered while a cell runs;
- the heartbeat echoes inside libzmq (`zmq.proxy_steerable`), needing no GIL.
Other threads hand frames to an owner through a deque and wake it with a pipe; nothing here polls on a
timer except the flush deadline of pending stream output.

Every incoming message is HMAC-verified (wire.py, which also refuses a replayed
signature) before anything else looks at it; a message that fails is logged and dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import zmq

log = logging.getLogger("ipymini")

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


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


def bind_address(conn: dict, channel: str) -> str:
    """The address to bind a channel to, for the `tcp` or `ipc` transport of a connection file."""
    port = conn[f"{channel}_port"]
    if conn.get("transport", "tcp") == "ipc":
        return f"ipc://{conn['ip']}-{port}"
    return f"tcp://{conn['ip']}:{port}"


class ChannelThread(threading.Thread):
    """Owns some ROUTER sockets (and optionally iopub): receives, verifies and hands on requests, and
    sends whatever other threads queue for its sockets."""

    def __init__(self, name: str, session, sockets: dict, on_message, iopub_socket=None, iopub=None,
                 waker=None, on_crash=None):
        super().__init__(name=f"ipymini-{name}", daemon=True)
        self.session = session
        self.sockets = sockets  # channel name -> socket
        self.on_message = on_message  # (channel, idents, msg) -> None, called on this thread
        self.iopub_socket = iopub_socket
        self.iopub = iopub
        self.waker = waker or Waker()
        self.on_crash = on_crash  # called if this thread dies of an error: the kernel shuts down
        self.outbox: deque = deque()  # (channel, frames, iopub barrier or None)
        self.stopping = False
        self.stopped = threading.Event()
        self._iopub_blocked_since = None
        self._held = None  # iopub frames refused by a full subscriber, sent first when room returns
        self.stall_timeout = float(os.environ.get("IPYMINI_IOPUB_STALL_TIMEOUT", "10"))
        self._warned_stall = False
        self.flush_all = None  # publish every buffered stream text (streams.flush_all), at exit
        self.flush_partials = None  # the streams' timed flush (streams.flush_on_timer, set by the kernel)

    # -- called from any thread --

    def send(self, channel: str, frames: list) -> None:
        """Queue frames for one of this thread's sockets."""
        if threading.current_thread() is self:
            self.sockets[channel].send_multipart(frames, copy=False)
        else:
            self.outbox.append((channel, frames, None))
            self.waker.wake()

    def send_after_iopub(self, channel: str, frames: list, wake: bool = True) -> None:
        """Queue frames to go out once every iopub message queued before them has been sent.

        Replies and input requests use this so a client sees a request's outputs before its reply. If
        iopub is stalled by a subscriber that does not read, they go ahead rather than wait for it.
        """
        self.outbox.append((channel, frames, self.iopub.enqueued))
        if wake:
            self.waker.wake()

    def sync(self, timeout: float = 1.0) -> bool:
        """Wait until this thread has received everything already waiting on its sockets."""
        done = threading.Event()
        self.outbox.append((None, done, None))
        self.waker.wake()
        return done.wait(timeout)

    def stop(self) -> None:
        self.stopping = True
        self.waker.wake()

    # -- the thread --

    def run(self) -> None:
        if self.iopub is not None:
            self.iopub.io_thread_ident = threading.get_ident()
        poller = zmq.Poller()
        by_socket = {}
        for channel, sock in self.sockets.items():
            poller.register(sock, zmq.POLLIN)
            by_socket[sock] = channel
        if self.iopub_socket is not None:
            poller.register(self.iopub_socket, zmq.POLLIN)
        poller.register(self.waker.rfd, zmq.POLLIN)
        try:
            while not self.stopping:
                ready = poller.poll(self._timeout_ms())
                for sock, _ in ready:
                    if sock == self.waker.rfd:
                        self.waker.clear()
                    elif sock is self.iopub_socket:
                        self._greet_subscribers()
                    else:
                        self._receive(sock, by_socket[sock])
                self._send_outbox()
                if self.iopub is not None:
                    self._send_iopub()
            self._drain_at_exit()
        except Exception:
            log.exception("%s crashed; shutting the kernel down", self.name)
            if self.on_crash is not None and not self.stopping:
                self.on_crash()
        finally:
            self.stopped.set()

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

    def _receive(self, sock, channel: str, limit: int = 64) -> None:
        for _ in range(limit):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            parsed = self.parse(frames, channel)
            if parsed is not None:
                try:
                    self.on_message(channel, *parsed)
                except Exception:
                    log.exception("error handling a %s message", channel)

    def parse(self, frames: list, channel: str):
        """Verify and decode a multipart message: (idents, msg), or None after logging why not."""
        try:
            idents, rest = self.session.split_identities(frames)
        except Exception:
            log.warning("dropped a malformed message on %s: no delimiter frame", channel)
            return None
        try:
            msg = self.session.deserialize(rest)
        except Exception as e:
            log.warning("dropped a message on %s that failed verification or decoding: %s", channel, e)
            return None
        return idents, msg

    def _send_outbox(self) -> None:
        outbox = self.outbox
        while outbox:
            channel, frames, barrier = outbox[0]
            if barrier is not None and self._held is None and self.iopub.sent < barrier:
                return  # iopub messages queued before this one go first
            outbox.popleft()
            if channel is None:  # a sync marker: everything received so far has been handed on
                frames.set()
                continue
            try:
                self.sockets[channel].send_multipart(frames, copy=False)
            except zmq.ZMQError as e:
                log.warning("could not send on %s: %s", channel, e)

    def _send_iopub(self) -> None:
        now = time.monotonic()
        due = self.iopub.partials_due
        if due is not None and now >= due:
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
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
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
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
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
            self._send_iopub()
            if self._held is None and not self.iopub.pending():
                return
            time.sleep(0.002)


class Transport:
    """Binds the kernel's sockets from a connection file and runs their owner threads."""

    def __init__(self, conn: dict, session):
        self.conn = conn
        self.session = session
        self.ctx = zmq.Context()
        self.sockets: dict[str, zmq.Socket] = {}
        kinds = {"shell": zmq.ROUTER, "control": zmq.ROUTER, "stdin": zmq.ROUTER,
                 "iopub": zmq.XPUB, "hb": zmq.REP}
        for channel in CHANNELS:
            sock = self.ctx.socket(kinds[channel])
            sock.linger = 1000
            if channel == "iopub":
                sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # a subscription event for every subscriber
                sock.setsockopt(zmq.XPUB_NODROP, 1)  # full subscriber: EAGAIN, never a silent drop
                sock.sndhwm = int(os.environ.get("IPYMINI_IOPUB_HWM", "100"))
            if channel in ("shell", "control", "stdin"):
                sock.router_handover = 1  # a reconnecting client with the same identity takes over
                # a ROUTER drops silently past its high-water mark; replies are bounded by the
                # requests a client sent, so never drop them for a client that pipelines many
                sock.sndhwm = 0
            apply_curve(sock, conn)
            sock.bind(bind_address(conn, channel))
            self.sockets[channel] = sock
        self.io_waker = Waker()
        self.io_thread = None
        self.control_thread = None
        self._hb_control = None
        self._hb_thread = None

    def start(self, iopub, on_shell, on_control, on_crash=None) -> None:
        """Start the IO, control and heartbeat threads; `on_crash` runs if one dies of an error."""
        s = self.sockets
        self.io_thread = ChannelThread("io", self.session, {"shell": s["shell"], "stdin": s["stdin"]},
                                       on_shell, iopub_socket=s["iopub"], iopub=iopub,
                                       waker=self.io_waker, on_crash=on_crash)
        self.control_thread = ChannelThread("control", self.session, {"control": s["control"]},
                                            on_control, on_crash=on_crash)
        self.io_thread.start()
        self.control_thread.start()
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        addr = f"inproc://ipymini-hb-{id(self)}"
        ctrl_in = self.ctx.socket(zmq.PAIR)
        ctrl_in.bind(addr)
        self._hb_control = self.ctx.socket(zmq.PAIR)
        self._hb_control.connect(addr)
        hb = self.sockets["hb"]

        def echo():
            try:
                zmq.proxy_steerable(hb, hb, None, ctrl_in)
            except zmq.ZMQError:
                pass
            finally:
                ctrl_in.close(linger=0)

        self._hb_thread = threading.Thread(target=echo, name="ipymini-heartbeat", daemon=True)
        self._hb_thread.start()

    def send(self, channel: str, frames: list) -> None:
        """Queue frames for a channel's owner thread."""
        owner = self.control_thread if channel == "control" else self.io_thread
        owner.send(channel, frames)

    def close(self) -> None:
        """Stop the threads (sending what is queued first) and close every socket."""
        for t in (self.control_thread, self.io_thread):
            if t is not None:
                t.stop()
        for t in (self.control_thread, self.io_thread):
            if t is not None and t is not threading.current_thread():
                t.join(5)
        if self._hb_control is not None:
            self._hb_control.send(b"TERMINATE")
            self._hb_thread.join(2)
            self._hb_control.close(linger=0)
        for sock in self.sockets.values():
            sock.close(linger=500)
        for t in (self.control_thread, self.io_thread):
            if t is not None:
                t.waker.close()
        self.ctx.term()


def apply_curve(sock, conn: dict) -> None:
    """Make `sock` a CURVE server when the connection file carries the kernel's key pair."""
    secret = conn.get("curve_secretkey")
    if not secret:
        return
    sock.curve_secretkey = secret.encode() if isinstance(secret, str) else secret
    public = conn.get("curve_publickey")
    if public:
        sock.curve_publickey = public.encode() if isinstance(public, str) else public
    sock.curve_server = True
