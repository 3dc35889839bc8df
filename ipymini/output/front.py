"""OutputFront: the kernel's one way into the output path, and the IO thread's IOPub source.

The rules of the path live here, each in one method:
- before a message (a display, a result, an error): what C code or a subprocess wrote to fds 1/2, then
  all buffered stream text, go to the IOPub queue first (`before_message`);
- before a reply or an input request: every buffered byte is queued, and the pending chunk is marked
  to go now, so the client sees a request's output before its reply (`before_reply`);
- the IO thread's timer publishes threads' unfinished lines (`on_timer`), and at exit it publishes
  everything without waiting for a writer (`release_all`);
- a forked child never touches the parent's sockets (`after_fork_in_child`).
The kernel holds the front; streams, fd capture and the queue stay behind it. The IO thread sees it
through `protocol.iopub_outlet.IOPubSource` and registers itself with `attach` (an `IOPubSender`).
"""

from __future__ import annotations

import sys
from typing import Protocol

from ipymini import patches
from ipymini.output import streams
from ipymini.output.fdcapture import FDCapture, start_fd_capture
from ipymini.output.iopub import IOPubQueue
from ipymini.output.publisher import Publisher
from ipymini.output.streams import KernelStream


class IOPubSender(Protocol):
    """The thread that puts the queue on the iopub socket (protocol/channel_thread.ChannelThread)."""

    def kick(self) -> None:
        """Send what is ready now, on the calling thread."""

    def wake(self) -> None:
        """Make the sending thread run a pass soon (to re-arm its timer)."""

    def is_sender(self) -> bool:
        """Whether the calling thread is the one sending (it must never wait for queue room)."""


class OutputFront:
    """Owns the output path of one kernel (see the module docstring)."""

    def __init__(self, wire):
        self.queue = IOPubQueue(wire)
        self.publisher = Publisher(self.queue)  # what collaborators publish through
        self.fd_capture: FDCapture | None = None
        # the IO thread's hot path takes messages straight from the queue
        self.take = self.queue.pop

    # -- wiring --

    def attach(self, sender: IOPubSender) -> None:
        """Register the thread that sends the queue (the IO thread calls this when it is made)."""
        queue = self.queue
        queue.kick, queue.wake = sender.kick, sender.wake
        queue.is_sender = sender.is_sender

    def start(self) -> None:
        """Replace sys.stdout/sys.stderr, set the per-request budget, capture fds 1 and 2."""
        patches.patch(sys, "stdout", KernelStream("stdout", self.queue, fileno=1))
        patches.patch(sys, "stderr", KernelStream("stderr", self.queue, fileno=2))
        streams.set_budget_from_env()
        self.fd_capture = start_fd_capture(sys.stdout, sys.stderr, self.publisher.publish)
        streams.fd_capture = self.fd_capture
        streams.child_pipe = self.fd_capture.children if self.fd_capture is not None else None

    def stop(self) -> None:
        """At shutdown: stop capturing the fds and queue everything buffered."""
        if self.fd_capture is not None:
            streams.fd_capture = streams.child_pipe = None
            self.fd_capture.stop()
        streams.flush_all()

    def after_fork_in_child(self) -> None:
        """In a forked child: prints and displays go to the parent through the children's pipe
        (childpipe.py), or to fds 1 and 2 without fd capture; the queue never sends."""
        self.queue.after_fork_in_child(streams.child_pipe)
        streams.after_fork_in_child()
        if self.fd_capture is not None:
            self.fd_capture.after_fork_in_child()

    # -- the kernel's messages --

    def publish(self, msg_type: str, content, request, wake: bool = True) -> None:
        """Queue a kernel message (status) for `request`; content may be JSON bytes already."""
        self.queue.publish(msg_type, content, request, wake=wake)

    def publish_frames(self, frames: list) -> None:
        """Queue a message serialized elsewhere (ipykernel's `iopub_socket`), after the output
        before it."""
        streams.flush_before_message()
        self.queue.publish_frames(frames)

    def write_stream(self, name: str, text: str, request) -> None:
        """Kernel text on a stream for `request` (a notice), outside any output budget."""
        self.queue.write_stream(name, text, request)

    def flush_streams(self) -> None:
        """At the end of a request: queue all buffered stream text."""
        streams.flush_all()

    def before_reply(self, wake: bool = True) -> None:
        """Before a reply or an input request goes out after the iopub messages queued before it:
        every buffered byte is queued and sent now. A refusal made while receiving (the sockets'
        lock held) has no output of its own and must not wait for the streams' lock: a writer
        holding it may be waiting for the sockets. wake=False: a message queued right after sends
        both."""
        if not self.queue.is_sender():
            streams.flush_all()
        self.queue.flush(wake=wake)

    def finish_cell(self, request) -> None:
        """At a cell's end: what C stdio buffered goes out, and the user is told what the output
        budget held back."""
        if self.fd_capture is not None:
            self.fd_capture.flush_c_stdio()
        streams.flush_all()
        omitted = streams.omitted(request)
        if omitted:
            self.queue.write_stream(
                "stderr", f"\n[ipymini] output limit of {streams.budget:,} bytes reached: "
                f"{omitted:,} more bytes of this cell's output were not sent "
                "(IPYMINI_OUTPUT_LIMIT sets the limit).\n", request)

    # -- protocol.iopub_outlet.IOPubSource (the IO thread) --

    @property
    def enqueued(self) -> int:
        return self.queue.enqueued

    @property
    def sent(self) -> int:
        return self.queue.sent

    def due_in(self, now: float) -> float | None:
        """Seconds until the IO thread has something to do (0: now), None if nothing waits."""
        queue = self.queue
        due = queue.next_due(now)
        partials = queue.partials_due
        if partials is not None:
            due = max(partials - now, 0.0) if due is None else min(due, max(partials - now, 0.0))
        return due

    def sleeping_until(self, when: float | None) -> None:
        """The IO thread sleeps until `when` (None: it is awake, or waits for no timer): producers
        need not wake it if it wakes by then anyway."""
        self.queue.io_wakes_at = when

    def on_timer(self, now: float) -> None:
        """The IO thread's pass: once their interval is over, threads' unfinished lines go out."""
        queue = self.queue
        due = queue.partials_due
        if due is None or now < due:
            return
        queue.partials_due = None
        still_held = streams.flush_on_timer()
        if still_held is not None:
            queue.flush()  # that text has waited its interval already: send it now
        if still_held is not False:  # a writer held the lock, or an unfinished line waits
            queue.partials_due = now + queue.flush_interval

    def pending(self) -> bool:
        return self.queue.pending()

    def welcome(self, topic: str) -> None:
        """A new iopub subscriber (JEP 65)."""
        self.queue.publish("iopub_welcome", {"subscription": topic})

    def release_all(self) -> None:
        """At exit, on the IO thread: queue every buffered byte without waiting for a writer, and
        let the pending chunk go now."""
        streams.flush_all(blocking=False)
        self.queue.flush(wake=False)

