"""The real ipymini kernel in a subprocess, driven through jupyter_client.

`KernelHarness` wraps a KernelManager started from the repository's own kernelspec
(share/jupyter/kernels/ipymini) and a blocking client (each of its sockets used by the test's thread
only), with helpers to send a request on any channel, wait for its reply, and collect everything it
produced on iopub (up to its `idle`). Every wait has a timeout, so a broken kernel fails a test
instead of hanging the suite.
"""

from __future__ import annotations

import os
import queue
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parents[2]
KERNEL_NAME = "ipymini"
TIMEOUT = 20


def use_repo_kernelspec() -> None:
    """Make jupyter_client find the repository's kernelspec (and the repo's package) first.

    Also byte-compiles the package once, as pip does for an installed one: with
    PYTHONDONTWRITEBYTECODE=1 (set on the CI machines) every kernel the suite starts would otherwise
    compile ipymini's source again (~0.1-0.25 s of CPU per start)."""
    import compileall

    compileall.compile_dir(str(REPO / "ipymini"), quiet=1)
    share = str(REPO / "share" / "jupyter")
    paths = os.environ.get("JUPYTER_PATH", "")
    if share not in paths.split(os.pathsep):
        os.environ["JUPYTER_PATH"] = share + (os.pathsep + paths if paths else "")
    # a private IPython profile dir: no user config, no shared history database
    os.environ.setdefault("IPYTHONDIR", tempfile.mkdtemp(prefix="ipymini-ipython-"))
    pp = os.environ.get("PYTHONPATH", "")
    if str(REPO) not in pp.split(os.pathsep):
        os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + pp if pp else "")


use_repo_kernelspec()


def reply_to(kc, msg_id: str, timeout: float = TIMEOUT, channel: str = "shell") -> dict:
    """The reply to `msg_id` on a blocking client's shell (or control) channel, skipping replies to
    other requests (an earlier kernel_info of wait_for_ready, say)."""
    get = kc.get_shell_msg if channel == "shell" else kc.get_control_msg
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no reply to {msg_id} within {timeout}s")
        msg = get(timeout=left)
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg


