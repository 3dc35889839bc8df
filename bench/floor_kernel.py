"""A do-nothing Jupyter kernel: the protocol floor for the benchmark.

It speaks the messaging protocol exactly as a real kernel does (jupyter_client Session signing and
verification, iopub `status: busy` → `execute_input` → shell `execute_reply` → `status: idle`,
kernel_info, minimal complete/inspect/is_complete/history/comm_info/connect replies, shutdown), but runs
no code. One thread, one poller over the sockets of the connection file; iopub is an XPUB that greets each
new subscriber with `iopub_welcome` (JEP 65). Whatever a real kernel costs above this is its own overhead.

With --lean it signs and verifies with ipymini's own wire.py instead of jupyter_client's Session: the
same messages at ipymini's cost per message, the real limit for a kernel behind the benchmark's client.

Usage (via a kernelspec; bench/run.py writes one): python floor_kernel.py [--lean] -f CONNECTION_FILE
"""

from __future__ import annotations

import json
import signal
import sys

import zmq
from jupyter_client.session import Session

PROTOCOL_VERSION = "5.5"


def bind(ctx: zmq.Context, kind: int, conn: dict, channel: str) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.linger = 1000
    port = conn[f"{channel}_port"]
    if conn.get("transport", "tcp") == "ipc":
        sock.bind(f"ipc://{conn['ip']}-{port}")
    else:
        sock.bind(f"tcp://{conn['ip']}:{port}")
    return sock


class LeanSession:
    """The few Session methods the floor uses, done by ipymini's wire.py."""

    def __init__(self, key: bytes, signature_scheme: str):
        from ipymini.protocol.wire import Wire

        self.wire = Wire(key, signature_scheme)

    def send(self, sock, msg_type: str, content: dict, parent=None, ident=None) -> None:
        sock.send_multipart(self.wire.serialize(self.wire.msg(msg_type, content, parent=parent),
                                                ident=ident))

    def feed_identities(self, frames: list, copy: bool = False) -> tuple[list, list]:
        return self.wire.split_identities([f.bytes if hasattr(f, "bytes") else f for f in frames])

    def deserialize(self, frames: list, content: bool = True, copy: bool = False) -> dict:
        return self.wire.deserialize(frames)


