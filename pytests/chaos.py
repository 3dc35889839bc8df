"""Chaos client: several clients drive one real kernel at random, and every request is accounted for.

Each client is one thread owning its own sockets (ZMQ sockets are not thread-safe) and its own Session
(its own ZMQ identity), so stdin prompts reach the client whose cell asked. At random, clients run
cells that print (a few lines, or a flood), sleep, await, fail, ask for input, or run on subshells they
create and delete; send completion, inspection, history and kernel_info requests; ask for kernel_info
on control while cells run; and interrupt the kernel. Invariants checked for every request:
- exactly one reply; on shell exactly one `busy` and one `idle`, busy first;
- a cell that finished `ok` printed exactly what it should have (every byte, in order);
- an input prompt reaches only the client whose cell asked, with the prompt it gave;
- the kernel is alive at the end and still runs a cell.

`python pytests/chaos.py --requests 100000` is the soak run (`make soak`); `test_chaos.py` runs a
short seeded one.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import zmq
from jupyter_client.session import Session

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import KERNEL_NAME, use_repo_kernelspec  # noqa: E402
from harness.processes import rss_mb  # noqa: E402

STUCK_AFTER = 45.0  # seconds a request may go unanswered before the run counts it as stuck


@dataclass
class Pending:
    msg_id: str
    channel: str
    msg_type: str
    sent: float
    expected: str | None = None  # stdout of the cell if it finishes ok
    answer: str | None = None  # what to type at its input prompt
    prompt: str | None = None
    replies: list = field(default_factory=list)
    states: list = field(default_factory=list)  # busy / idle, in arrival order
    stdout: list = field(default_factory=list)
    subshell: str | None = None


class Client(threading.Thread):
    """One client: its own session and sockets, used only from this thread."""

    def __init__(self, name: str, conn: dict, seed: int, requests: int, inflight: int = 6,
                 interrupts: bool = True, stop: threading.Event | None = None, stall: float = 0):
        super().__init__(name=f"chaos-{name}", daemon=True)
        self.tag = name
        self.conn = conn
        self.rng = random.Random(seed)
        self.budget = requests
        self.inflight = inflight
        self.interrupts = interrupts
        self.stop_flag = stop or threading.Event()
        self.session = Session(key=conn["key"].encode() if isinstance(conn["key"], str) else conn["key"],
                               signature_scheme=conn["signature_scheme"], username=f"chaos-{name}")
        self.pending: dict[str, Pending] = {}
        self.done: list[str] = []  # msg_ids of the latest answered requests
        # input cells that ended without their answer (interrupted while prompting): their prompt may
        # still be on its way, since stdin and shell are separate connections that the client reads
        # in no guaranteed order; such a late prompt is no violation (the kernel sent it first)
        self.prompts_may_come_late: set = set()
        self.late_prompts = 0
        self.answered = 0
        self.errors: list[str] = []
        self.subshells: list[str] = []
        self.sent = 0
        self.counter = 0
        self.statuses: dict[str, int] = {}
        self.probes: set = set()
        self.stall = stall  # once, a third of the way in: stop reading everything for this long
        self.subscribed = False

    # -- sockets (this thread only) --

    def _connect(self) -> None:
        ctx = zmq.Context.instance()
        c = self.conn
        url = lambda port: f"{c['transport']}://{c['ip']}:{port}"  # noqa: E731
        ident = f"chaos-{self.tag}-{uuid.uuid4().hex[:8]}".encode()
        self.shell = ctx.socket(zmq.DEALER)
        self.stdin = ctx.socket(zmq.DEALER)
        for sock, port in ((self.shell, c["shell_port"]), (self.stdin, c["stdin_port"])):
            sock.identity = ident  # input requests are routed to the identity that sent the cell
            sock.linger = 0
            sock.connect(url(port))
        self.control = ctx.socket(zmq.DEALER)
        self.control.linger = 0
        self.control.connect(url(c["control_port"]))
        self.iopub = ctx.socket(zmq.SUB)
        self.iopub.linger = 0
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        self.iopub.connect(url(c["iopub_port"]))
        self.poller = zmq.Poller()
        for sock in (self.shell, self.stdin, self.control, self.iopub):
            self.poller.register(sock, zmq.POLLIN)

    def _close(self) -> None:
        for sock in (self.shell, self.stdin, self.control, self.iopub):
            sock.close(linger=0)

    def _send(self, channel: str, msg_type: str, content: dict, subshell: str | None = None,
              **kw) -> Pending:
        msg = self.session.msg(msg_type, content)
        if subshell is not None:
            msg["header"]["subshell_id"] = subshell
        sock = self.control if channel == "control" else self.shell
        self.session.send(sock, msg)
        p = Pending(msg["header"]["msg_id"], channel, msg_type, time.monotonic(), subshell=subshell, **kw)
        self.pending[p.msg_id] = p
        self.sent += 1
        return p

    def _wait_for_iopub(self, timeout: float = 30.0) -> None:
        """Send kernel_info until one's status arrives on iopub: the subscription is in place. These
        probes are not accounted (the first ones' status went out before the subscription did)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.session.msg("kernel_info_request", {})
            self.session.send(self.shell, msg)
            self.probes.add(msg["header"]["msg_id"])
            until = time.monotonic() + 0.5
            while time.monotonic() < until:
                self._pump(0.05)
                if self.subscribed:
                    return
        raise TimeoutError(f"{self.tag}: iopub never connected")

    # -- the loop --

    def run(self) -> None:
        try:
            self._connect()
            self._wait_for_iopub()
            while not self.stop_flag.is_set() and self.sent < self.budget:
                if self.stall and self.sent >= self.budget // 3:
                    self._stall()
                while self._shell_inflight() < self.inflight and self.sent < self.budget:
                    self._act()
                self._pump(0.01)
                self._check_stuck()
            self._drain_until(set(self.pending), STUCK_AFTER)
        except Exception as e:  # a client bug must show as a failure, not a silent thread death
            self.errors.append(f"{self.tag}: client crashed: {e!r}")
        finally:
            try:
                self._close()
            except Exception:
                pass

    def _stall(self) -> None:
        """A client that stops reading (a laptop asleep): with nothing of its own pending, it reads
        nothing for `stall` seconds; the kernel must keep serving the others. What reached it
        meanwhile is incomplete by design (past IPYMINI_IOPUB_STALL_TIMEOUT it misses messages), so
        it is discarded; everything it asks afterwards must again be whole."""
        self._drain_until(set(self.pending), STUCK_AFTER)
        time.sleep(self.stall)
        self.stall = 0
        quiet = time.monotonic() + 1.0
        while time.monotonic() < quiet:
            if self.iopub.poll(100):
                while True:
                    try:
                        self.iopub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                quiet = time.monotonic() + 1.0

    def _shell_inflight(self) -> int:
        return sum(1 for p in self.pending.values() if p.channel == "shell")

    def _drain_until(self, ids: set, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while ids & set(self.pending) and time.monotonic() < deadline:
            self._pump(0.02)
        for msg_id in ids & set(self.pending):
            p = self.pending[msg_id]
            self.errors.append(f"{self.tag}: {p.msg_type} {msg_id} on {p.channel} unanswered after "
                               f"{time.monotonic() - p.sent:.0f}s (replies {len(p.replies)}, {p.states})")

    def _check_stuck(self) -> None:
        now = time.monotonic()
        for p in list(self.pending.values()):
            if now - p.sent > STUCK_AFTER:
                self.errors.append(f"{self.tag}: {p.msg_type} {p.msg_id} stuck {now - p.sent:.0f}s "
                                   f"(replies {len(p.replies)}, {p.states})")
                self.stop_flag.set()

    def _pump(self, timeout: float) -> None:
        events = dict(self.poller.poll(timeout * 1000))
        for sock, handle in ((self.iopub, self._on_iopub), (self.stdin, self._on_stdin),
                             (self.shell, self._on_reply), (self.control, self._on_reply)):
            if sock in events:
                for _ in range(200):
                    try:
                        _, frames = self.session.feed_identities(sock.recv_multipart(zmq.NOBLOCK))
                    except zmq.Again:
                        break
                    handle(self.session.deserialize(frames, content=True))

    # -- incoming --

    def _mine(self, msg) -> Pending | None:
        return self.pending.get(msg["parent_header"].get("msg_id"))

    def _on_iopub(self, msg) -> None:
        p = self._mine(msg)
        if p is None:
            if msg["parent_header"].get("msg_id") in self.probes:
                self.subscribed = True
            return
        kind = msg["msg_type"]
        if kind == "status":
            p.states.append(msg["content"]["execution_state"])
        elif kind == "stream" and msg["content"]["name"] == "stdout":
            p.stdout.append(msg["content"]["text"])
        self._maybe_done(p)

    def _on_reply(self, msg) -> None:
        p = self._mine(msg)
        if p is None:
            parent = msg["parent_header"].get("msg_id")
            if parent not in self.probes and parent in self.done:
                self.errors.append(f"{self.tag}: a second reply to {parent}")
            return
        p.replies.append(msg)
        self._maybe_done(p)

    def _on_stdin(self, msg) -> None:
        p = self._mine(msg)
        if p is None and msg["parent_header"].get("msg_id") in self.prompts_may_come_late:
            self.late_prompts += 1
            return
        if p is None or p.answer is None:
            self.errors.append(f"{self.tag}: an input request that is not ours: {msg['content']}")
            return
        if msg["content"].get("prompt") != p.prompt:
            self.errors.append(f"{self.tag}: prompt {msg['content'].get('prompt')!r} != {p.prompt!r}")
        reply = self.session.msg("input_reply", {"value": p.answer}, parent=msg["header"])
        self.session.send(self.stdin, reply)

    def _maybe_done(self, p: Pending) -> None:
        if not p.replies or (p.channel == "shell" and "idle" not in p.states):
            return
        del self.pending[p.msg_id]
        self.done.append(p.msg_id)
        if len(self.done) > 1000:  # a soak must not keep every output (a duplicate reply is late
            del self.done[:500]  # by far less than 500 requests)
        self.answered += 1
        status = p.replies[0]["content"].get("status")
        self.statuses[status] = self.statuses.get(status, 0) + 1
        problems = []
        if len(p.replies) != 1:
            problems.append(f"{len(p.replies)} replies")
        if p.channel == "shell" and p.states != ["busy", "idle"]:
            problems.append(f"status messages {p.states}")
        if p.msg_type == "execute_request" and status == "ok" and p.expected is not None:
            text = "".join(p.stdout)
            if text != p.expected:
                at = next((i for i, (a, b) in enumerate(zip(text, p.expected)) if a != b),
                          min(len(text), len(p.expected)))
                shown = (repr(text) if len(text) < 2000 else repr(text[max(0, at - 40):at + 40]))
                problems.append(f"stdout {len(text)} chars in {len(p.stdout)} messages, expected "
                                f"{len(p.expected)}; first difference at {at}: got {shown}, "
                                f"expected {p.expected[max(0, at - 40):at + 40]!r}")
        if problems:
            self.errors.append(f"{self.tag}: {p.msg_type} {p.msg_id}: " + "; ".join(problems))
        p.stdout.clear()
        if p.answer is not None and status != "ok":
            if len(self.prompts_may_come_late) > 1000:
                self.prompts_may_come_late.clear()
            self.prompts_may_come_late.add(p.msg_id)
        if p.msg_type == "create_subshell_request" and status == "ok":
            self.subshells.append(p.replies[0]["content"]["subshell_id"])

    # -- outgoing --

    def _execute(self, code: str, expected: str | None, subshell=None, **kw) -> Pending:
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": "answer" in kw, "stop_on_error": True}
        return self._send("shell", "execute_request", content, subshell, expected=expected, **kw)

    def _act(self) -> None:
        rng = self.rng
        self.counter += 1
        tag = f"{self.tag}-{self.counter}"
        # each cell's own loop variable: cells on different subshells share the user namespace, and
        # run at once (truly in parallel on a free-threaded build), so a shared `j` would be set by
        # one cell between another's assignment and its print
        var = f"j_{self.tag}_{self.counter}"
        target = rng.choice([None, None, *self.subshells])
        roll = rng.random()
        if roll < 0.30:
            n = rng.randint(1, 5)
            self._execute(f"for {var} in range({n}):\n    print('{tag}', {var})",
                          "".join(f"{tag} {j}\n" for j in range(n)), target)
        elif roll < 0.34:
            n = rng.choice([2000, 20000])
            self._execute(f"for {var} in range({n}):\n    print('{tag}', {var}, 'x' * 20)",
                          "".join(f"{tag} {j} {'x' * 20}\n" for j in range(n)), target)
        elif roll < 0.40:
            self._execute(f"import time; time.sleep({rng.choice([0.01, 0.05, 0.2])}); print('{tag}')",
                          f"{tag}\n", target)
        elif roll < 0.45:
            self._execute(f"import asyncio; await asyncio.sleep(0.01); print('{tag}')", f"{tag}\n", target)
        elif roll < 0.47:
            self._execute(f"print('{tag}'); 1/0", None, target)
        elif roll < 0.51:
            self._execute(f"print('got', input('{tag}? '))", f"got {tag}-typed\n", target,
                          answer=f"{tag}-typed", prompt=f"{tag}? ")
        elif roll < 0.60:
            self._send("shell", "complete_request", {"code": "pri", "cursor_pos": 3}, target)
        elif roll < 0.65:
            self._send("shell", "inspect_request", {"code": "print", "cursor_pos": 5, "detail_level": 0},
                       target)
        elif roll < 0.70:
            self._send("shell", "is_complete_request", {"code": "for i in x:"}, target)
        elif roll < 0.74:
            self._send("shell", "history_request", {"hist_access_type": "tail", "n": 3, "output": False,
                                                     "raw": True}, target)
        elif roll < 0.80:
            self._send("shell", "kernel_info_request", {}, target)
        elif roll < 0.88:
            self._send("control", "kernel_info_request", {})
        elif roll < 0.91 and self.interrupts:
            self._send("control", "interrupt_request", {})
        elif roll < 0.95 and len(self.subshells) < 3:
            self._send("control", "create_subshell_request", {})
        elif self.subshells:
            sub = self.subshells.pop(rng.randrange(len(self.subshells)))
            self._send("control", "delete_subshell_request", {"subshell_id": sub})
        else:
            self._send("shell", "kernel_info_request", {}, target)


def run_chaos(conn: dict, pid: int, seed: int, clients: int, requests: int, interrupts: bool = True,
              report=None, stall: float = 0) -> dict:
    """Run `clients` chaos clients against a running kernel until each sent its share of `requests`;
    returns figures and the list of invariant violations."""
    stop = threading.Event()
    share = max(1, requests // clients)
    workers = [Client(f"c{i}", conn, seed * 1000 + i, share, interrupts=interrupts, stop=stop,
                      stall=stall if i == 0 else 0) for i in range(clients)]
    start, rss0 = time.monotonic(), rss_mb(pid, missing=0.0)
    peak = rss0
    for w in workers:
        w.start()
    last = start
    shown = [0] * len(workers)  # violations reported so far, per client (each shown as it happens)
    while any(w.is_alive() for w in workers):
        for w in workers:
            w.join(0.5)
        peak = max(peak, rss_mb(pid, missing=0.0))
        if report is not None and time.monotonic() - last > 10:
            last = time.monotonic()
            for i, w in enumerate(workers):
                errors = list(w.errors)
                for e in errors[shown[i]:]:
                    report(f"violation: {e}")
                shown[i] = len(errors)
            report(f"{sum(w.answered for w in workers):,} answered, RSS {rss_mb(pid, missing=0.0):.0f} MB, "
                   f"{sum(shown)} violations")
    statuses: dict = {}
    for w in workers:
        for k, v in w.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    return {"seconds": time.monotonic() - start, "answered": sum(w.answered for w in workers),
            "sent": sum(w.sent for w in workers), "late_prompts": sum(w.late_prompts for w in workers),
            "statuses": statuses, "rss_start": rss0,
            "rss_peak": peak, "rss_end": rss_mb(pid, missing=0.0), "errors": [e for w in workers for e in w.errors]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-interrupts", action="store_true")
    parser.add_argument("--stall", type=float, default=60, help="seconds one client stops reading")
    args = parser.parse_args()
    use_repo_kernelspec()
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=KERNEL_NAME)
    km.start_kernel()
    try:
        pid = km.provisioner.process.pid
        time.sleep(1)
        figures = run_chaos(km.get_connection_info(), pid, args.seed, args.clients, args.requests,
                            interrupts=not args.no_interrupts, report=lambda s: print(s, flush=True),
                            stall=args.stall)
        alive = km.is_alive()
    finally:
        km.shutdown_kernel(now=True)
    errors = figures.pop("errors")
    print({**figures, "kernel_alive": alive, "violations": len(errors)})
    for e in errors[:20]:
        print("  ", e)
    return 0 if alive and not errors and figures["answered"] == figures["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