class KernelHarness:
    """A running ipymini kernel and a client connected to it."""

    def __init__(self, extra_args: list[str] | None = None, env: dict | None = None, stderr=None,
                 kernel_name: str = KERNEL_NAME, **km_kwargs):
        self.km = KernelManager(kernel_name=kernel_name, **km_kwargs)
        kw = {}
        if extra_args:
            kw["extra_arguments"] = extra_args
        if env is not None:
            kw["env"] = {**os.environ, **env}
        if stderr is not None:
            kw["stderr"] = stderr  # a file: the kernel's log, for tests that inspect it
        self.km.start_kernel(**kw)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.drain_iopub()

    def stop(self) -> None:
        """Stop the client and the kernel, and close the manager's socket and context even when the
        kernel is dead already (left to the garbage collector, a context whose sockets are still open
        waits for them for ever in its finalizer: see zmq_leaks.py)."""
        try:
            self.kc.stop_channels()
        finally:
            if self.km.is_alive():
                self.km.shutdown_kernel(now=False)
            else:
                self.km.cleanup_resources()

    # -- collecting messages --

    def drain_iopub(self, quiet: float = 0.2) -> list:
        """Read iopub until it has been quiet for `quiet` seconds."""
        msgs = []
        while True:
            try:
                msgs.append(self.kc.get_iopub_msg(timeout=quiet))
            except queue.Empty:
                return msgs

    def iopub_until_idle(self, msg_id: str, timeout: float = TIMEOUT, keep_all: bool = False) -> list:
        """Every iopub message parented to `msg_id` (all messages with keep_all), through its idle.

        Each message gets an `arrived` field: time.monotonic() when the client read it.
        """
        deadline = time.monotonic() + timeout
        msgs = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no idle for {msg_id} within {timeout}s; got {[m['msg_type'] for m in msgs]}")
            msg = self.kc.get_iopub_msg(timeout=left)
            msg["arrived"] = time.monotonic()
            mine = msg["parent_header"].get("msg_id") == msg_id
            if mine or keep_all:
                msgs.append(msg)
            if mine and msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return msgs

    def send(self, msg_type: str, content: dict | None = None, channel: str = "shell",
             subshell_id: str | None = None, metadata: dict | None = None, buffers=None) -> str:
        """Send a request on shell or control (to a subshell with `subshell_id`); returns its msg_id."""
        msg = self.kc.session.msg(msg_type, content or {}, metadata=metadata or {})
        if subshell_id is not None:
            msg["header"]["subshell_id"] = subshell_id
        if buffers:
            msg["buffers"] = buffers
        (self.kc.shell_channel if channel == "shell" else self.kc.control_channel).send(msg)
        return msg["header"]["msg_id"]

    def submit(self, code: str, subshell_id: str | None = None, **content) -> str:
        """Send an execute_request (to a subshell with `subshell_id`) without waiting; returns its msg_id."""
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True, **content}
        return self.send("execute_request", content, subshell_id=subshell_id)

    def shell_reply(self, msg_id: str, timeout: float = TIMEOUT, channel: str = "shell") -> dict:
        """The reply to `msg_id` on shell (or control), skipping replies to other requests."""
        return reply_to(self.kc, msg_id, timeout, channel)

    def ask(self, msg_type: str, content: dict | None = None, channel: str = "shell",
            timeout: float = TIMEOUT, **send_kwargs) -> dict:
        """Send a request and wait for its reply only: iopub is left unread (for the requests under
        test, whose messages a later wait collects)."""
        return self.shell_reply(self.send(msg_type, content, channel, **send_kwargs), timeout, channel)

    def control(self, msg_type: str, content: dict | None = None, timeout: float = TIMEOUT) -> dict:
        """Send a request on control and wait for its reply (iopub left unread)."""
        return self.ask(msg_type, content, "control", timeout)

    def execute(self, code: str, timeout: float = TIMEOUT, **kwargs):
        """Run code; returns (reply message, iopub messages of the request through idle)."""
        msg_id = self.kc.execute(code, **kwargs)
        reply = self.shell_reply(msg_id, timeout)
        return reply, self.iopub_until_idle(msg_id, timeout)

    def request(self, msg_type: str, content: dict, channel: str = "shell", timeout: float = TIMEOUT,
                **send_kwargs):
        """Send any request; returns (reply message, iopub messages through idle)."""
        msg_id = self.send(msg_type, content, channel, **send_kwargs)
        reply = self.shell_reply(msg_id, timeout, channel)
        return reply, self.iopub_until_idle(msg_id, timeout)

    def wait_all(self, msg_ids, timeout: float = 30, no_reply=()) -> tuple[dict, dict]:
        """Replies and iopub messages (through idle) of several concurrent shell requests, by msg_id
        (`no_reply`: messages such as comm_msg that only get busy/idle). Fails on a second reply or
        a second idle for one request."""
        pending_reply, pending_idle = set(msg_ids) - set(no_reply), set(msg_ids)
        replies = {}
        iopub = {m: [] for m in msg_ids}
        deadline = time.monotonic() + timeout
        while pending_reply or pending_idle:
            if time.monotonic() > deadline:
                raise TimeoutError(f"missing replies {pending_reply} / idles {pending_idle}")
            try:
                msg = self.kc.get_shell_msg(timeout=0.05)
                pid = msg["parent_header"].get("msg_id")
                if pid in iopub:
                    assert pid not in replies, "two replies to one request"
                    replies[pid] = msg
                    pending_reply.discard(pid)
            except queue.Empty:
                pass
            while True:
                try:
                    msg = self.kc.get_iopub_msg(timeout=0.01)
                except queue.Empty:
                    break
                pid = msg["parent_header"].get("msg_id")
                if pid in iopub:
                    msg["arrived"] = time.monotonic()
                    iopub[pid].append(msg)
                    if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                        assert pid in pending_idle, "two idles for one request"
                        pending_idle.discard(pid)
        return replies, iopub

    def create_subshell(self) -> str:
        """A new subshell's id (JEP 91)."""
        content = self.control("create_subshell_request")["content"]
        assert content["status"] == "ok", content
        return content["subshell_id"]

    def run_ok(self, code: str, timeout: float = TIMEOUT, **kwargs) -> list:
        """Run code that must succeed; returns its iopub messages."""
        reply, msgs = self.execute(code, timeout, **kwargs)
        assert reply["content"]["status"] == "ok", reply["content"]
        return msgs


def value(kernel: KernelHarness, expr: str) -> str:
    """The repr (text/plain) of `expr` evaluated in the kernel, via user_expressions."""
    reply, _ = kernel.execute("", user_expressions={"v": expr})
    result = reply["content"]["user_expressions"]["v"]
    assert result["status"] == "ok", result
    return result["data"]["text/plain"]
