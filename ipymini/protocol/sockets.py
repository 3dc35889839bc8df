"""The kernel's five ZMQ sockets and the threads that serve them.

A ZMQ socket must never be used by two threads at once; here each group of sockets has one lock:
- shell, stdin and iopub share the IO lock. The thread that queues a message sends it itself when the
  lock is free (a cell's busy, outputs, reply and idle leave from the cell's own thread, with no
  hand-over). The IO thread sleeps on the sockets' notification descriptors and takes the lock to
  receive input replies and iopub subscriptions, to send what others left queued, and to flush
  stream output on its timer. The main thread's event loop reads shell itself, so a request goes from
  the socket to its cell on one thread; once subshells exist, the IO thread also reads shell while the
  parent shell is busy;
- the control thread serves control, so control requests are answered while a cell runs;
- the heartbeat echoes inside libzmq (`zmq.proxy_steerable`), needing no GIL.

Every incoming message is HMAC-verified (wire.py, which also refuses a replayed
signature) before anything else looks at it; a message that fails is logged and dropped.
"""

from __future__ import annotations

import threading

import zmq

from ipymini import settings
from ipymini.protocol import handshake
from ipymini.protocol.channel_thread import ChannelThread

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


def bind_address(conn: dict, channel: str) -> str:
    """The address to bind a channel to, for the `tcp` or `ipc` transport of a connection file."""
    port = conn[f"{channel}_port"]
    if conn.get("transport", "tcp") == "ipc":
        return f"ipc://{conn['ip']}-{port}"
    return f"tcp://{conn['ip']}:{port}"


