"""Incoming requests: the Request record and the checks a message must pass before it is handled.

Owns what "well formed" means for a request's content, so a malformed request gets a clear error reply
from one place and never reaches a handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Required content fields and their types, per request type. Optional fields are checked by handlers.
REQUIRED_FIELDS: dict[str, dict[str, type | tuple]] = {
    "execute_request": {"code": str},
    "complete_request": {"code": str, "cursor_pos": int},
    "inspect_request": {"code": str, "cursor_pos": int},
    "is_complete_request": {"code": str},
    "history_request": {"hist_access_type": str},
    "comm_msg": {"comm_id": str},
    "comm_close": {"comm_id": str},
    "comm_open": {"comm_id": str, "target_name": str},
    "input_reply": {"value": str},
    "debug_request": {},
}


@dataclass(eq=False)
class Request:
    """One verified message from a client, with the routing identities needed to answer it."""

    channel: str  # "shell" or "control"
    idents: list
    msg: dict
    seq: int = 0  # arrival order on its channel, used to abort what was queued before an error
    subshell_id: str | None = None
    worker: object = None  # the ShellWorker serving it (shell requests)
    header_frame: bytes | None = None  # the header as received: the parent_header of every answer
    _user_msg: dict | None = field(default=None, repr=False)

    def for_user_code(self) -> dict:
        """The message as ipykernel gives it to user code (`get_parent()`): the same dict but for the
        header and parent header dates, datetimes as jupyter_client's Session.deserialize makes them.
        Made on first use (the kernel itself keeps the text it received)."""
        if self._user_msg is None:
            from ipymini.protocol.session import extract_dates

            msg = self.msg
            self._user_msg = {**msg, "header": extract_dates(msg["header"]),
                              "parent_header": extract_dates(msg.get("parent_header") or {})}
        return self._user_msg

    @property
    def header(self) -> dict:
        return self.msg["header"]

    @property
    def msg_type(self) -> str:
        return self.msg["header"]["msg_type"]

    @property
    def content(self) -> dict:
        return self.msg["content"]


def problem_with(msg: dict) -> str | None:
    """Why `msg` cannot be handled (a sentence for the error reply), or None if it is well formed."""
    header = msg.get("header")
    if not isinstance(header, dict) or not isinstance(header.get("msg_type"), str):
        return "message header has no msg_type"
    if not isinstance(header.get("msg_id"), str):
        return "message header has no msg_id"
    if not isinstance(msg.get("metadata"), dict):
        return "message metadata is not a JSON object"
    content = msg.get("content")
    if not isinstance(content, dict):
        return "message content is not a JSON object"
    for name, kind in REQUIRED_FIELDS.get(header["msg_type"], {}).items():
        if name not in content:
            return f"{header['msg_type']} is missing the required field {name!r}"
        value = content[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            return f"{header['msg_type']} field {name!r} must be {want}, not {type(value).__name__}"
    return None


# -- reply content and metadata shared by several handlers --

def execute_metadata(engine: str, started: str, status: str) -> dict:
    """execute_reply metadata as ipykernel sends it: JupyterLab's cell timing reads `started`;
    `dependencies_met` and `engine` are ipyparallel's fields."""
    return {"started": started, "dependencies_met": True, "engine": engine, "status": status}


def error_reply(ename: str, evalue: str, traceback=(), **fields) -> dict:
    """Reply content for a request that failed: `ename`/`evalue` name the error, `traceback` its lines
    (none for a refused request); `fields` adds what a reply type always carries (history: [])."""
    return {"status": "error", "ename": ename, "evalue": evalue, "traceback": list(traceback), **fields}


def unknown_subshell_reply(subshell_id) -> dict:
    """The error reply for a subshell that does not exist (ipykernel 7.4's wording)."""
    return error_reply("UnknownSubshellError", f"Unknown subshell_id {subshell_id!r}")
