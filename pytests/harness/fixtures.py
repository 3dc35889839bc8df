"""Fixtures shared by the test modules (conftest.py makes them available everywhere)."""

from __future__ import annotations

import pytest

from harness.kernel import KernelHarness


@pytest.fixture(scope="module")
def kernel():
    """A kernel shared by the tests of one module; tests must not depend on each other's state."""
    k = KernelHarness()
    yield k
    k.stop()


@pytest.fixture
def client_send_rearmed(monkeypatch):
    """nbclient without its client-side stall: jupyter_client's Session.send, with pyzmq's asyncio
    socket told to look at its events again after a send made on a blocking shadow of it (the upstream
    fix; DEVLOG.md, session 6). Without it a widget notebook's Output-widget cell can wait its whole
    cell timeout for a reply that has arrived (test_nbclient_widget_stall.py)."""
    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    send = Session.send

    def rearming_send(self, stream, *args, **kwargs):
        try:
            return send(self, stream, *args, **kwargs)
        finally:
            if isinstance(stream, zmq.asyncio.Socket) and not stream.closed:
                stream.get(zmq.EVENTS)  # the asyncio wrapper schedules a wake-up if a message waits

    monkeypatch.setattr(Session, "send", rearming_send)
