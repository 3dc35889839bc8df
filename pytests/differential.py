"""Differential harness: the same requests run in ipykernel and in ipymini, answers normalized and compared.

Both kernels run in the same environment (this venv's Python), each from its own temporary working
directory and with its own fresh IPYTHONDIR. `run_corpus` sends every corpus entry to both kernels (to
both at once, then collects each kernel's answer), in order, one entry at a time; `view` turns one
kernel's raw answer into a normalized, comparable structure; `compare` lists the differences.

Only the main thread touches the clients' shell, control and iopub sockets (jupyter_client's blocking
channels poll in the calling thread); every wait has a deadline.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from harness import REPO, use_repo_kernelspec

TIMEOUT = 20  # seconds any one answer may take
LATE_TIMEOUT = 5  # seconds to wait after idle for an entry's `late_streams`
IPYKERNEL_SPECS = Path(sys.prefix) / "share" / "jupyter" / "kernels"


@dataclass
class Entry:
    """One corpus entry: a cell to execute, or any other request.

    `volatile` lists (regex, replacement) pairs for text that differs from run to run even in one
    kernel (timings); they are applied to both kernels' answers alike.
    """

    id: str
    code: str | None = None  # an execute_request with this code (and `options`)
    options: dict = field(default_factory=dict)
    msg_type: str | None = None  # otherwise: this request, with `content`
    content: dict = field(default_factory=dict)
    channel: str = "shell"
    header: dict = field(default_factory=dict)  # extra header fields (subshell_id)
    volatile: tuple = ()
    late_streams: dict = field(default_factory=dict)  # {name: text} that may come after idle
    then: str | None = None  # a cell sent right behind this entry, before its reply (to see it aborted)
    stdin: tuple = ()  # answers to the input_requests the cell makes, in order


class DiffKernel:
    """One kernel (by kernelspec name) started in a private cwd and IPYTHONDIR, with a blocking client."""

    def __init__(self, label: str, kernel_name: str, spec_manager: KernelSpecManager | None = None):
        self.label = label
        self.cwd = tempfile.mkdtemp(prefix=f"diff-{label}-cwd-")
        self.ipythondir = tempfile.mkdtemp(prefix=f"diff-{label}-ipython-")
        kw = {"kernel_spec_manager": spec_manager} if spec_manager else {}
        self.km = KernelManager(kernel_name=kernel_name, **kw)
        env = {**os.environ, "IPYTHONDIR": self.ipythondir}
        env.pop("MPLBACKEND", None)  # each kernel chooses its own default, as it would for a user
        for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):  # headless, as on a server: the
            env.pop(var, None)  # same GUI magic answers wherever the suite runs
        self.km.start_kernel(cwd=self.cwd, env=env)
        self.kc = None
        self.last_count = 0  # execution_count of the last execute_reply seen

    def connect(self) -> None:
        """Connect a client and wait until the kernel answers (separate from start: both kernels
        start at once)."""
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self._drain()

    def _drain(self, quiet: float = 0.3) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=quiet)
            except Empty:
                return

    def request_stop(self) -> None:
        """Stop the channels and ask the kernel to shut down (without waiting)."""
        try:
            if self.kc is not None:
                self.kc.stop_channels()
        finally:
            if self.km.is_alive():
                self.km.request_shutdown()

    def finish_stop(self) -> None:
        """Wait for the kernel to exit (killing it after a grace period) and clean up."""
        self.km.finish_shutdown()
        self.km.cleanup_resources()

    def send(self, entry: Entry) -> list[dict]:
        """Send the entry's request, then its `then` cell at once; returns the sent messages."""
        msgs = [self._send(entry)]
        if entry.then is not None:
            msgs.append(self._send(Entry(f"{entry.id} then", code=entry.then)))
        return msgs

    def _send(self, entry: Entry) -> dict:
        if entry.code is not None:
            content = {"code": entry.code, "silent": False, "store_history": True,
                       "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
            content.update(entry.options)
            msg = self.kc.session.msg("execute_request", content)
        else:
            msg = self.kc.session.msg(entry.msg_type, entry.content)
        msg["header"].update(entry.header)
        chan = self.kc.control_channel if entry.channel == "control" else self.kc.shell_channel
        chan.send(msg)
        return msg

    def _reply(self, msg_id: str, channel: str, deadline: float) -> dict:
        get = self.kc.get_control_msg if channel == "control" else self.kc.get_shell_msg
        while True:
            msg = get(timeout=max(0.0, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def _iopub(self, msg_id: str, deadline: float, sentinel: str | None = None) -> list:
        """iopub messages parented to msg_id through its idle (or through the sentinel's idle)."""
        msgs = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.0, deadline - time.monotonic()))
            parent = msg["parent_header"].get("msg_id")
            idle = msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"
            if parent == msg_id:
                msgs.append(msg)
                if idle:
                    return msgs
            elif idle and parent == sentinel:
                return msgs

    def collect(self, entry: Entry, sent: list[dict], timeout: float = TIMEOUT) -> dict:
        """The reply and the iopub messages of a sent entry (and under `then`, of its `then` cell)."""
        answer = self._collect(entry, sent[0], timeout)
        if entry.then is not None and "error" not in answer:
            answer["then"] = self._collect(Entry("then", code=entry.then), sent[1], timeout, sentinel=True)
        return answer

    def _collect(self, entry: Entry, sent: dict, timeout: float, sentinel: bool = False) -> dict:
        """The reply and the iopub messages of one request.

        For requests other than execute (and with `sentinel`, for a cell that may be aborted), a
        kernel_info_request sent after the reply is a sentinel: its idle ends the wait even if the
        kernel publishes no idle for the request itself.
        """
        if not self.km.is_alive():  # (one dead kernel must not cost a timeout per remaining entry)
            return {"error": "the kernel is not running"}
        deadline = time.monotonic() + timeout
        msg_id = sent["header"]["msg_id"]
        try:
            stdin = [self._answer_input(msg_id, value, deadline) for value in entry.stdin]
            reply = self._reply(msg_id, entry.channel, deadline)
        except Empty:
            return {"error": f"no reply or input_request within {timeout}s"}
        sentinel = self.kc.kernel_info() if sentinel or entry.code is None or entry.header else None
        try:
            iopub = self._iopub(msg_id, deadline, sentinel)
            if sentinel:
                self._reply(sentinel, "shell", deadline)
        except Empty:
            return {"error": f"no idle within {timeout}s", "reply": reply}
        answer = {"reply": reply, "iopub": iopub + self._late(msg_id, entry.late_streams, iopub)}
        if entry.stdin:
            answer["stdin"] = stdin
        return answer

    def _answer_input(self, msg_id: str, value: str, deadline: float) -> dict:
        """Wait for the cell's next input_request, answer it with `value`; returns the request."""
        while True:
            msg = self.kc.get_stdin_msg(timeout=max(0.0, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                self.kc.input(value)
                return msg

    def _late(self, msg_id: str, expected: dict, iopub: list) -> list:
        """Stream messages parented to msg_id after its idle, until each expected text has arrived
        (or LATE_TIMEOUT passed: then the difference shows as missing text)."""
        def missing():
            return [name for name, text in expected.items()
                    if text not in "".join(m["content"]["text"] for m in iopub + late
                                           if m["msg_type"] == "stream" and m["content"]["name"] == name)]
        late, deadline = [], time.monotonic() + LATE_TIMEOUT
        while missing():
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.0, deadline - time.monotonic()))
            except Empty:
                break
            if msg["parent_header"].get("msg_id") == msg_id:
                late.append(msg)
        return late

    def check_environment(self, module: str) -> str:
        """Assert that the kernel runs this venv's Python; returns where it imports `module` from."""
        msg_id = self.kc.execute("", silent=True, user_expressions={
            "exe": "__import__('sys').executable", "mod": f"__import__('{module}').__file__"})
        reply = self._reply(msg_id, "shell", time.monotonic() + TIMEOUT)
        self._iopub(msg_id, time.monotonic() + TIMEOUT)
        ue = reply["content"]["user_expressions"]
        assert ue["exe"]["data"]["text/plain"] == repr(sys.executable), (self.label, ue)
        return ast.literal_eval(ue["mod"]["data"]["text/plain"])


def start_pair() -> tuple[DiffKernel, DiffKernel]:
    """ipykernel (kernelspec `python3` from this venv) and ipymini (the repository's kernelspec)."""
    use_repo_kernelspec()
    ksm = KernelSpecManager(kernel_dirs=[str(IPYKERNEL_SPECS)], ensure_native_kernel=False)
    spec = ksm.get_kernel_spec("python3")
    assert spec.argv[1:3] == ["-m", "ipykernel_launcher"], spec.argv
    kernels = []
    try:
        kernels.append(DiffKernel("ipykernel", "python3", ksm))
        kernels.append(DiffKernel("ipymini", "ipymini"))
        for k in kernels:
            k.connect()
        assert kernels[0].check_environment("ipykernel").startswith(sys.prefix)
        assert kernels[1].check_environment("ipymini").startswith(str(REPO))
    except BaseException:
        stop_all(kernels)
        raise
    return tuple(kernels)


def stop_all(kernels) -> None:
    """Shut all kernels down, at the same time."""
    for k in kernels:
        k.request_stop()
    for k in kernels:
        k.finish_stop()


def run_corpus(kernels: tuple[DiffKernel, ...], corpus: list[Entry]) -> dict:
    """Run every entry in order on all kernels; returns {entry id: (answer per kernel)}."""
    results = {}
    for entry in corpus:
        sent = [k.send(entry) for k in kernels]
        results[entry.id] = tuple(k.collect(entry, s) for k, s in zip(kernels, sent))
    return results


# -- normalization --

DATE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?")
UUID = re.compile(r"(?<![0-9a-f])[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}(?![0-9a-f])")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{4,}")
CELL_DIR = re.compile(re.escape(tempfile.gettempdir()) + r"/ipy(?:kernel|mini)_\d+/")


def _scrub_text(text: str, kernel: DiffKernel, volatile) -> str:
    text = text.replace(kernel.ipythondir, "<IPYTHONDIR>").replace(kernel.cwd, "<CWD>")
    text = CELL_DIR.sub("<CELLDIR>/", text)
    text = DATE.sub("<DATE>", text)
    text = UUID.sub("<UUID>", text)
    text = ADDRESS.sub("0x<ADDR>", text)
    for pattern, repl in volatile:
        text = re.sub(pattern, repl, text)
    return text


def _scrub(obj, kernel: DiffKernel, volatile, base: int | None):
    if isinstance(obj, str):
        return _scrub_text(obj, kernel, volatile)
    if isinstance(obj, list | tuple):
        return [_scrub(v, kernel, volatile, base) for v in obj]
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key == "execution_count" and isinstance(value, int) and base is not None:
                out[key] = f"{value - base:+d}"  # relative: one drift fails one entry, not all after it
            else:  # keys too: comm_info_reply's comms are keyed by comm id
                out[_scrub_text(key, kernel, volatile)] = _scrub(value, kernel, volatile, base)
        return out
    return obj


STREAM_TEXT = "stream text between messages"
STREAM_TEXT_ANYWHERE = "stream text anywhere"


def view(answer: dict, kernel: DiffKernel, entry: Entry, streams: str | None = STREAM_TEXT) -> dict:
    """One kernel's answer to one entry as a normalized, comparable dict.

    With `streams=STREAM_TEXT`, iopub becomes a list of non-stream messages in order; the stream text
    published between two of them is one `stream` item per stream name (`{"stream": name, "text":
    ...}`), so how a kernel cuts its output into messages (and how stdout interleaves with stderr within
    one stretch) does not count, but what is printed before or after a display or result does. With
    STREAM_TEXT_ANYWHERE all of the entry's stream text goes to the end, one item per name; with None
    stream messages are kept as they came.
    Must be called in corpus order for each kernel (execution counts are made relative).
    """
    if "error" in answer and "reply" not in answer:
        return {"harness_error": answer["error"]}
    reply = answer["reply"]
    base = kernel.last_count if entry.code is not None else None
    count = reply["content"].get("execution_count")
    if entry.code is not None and isinstance(count, int):
        kernel.last_count = count
    out = {
        "reply_type": reply["msg_type"],
        "reply": _scrub(reply["content"], kernel, entry.volatile, base),
        "reply_metadata": _scrub(reply["metadata"], kernel, entry.volatile, base),
    }
    if "error" in answer:
        out["harness_error"] = answer["error"]
        return out
    out["iopub"] = _iopub_view(answer["iopub"], kernel, entry, base, streams)
    if "stdin" in answer:
        out["stdin"] = [{"msg_type": m["msg_type"], "content": _scrub(m["content"], kernel, (), None),
                         "metadata": m["metadata"]} for m in answer["stdin"]]
    if "then" in answer:
        out["then"] = view(answer["then"], kernel, Entry("then", code=entry.then), streams)
    return out


def _iopub_view(iopub: list, kernel: DiffKernel, entry: Entry, base: int | None, streams) -> list:
    items, pending = [], {}
    for msg in iopub:
        content = _scrub(msg["content"], kernel, entry.volatile, base)
        if msg["msg_type"] == "stream" and streams:
            pending[content["name"]] = pending.get(content["name"], "") + content["text"]
            continue
        if streams != STREAM_TEXT_ANYWHERE:
            items += [{"stream": name, "text": text} for name, text in sorted(pending.items())]
            pending = {}
        items.append({"msg_type": msg["msg_type"], "content": content,
                      "metadata": _scrub(msg["metadata"], kernel, entry.volatile, base)})
    return items + [{"stream": name, "text": text} for name, text in sorted(pending.items())]


# -- allowed differences and comparison --

@dataclass
class Allowed:
    """A difference the test accepts: at `path` (a tuple of keys, `*` matches any key or index)
    in the views of the entries `entries` (`*`: every entry), both sides are replaced by
    `how(value)`. `reason` says why the difference is acceptable."""

    entries: tuple
    path: tuple
    how: object  # a function, or STREAM_TEXT / STREAM_TEXT_ANYWHERE for the path ("iopub",)
    reason: str

    def covers(self, entry_id: str) -> bool:
        """Whether this allowed difference applies to the entry."""
        return "*" in self.entries or entry_id in self.entries


def stream_mode(entry_id: str, allowed: list[Allowed]) -> str | None:
    """How view() should treat the entry's stream messages (the most lenient mode allowed)."""
    modes = {a.how for a in allowed if a.path == ("iopub",) and isinstance(a.how, str) and a.covers(entry_id)}
    return STREAM_TEXT_ANYWHERE if STREAM_TEXT_ANYWHERE in modes else STREAM_TEXT if modes else None


def masked(_value):
    """Any value: the difference is in the value itself."""
    return "<allowed>"


def keys_only(value):
    """A dict's sorted keys: the values differ, the set of fields must not."""
    return sorted(value) if isinstance(value, dict) else value


def sorted_list(value):
    """A list whose order means nothing."""
    return sorted(value, key=repr) if isinstance(value, list) else value


def apply_allowed(v: dict, entry_id: str, allowed: list[Allowed]) -> dict:
    """A copy of view `v` with every allowed difference for this entry applied."""
    v = copy.deepcopy(v)
    for a in allowed:
        if callable(a.how) and a.covers(entry_id):
            _apply(v, a.path, a.how)
    return v


def _apply(node, path, how):
    if not path or not isinstance(node, dict | list):
        return
    key, rest = path[0], path[1:]
    if isinstance(node, dict):
        keys = list(node) if key == "*" else [key] if key in node else []
    else:
        keys = range(len(node)) if key == "*" else [key] if isinstance(key, int) and key < len(node) else []
    for k in keys:
        if rest:
            _apply(node[k], rest, how)
        else:
            node[k] = how(node[k])


MISSING = "<missing>"


def compare(a, b, path=()) -> list[tuple]:
    """Every (path, a value, b value) where a and b differ, descending into dicts and lists."""
    if isinstance(a, dict) and isinstance(b, dict):
        diffs = []
        for key in list(a) + [k for k in b if k not in a]:
            diffs += compare(a.get(key, MISSING), b.get(key, MISSING), path + (key,))
        return diffs
    if isinstance(a, list) and isinstance(b, list) and not _differ_in_kinds(a, b):
        diffs = []
        for i in range(max(len(a), len(b))):
            diffs += compare(a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING, path + (i,))
        return diffs
    return [] if a == b else [(path, a, b)]


def _differ_in_kinds(a: list, b: list) -> bool:
    """Two iopub lists with different message sequences: compared as one value (a readable diff
    of which messages came, rather than field-by-field noise from misaligned messages)."""
    kinds = [[m.get("msg_type", m.get("stream")) if isinstance(m, dict) else None for m in x] for x in (a, b)]
    return kinds[0] != kinds[1] and all(isinstance(m, dict) and ("msg_type" in m or "stream" in m)
                                        for m in a + b)


def _short(value, limit=2000) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text)[:limit] if isinstance(value, str) else text[:limit]


def _outline(items: list) -> list:
    return [m.get("msg_type") or f"stream {m['stream']}: {m['text'][:200]!r}" for m in items]


def report(entry_id: str, diffs: list[tuple], labels=("ipykernel", "ipymini")) -> str:
    """A readable listing of the differences of one entry: each differing field with both values.

    When the two kernels sent different sequences of iopub messages, the listing shows both
    sequences, then the messages each kernel sent that the other did not.
    """
    lines = [f"{entry_id}: {len(diffs)} difference(s)"]
    for path, a, b in diffs:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        if path and path[-1] == "iopub" and isinstance(a, list) and isinstance(b, list):
            lines += [f"  at {where} (message sequence):", f"    {labels[0]:>9}: {_outline(a)}",
                      f"    {labels[1]:>9}: {_outline(b)}"]
            for label, mine, other in ((labels[0], a, b), (labels[1], b, a)):
                lines += [f"    only {label}: {_short(m)}" for m in mine if m not in other]
            continue
        lines += [f"  at {where}:", f"    {labels[0]:>9}: {_short(a)}", f"    {labels[1]:>9}: {_short(b)}"]
    return "\n".join(lines)