class KernelSockets:
    """Binds the kernel's sockets from a connection file and runs the threads that serve them.

    Given a registration file instead (protocol 5.6's handshake, handshake.py), binds on ports the OS
    picks, writes them into `conn` and registers them with the launcher before anything is served;
    HandshakeError (sockets closed) if that fails."""

    def __init__(self, conn: dict, wire):
        self.conn = conn
        self.wire = wire
        registration = handshake.registration(conn)
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
                sock.sndhwm = settings.value("IPYMINI_IOPUB_HWM")
            if channel in ("shell", "control", "stdin"):
                sock.router_handover = 1  # a reconnecting client with the same identity takes over
                # a ROUTER drops silently past its high-water mark; replies are bounded by the
                # requests a client sent, so never drop them for a client that pipelines many
                sock.sndhwm = 0
            apply_curve(sock, conn)
            self.sockets[channel] = sock
            if registration is None:
                sock.bind(bind_address(conn, channel))
            else:
                conn[f"{channel}_port"] = handshake.bind_any(sock, conn)
        # guards shell, stdin and iopub; requests are routed to their shell worker holding it
        self.io_lock = threading.Lock()
        self.io_thread = None
        self.control_thread = None
        self._shell_fd = None  # the shell socket's ZMQ_FD while a loop other than the IO thread reads it
        self._shell_switch = threading.Lock()
        self._hb_control = None
        self._hb_thread = None
        if registration is not None:
            self._register(registration)

    def _register(self, registration) -> None:
        try:
            registration.register(self.ctx, self.conn, self.wire, handshake.timeout())
        except BaseException:
            for sock in self.sockets.values():
                sock.close(linger=0)
            self.ctx.term()
            raise

    def start(self, iopub, on_shell, on_control, on_crash=None) -> None:
        """Start the IO, control and heartbeat threads; `iopub`: what the IO thread publishes (a
        iopub_outlet.IOPubSource); `on_crash` runs if one dies of an error."""
        s = self.sockets
        self.io_thread = ChannelThread("io", self.wire, {"shell": s["shell"], "stdin": s["stdin"]},
                                       on_shell, iopub_socket=s["iopub"], iopub=iopub,
                                       on_crash=on_crash, lock=self.io_lock)
        self.control_thread = ChannelThread("control", self.wire, {"control": s["control"]},
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

    def read_shell_on(self, loop, worker) -> None:
        """Let `loop` (the main thread's, running on the calling thread) read the shell socket: a
        request then goes from the socket to its cell on one thread, with no hand-over from the IO
        thread. Requests sent while a cell computes wait in the socket, as they would in a queue; an
        error's abort reads them first (`ChannelThread.sync`). See `share_shell_reading` for
        subshells."""
        self._shell_loop = loop
        self._shell_loop_ident = threading.get_ident()
        self._shell_fd = self.sockets["shell"].getsockopt(zmq.FD)
        self._shell_poked = False
        self._shell_worker = worker
        self._io_reads_shell = False
        loop.add_reader(self._shell_fd, self._receive_shell)
        self.io_thread.watch_elsewhere("shell", self._shell_input_waiting)

    def _receive_shell(self) -> None:
        self._shell_poked = False
        self.io_thread.receive("shell")

    def _shell_input_waiting(self) -> None:
        """Called under the IO lock when shell input waits that the loop's poll may not see."""
        if self._shell_poked or self._shell_fd is None:
            return
        self._shell_poked = True
        if threading.get_ident() == self._shell_loop_ident:
            self._shell_loop.call_soon(self._receive_shell)
        else:
            self._shell_loop.call_soon_threadsafe(self._receive_shell)

    def share_shell_reading(self) -> None:
        """Once subshells exist (any thread may call this), the IO thread reads shell too while the
        parent shell is busy: subshell requests must be routed while a parent cell computes, when
        the main loop cannot read. While the parent shell is idle its loop alone reads, so its
        requests keep the one-thread path."""
        worker = self._shell_worker
        if self._shell_fd is None or worker.on_busy is not None:
            return
        worker.on_busy = lambda: self._set_io_reads_shell(True)
        worker.on_idle = lambda: self._set_io_reads_shell(False)
        self._set_io_reads_shell(True)  # the parent shell may be computing right now

    def _set_io_reads_shell(self, on: bool) -> None:
        with self._shell_switch:  # the main loop and the control thread may both switch
            if on != self._io_reads_shell and self._shell_fd is not None:
                self._io_reads_shell = on
                if on:
                    self.io_thread.watch_here("shell")
                else:
                    self.io_thread.watch_elsewhere("shell", self._shell_input_waiting)

    def stop_reading_shell(self) -> None:
        """On the loop's thread, at shutdown: forget the shell reader."""
        if self._shell_fd is not None:
            self._shell_loop.remove_reader(self._shell_fd)
            self._shell_fd = None

    def after_fork_in_child(self) -> None:
        """In a forked child: the sockets are the parent's; nothing here may touch them."""
        for t in (self.io_thread, self.control_thread):
            if t is not None:
                t.after_fork_in_child()
        self._shell_fd = None

    def send(self, channel: str, frames: list) -> None:
        """Queue frames for a channel's owner thread."""
        owner = self.control_thread if channel == "control" else self.io_thread
        owner.send(channel, frames)

    def send_after_iopub(self, channel: str, frames: list, wake: bool = True) -> None:
        """Queue a reply or an input request (shell, stdin) to go out once every iopub message
        queued before it has been sent (see ChannelThread.send_after_iopub)."""
        self.io_thread.send_after_iopub(channel, frames, wake)

    def receive_waiting(self) -> bool:
        """Take in what clients already sent on shell and stdin (before aborting queued executes)."""
        return self.io_thread.sync()

    def close(self) -> None:
        """Stop the threads (sending what is queued first) and close every socket."""
        for t in (self.control_thread, self.io_thread):
            if t is not None:
                t.stop()
        for t in (self.control_thread, self.io_thread):
            if t is not None and t is not threading.current_thread():
                t.join(5)
        for t in (self.control_thread, self.io_thread):
            if t is not None:
                with t.lock:
                    t.closed = True  # a late kick from another thread must not touch closed sockets
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
