"""Reading collected iopub messages: the text of a stream, the messages of a type, a result's text.

Work on any list of message dicts (jupyter_client's, or a gateway websocket's)."""

from __future__ import annotations


def stream_text(msgs: list, name: str = "stdout") -> str:
    """All text of one stream in a list of iopub messages."""
    return "".join(m["content"]["text"] for m in msgs
                   if m["msg_type"] == "stream" and m["content"]["name"] == name)


def of_type(msgs: list, msg_type: str) -> list:
    return [m for m in msgs if m["msg_type"] == msg_type]


def result_text(msgs: list) -> str | None:
    """The text/plain of the first execute_result, or None."""
    for m in msgs:
        if m["msg_type"] == "execute_result":
            return m["content"]["data"]["text/plain"]
    return None
