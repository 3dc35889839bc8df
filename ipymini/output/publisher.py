"""Publisher: what code running for a request is given to send iopub messages.

Displays, results, errors, comm and debug messages all leave through one Publisher: the message is
built with the kernel's key, parented to the calling code's request (routing.py) unless one is given,
and queued after every byte of output written before it (by print, C code or a subprocess).
Collaborators (the IPython shell, comms, the debugger) get this instead of the kernel.
"""

from __future__ import annotations

from ipymini.output import streams
from ipymini.output.iopub import IOPubQueue
from ipymini.output.routing import parent_request


class Publisher:
    """Sends iopub messages for the calling code's request, in order with its output."""

    def __init__(self, iopub: IOPubQueue):
        self._iopub = iopub

    def publish(self, msg_type: str, content: dict, metadata=None, buffers=None, request=None) -> dict:
        """Publish on iopub for `request` (default: the request the calling code belongs to)."""
        streams.flush_before_message()
        return self._iopub.publish(msg_type, content, request or parent_request(), metadata, buffers)

    def message(self, msg_type: str, content: dict) -> dict:
        """A message parented to the calling code's request, built but not sent (display hooks may
        rewrite or swallow it before `publish_msg`)."""
        return self._iopub.wire.msg(msg_type, content, parent=self.parent_header())

    def publish_msg(self, msg: dict) -> None:
        """Publish a message built by `message` (or elsewhere, with the kernel's session)."""
        streams.flush_before_message()
        self._iopub.publish_msg(msg)

    @staticmethod
    def parent_header() -> dict:
        """The header of the request the calling code's output goes to ({} outside any request)."""
        req = parent_request()
        return req.header if req is not None else {}
