"""stdin: `input()` and `getpass()` in a cell, as input_request / input_reply on the stdin channel.

Owns the waiting prompts. The asking thread sends an input_request to the client of its request (after
that request's pending output) and waits; the IO thread hands each input_reply to the prompt it answers.
An interrupt ends a wait with KeyboardInterrupt (main thread: the SIGINT handler raises in this wait,
which is marked interruptible; subshells: the worker puts INPUT_INTERRUPTED in its waiter).
"""

from __future__ import annotations

import logging
import queue
from typing import Callable

from ipymini.kernelcode import interruptible
from ipymini.output.routing import parent_request

log = logging.getLogger("ipymini")

INPUT_INTERRUPTED = object()  # put in an input() waiter to end the wait with KeyboardInterrupt


class StdinBroker:
    """Pending input prompts by input_request msg_id, and the replies that answer them."""

    def __init__(self, wire, send: Callable[[list], None]):
        """`wire` builds the input_request; `send(frames)` sends it on stdin after the output queued
        before it."""
        self._wire = wire
        self._send = send
        self._waiters: dict[str, queue.SimpleQueue] = {}

    @interruptible
    def request_input(self, prompt: str, password: bool) -> str:
        """Ask the client of the current request for a line of input (input() and getpass())."""
        from IPython.core.error import StdinNotImplementedError

        req = parent_request()
        if req is None or req.channel != "shell" or not req.content.get("allow_stdin", False):
            raise StdinNotImplementedError(f"{'getpass' if password else 'raw_input'} was called, but this "
                                           "frontend does not support input requests.")
        msg = self._wire.msg("input_request", {"prompt": prompt, "password": password},
                             parent=req.header)
        waiter: queue.SimpleQueue = queue.SimpleQueue()
        msg_id = msg["header"]["msg_id"]
        self._waiters[msg_id] = waiter
        worker = req.worker
        if worker is not None:
            worker.input_waiter = waiter
        try:
            self._send(self._wire.serialize(msg, ident=req.idents))
            try:
                value = waiter.get()
            except KeyboardInterrupt:  # raised into this wait by the SIGINT handler
                value = INPUT_INTERRUPTED
        finally:
            self._waiters.pop(msg_id, None)
            if worker is not None:
                worker.input_waiter = None
        if value is INPUT_INTERRUPTED:
            raise KeyboardInterrupt("Interrupted by user")  # ipykernel's words
        if value is None:
            raise EOFError("the kernel is shutting down")
        if value == "\x04":
            raise EOFError("EOF when reading a line")
        return value

    def deliver(self, msg: dict) -> None:
        """IO thread: hand an input_reply to the prompt it answers (or log and drop it)."""
        if msg.get("header", {}).get("msg_type") != "input_reply":
            log.warning("dropped an unexpected %r on stdin", msg.get("header", {}).get("msg_type"))
            return
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        waiter = self._waiters.get(parent_id)
        if waiter is None and not parent_id and len(self._waiters) == 1:
            # jupyter_client's kc.input() sends no parent; a reply to another (abandoned) prompt is stale
            waiter = next(iter(list(self._waiters.values())), None)  # (it may have ended meanwhile)
        if waiter is None:
            log.warning("dropped an input_reply that answers no pending input request")
            return
        value = (msg.get("content") or {}).get("value", "")
        waiter.put(value if isinstance(value, str) else str(value))

    def cancel_all(self) -> None:
        """End every wait with EOFError (the kernel is shutting down)."""
        for waiter in list(self._waiters.values()):
            waiter.put(None)
