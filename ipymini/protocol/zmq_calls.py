"""The two socket calls on the kernel's hot path, without pyzmq's per-call Python overhead."""

from __future__ import annotations

import zmq

# pyzmq's Python layer costs ~1 µs per frame (enum flags, routing options): a message is 7+ frames and
# a `pass` cell sends four, so the hot path calls the Cython socket methods with plain int constants.
_send = zmq.backend.Socket.send
_poll = zmq.backend.zmq_poll  # reads ZMQ_EVENTS as getsockopt does, without its option enum (~1 µs)
NOBLOCK, _SNDMORE, _POLLIN = 1, 2, 1
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