class FloorKernel:
    """Answers every request with the right replies and iopub messages, and does nothing else."""

    def __init__(self, conn: dict, lean: bool = False):
        key = conn.get("key", "")
        key = key.encode() if isinstance(key, str) else key
        scheme = conn.get("signature_scheme", "hmac-sha256")
        self.conn = conn
        self.session = (LeanSession(key, scheme) if lean else
                        Session(key=key, signature_scheme=scheme, username="kernel", check_pid=False))
        ctx = zmq.Context.instance()
        self.shell = bind(ctx, zmq.ROUTER, conn, "shell")
        self.control = bind(ctx, zmq.ROUTER, conn, "control")
        self.stdin = bind(ctx, zmq.ROUTER, conn, "stdin")
        self.hb = bind(ctx, zmq.REP, conn, "hb")
        self.iopub = ctx.socket(zmq.XPUB)
        self.iopub.linger = 1000
        self.iopub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.iopub.sndhwm = 0
        port = conn["iopub_port"]
        self.iopub.bind(f"ipc://{conn['ip']}-{port}" if conn.get("transport", "tcp") == "ipc"
                        else f"tcp://{conn['ip']}:{port}")
        self.execution_count = 1
        self.running = True

    def publish(self, msg_type: str, content: dict, parent: dict) -> None:
        self.session.send(self.iopub, msg_type, content, parent=parent)

    def reply(self, sock, idents, parent: dict, content: dict) -> None:
        msg_type = parent["header"]["msg_type"].rsplit("_", 1)[0] + "_reply"
        self.session.send(sock, msg_type, content, parent=parent, ident=idents)

    def handle(self, sock, frames: list) -> None:
        idents, rest = self.session.feed_identities(frames, copy=False)
        try:
            msg = self.session.deserialize(rest, content=True, copy=False)
        except Exception as e:  # bad signature or malformed: drop it, like a real kernel
            print(f"floor: dropped a bad message: {e}", file=sys.__stderr__)
            return
        msg_type = msg["header"]["msg_type"]
        self.publish("status", {"execution_state": "busy"}, msg)
        content = msg["content"]
        if msg_type == "execute_request":
            count = self.execution_count
            if not content.get("silent", False):
                self.publish("execute_input", {"code": content.get("code", ""), "execution_count": count},
                             msg)
                if content.get("store_history", True):
                    self.execution_count += 1
            self.reply(sock, idents, msg, {"status": "ok", "execution_count": count,
                                           "user_expressions": {}, "payload": []})
        elif msg_type == "kernel_info_request":
            self.reply(sock, idents, msg, {
                "status": "ok", "protocol_version": PROTOCOL_VERSION, "implementation": "floor",
                "implementation_version": "0", "banner": "floor kernel (runs no code)",
                "language_info": {"name": "python", "version": sys.version.split()[0],
                                  "mimetype": "text/x-python", "file_extension": ".py"},
                "help_links": [], "debugger": False, "supported_features": []})
        elif msg_type == "complete_request":
            pos = content.get("cursor_pos", 0)
            self.reply(sock, idents, msg, {"status": "ok", "matches": [], "cursor_start": pos,
                                           "cursor_end": pos, "metadata": {}})
        elif msg_type == "inspect_request":
            self.reply(sock, idents, msg, {"status": "ok", "found": False, "data": {}, "metadata": {}})
        elif msg_type == "is_complete_request":
            self.reply(sock, idents, msg, {"status": "complete"})
        elif msg_type == "history_request":
            self.reply(sock, idents, msg, {"status": "ok", "history": []})
        elif msg_type == "comm_info_request":
            self.reply(sock, idents, msg, {"status": "ok", "comms": {}})
        elif msg_type == "connect_request":
            self.reply(sock, idents, msg, {"status": "ok", **{
                f"{ch}_port": self.conn[f"{ch}_port"] for ch in ("shell", "iopub", "stdin", "hb",
                                                                 "control")}})
        elif msg_type == "interrupt_request":
            self.reply(sock, idents, msg, {"status": "ok"})
        elif msg_type == "shutdown_request":
            content = {"status": "ok", "restart": bool(content.get("restart", False))}
            self.reply(sock, idents, msg, content)
            self.publish("shutdown_reply", content, msg)
            self.running = False
        elif msg_type.endswith("_request"):
            self.reply(sock, idents, msg, {"status": "error", "ename": "NotImplemented",
                                           "evalue": f"floor kernel does not do {msg_type}",
                                           "traceback": []})
        self.publish("status", {"execution_state": "idle"}, msg)

    def welcome(self) -> None:
        """An XPUB subscription arrived: greet the subscriber (JEP 65)."""
        frame = self.iopub.recv()
        if frame[:1] == b"\x01":
            topic = frame[1:].decode("utf-8", "replace")
            self.session.send(self.iopub, "iopub_welcome", {"subscription": topic})

    def serve(self) -> None:
        poller = zmq.Poller()
        for sock in (self.shell, self.control, self.stdin, self.hb, self.iopub):
            poller.register(sock, zmq.POLLIN)
        while self.running:
            for sock, _ in poller.poll():
                if sock is self.iopub:
                    self.welcome()
                elif sock is self.hb:
                    self.hb.send(self.hb.recv())
                elif sock is self.stdin:
                    sock.recv_multipart()  # no input requests are ever made: nothing to answer
                else:
                    self.handle(sock, sock.recv_multipart(copy=False))


def main(argv: list[str]) -> int:
    lean = argv[:1] == ["--lean"]
    argv = argv[1:] if lean else argv
    if len(argv) != 2 or argv[0] != "-f":
        print("usage: floor_kernel.py [--lean] -f CONNECTION_FILE", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # nothing ever runs, so there is nothing to interrupt
    with open(argv[1]) as f:
        conn = json.load(f)
    FloorKernel(conn, lean=lean).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
