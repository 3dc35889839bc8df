"""The kernel: the Jupyter protocol server, one hub between the sockets and the IPython bridge.

Threads (see protocol/sockets.py for who reads which socket):
- main thread: an asyncio loop that reads shell and runs the shell worker,
  which takes shell requests in arrival order and runs them; user code runs here, so SIGINT interrupts
  it. Its replies and outputs leave from here too;
- IO thread: hands input replies to the waiting `input()`, flushes stream output on a timer, and, once
  subshells exist, reads shell for the workers while the parent shell is busy;
- control thread: control socket; control requests are handled right there, even while a cell runs.

Every request gets: iopub `status: busy` → its outputs → its reply → `status: idle`, all parented to it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import traceback

from ipymini import comms, memory, patches, settings
from ipymini.bridge import Bridge, KernelServices, kernel_info
from ipymini.debugging import interruptible_pdb
from ipymini.debugging.dap import debugger_available, response as dap_response
from ipymini.gui.loops import GuiLoops
from ipymini.kernelcode import calls_user_code
from ipymini.output import routing
from ipymini.output.front import OutputFront
from ipymini.protocol.messages import (Request, error_reply, execute_metadata, problem_with,
                                       unknown_subshell_reply)
from ipymini.protocol.sockets import KernelSockets
from ipymini.protocol.wire import Wire, now_iso
from ipymini.scheduling import cell_asyncio, lifecycle
from ipymini.scheduling.interrupts import Interrupts
from ipymini.scheduling.stdin import StdinBroker
from ipymini.scheduling.workers import ShellWorker, SubshellManager
from ipymini.shell.history import IPythonCells, SubshellCells
from ipymini.shell.ipykernel_api import IPyKernelAPI, usage_content
from ipymini.shell.zmqshell import RunningCell

log = logging.getLogger("ipymini")

COMM_TYPES = frozenset({"comm_open", "comm_msg", "comm_close"})
_STATUS_CONTENT = {state: f'{{"execution_state": "{state}"}}'.encode() for state in ("busy", "idle")}


class Kernel:
    """Serves the Jupyter messaging protocol for one IPython shell."""

    def __init__(self, conn: dict, app, sockets=None):
        """`conn`: the connection file's content; `app`: the IPKernelApp (shell/app.py); `sockets`:
        stand-in sockets for in-process tests (default: bind the real ones from `conn`)."""
        self.conn = conn
        self.app = app
        # refuses a replayed signature among the latest 2**16 messages received (protocol/wire.py)
        self.wire = Wire(conn.get("key", ""), conn.get("signature_scheme", "hmac-sha256"))
        self.sockets = sockets if sockets is not None else KernelSockets(conn, self.wire)
        self.output = OutputFront(self.wire)  # streams, fd capture and the IOPub queue (output/)
        self.publisher = self.output.publisher  # what collaborators publish through
        self.bridge: Bridge | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gui: GuiLoops | None = None  # %gui / %matplotlib tk|qt (gui/), made with the loop
        self.stopping = False
        # the parent shell's worker: its requests and cells, on the main thread
        self.parent_worker = ShellWorker(self.handle_shell, self.answer_aborted)
        self.subshells = SubshellManager(self._new_subshell_worker, self.sockets.io_lock)
        self.debugger = None  # created by the first debug_request (debugging/debugger.py)
        self.memory = memory.off()  # the memory guard (memory/), made in run()
        self.interrupts = Interrupts(self.parent_worker, self.subshells, lambda: self.debugger)
        # comm messages run on the parent shell, serialized with its cells, unless this is set
        self.comms_on_subshells = settings.value("IPYMINI_COMMS_ON_SUBSHELLS")
        self.stdin = StdinBroker(self.wire, self._send_on_stdin)
        self.comm_manager = comms.CommManager(self.publisher, self._run_soon)
        self._control_request: Request | None = None  # the control thread's latest request
        self._usage_processes: dict = {}  # psutil's Process objects between usage requests
        # what user code sees as `get_ipython().kernel` (and a comm as `comm.kernel`)
        self.ipykernel_api = IPyKernelAPI(self.wire, self.output, self.stdin, self.comm_manager,
                                          lambda: self.bridge.shell if self.bridge is not None else None,
                                          lambda: self._control_request,
                                          getattr(app, "config", None))
        self.comm_manager.kernel = self.ipykernel_api
        self.shell_handlers = {
            "execute_request": self.execute_request,
            "complete_request": self.complete_request,
            "inspect_request": self.inspect_request,
            "is_complete_request": self.is_complete_request,
            "history_request": self.history_request,
            "kernel_info_request": self.kernel_info_request,
            "comm_info_request": self.comm_info_request,
            "comm_open": self.comm_manager.handle_request,
            "comm_msg": self.comm_manager.handle_request,
            "comm_close": self.comm_manager.handle_request,
            "connect_request": self.connect_request,
            "shutdown_request": self.shutdown_request,
        }
        self.control_handlers = {
            "kernel_info_request": self.kernel_info_request,
            "connect_request": self.connect_request,
            "shutdown_request": self.shutdown_request,
            "interrupt_request": self.interrupt_request,
            "debug_request": self.debug_request,
            "usage_request": self.usage_request,
            "comm_info_request": self.comm_info_request,
            "create_subshell_request": self.create_subshell_request,
            "list_subshell_request": self.list_subshell_request,
            "delete_subshell_request": self.delete_subshell_request,
        }

    # ------------------------------------------------------------------ lifecycle

    @calls_user_code  # an async cell's task runs from this loop
    def run(self) -> int:
        """Serve until a shutdown request; returns the process exit code."""
        if settings.value("IPYMINI_THREAD_OUTPUT") == "starter":
            routing.use_starter_routing()
        lifecycle.become_group_leader()
        cell_asyncio.install()
        interruptible_pdb.install()
        self.loop = cell_asyncio.KernelEventLoop()
        asyncio.set_event_loop(self.loop)
        self.parent_worker.attach(self.loop)
        self.gui = GuiLoops(self.loop)
        self.sockets.start(self.output, self._on_io_message, self._on_control_message,
                           on_crash=self.request_stop)
        self.sockets.read_shell_on(self.loop, self.parent_worker)
        self.output.start()
        comms.install(self.comm_manager)
        self.memory = memory.guard_for(self.app.connection_file, self._cells_computing,
                                       lambda threads: self.interrupts.stop_cells(MemoryError, threads),
                                       self.interrupts.memory_stop_pending)
        self.bridge = Bridge(self.app, KernelServices(
            publisher=self.publisher, request_input=self.stdin.request_input,
            subshell_ids=self.subshells.ids, interrupt_count=lambda: self.interrupts.count,
            ipykernel_api=self.ipykernel_api, memory=self.memory, gui_loops=self.gui))
        self.comm_manager.shell = self.bridge.shell
        self.parent_worker.cells = IPythonCells(self.bridge.shell)
        self.bridge.start()
        os.register_at_fork(after_in_child=self._after_fork_in_child)
        self.interrupts.install()
        self.memory.start()  # after interrupts.install(): it signals the main thread
        signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())
        lifecycle.watch_parent(self.request_stop)
        serving = None
        while not self.stopping:
            if serving is None or serving.done():
                serving = self.loop.create_task(self.parent_worker.serve())
            try:
                self.loop.run_forever()
            except KeyboardInterrupt:
                continue  # an interrupt that escaped a task; the worker is restarted if it died
        self._finish()
        return 0

    def _after_fork_in_child(self) -> None:
        """A process forked from the kernel (multiprocessing's fork workers, os.fork) must never use
        the parent's sockets; its prints and displays go to the parent through the children's pipe
        (output/childpipe.py), or to fds 1 and 2 without fd capture."""
        self.sockets.after_fork_in_child()
        self.output.after_fork_in_child()
        try:  # nor run the kernel's signal handlers: a pool worker that multiprocessing terminated
            # ran request_stop and "interrupted" the parent's cell inside itself (a stray traceback)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:
            pass

    def _finish(self) -> None:
        if self.gui is not None:
            self.gui.shutdown()  # before anything it waits for is closed
        self.stdin.cancel_all()
        self.subshells.stop_all()
        if self.debugger is not None:
            self.debugger.close()
        try:
            self.bridge.shutdown()
        except Exception:
            log.exception("error during shutdown")
        lifecycle.stop_children()
        self.memory.stop()
        self.sockets.stop_reading_shell()
        self.output.stop()
        patches.restore_all()  # sys.stdout/stderr, input(), ... (patches.py lists them all)
        self.sockets.close()

    def _cells_computing(self) -> bool:
        """Whether a cell runs now on any shell (the memory guard asks)."""
        return self.parent_worker.busy or any(worker.busy for worker in self.subshells.workers())

    def request_stop(self) -> None:
        """Stop serving (from any thread): interrupts a running cell, then ends the main loop."""
        if self.stopping:
            return
        self.stopping = True
        lifecycle.start_watchdog()
        if self.parent_worker.busy:
            self.interrupt()
        self.loop.call_soon_threadsafe(self.loop.stop)

    def interrupt(self) -> None:
        """Interrupt every running cell (interrupts.py)."""
        self.interrupts.interrupt()

    # ------------------------------------------------------------------ incoming messages

    def _on_io_message(self, channel: str, idents: list, msg: dict, header_frame: bytes) -> None:
        """Sockets' lock held: queue a shell request for its worker, or hand an input reply to its
        waiter."""
        if channel == "stdin":
            self.stdin.deliver(msg)
            return
        header = msg["header"]
        subshell_id = header.get("subshell_id")
        req = Request("shell", idents, msg, subshell_id=subshell_id, header_frame=header_frame)
        worker = self.parent_worker
        if subshell_id is not None and (self.comms_on_subshells or header.get("msg_type") not in COMM_TYPES):
            worker = self.subshells.get(subshell_id) if isinstance(subshell_id, str) else None
            if worker is None:
                self._refuse_unknown_subshell(req)
                return
        if worker.cell_task is not None and header.get("msg_type") in COMM_TYPES:
            worker.number(req)
            worker.hand_over(self._comm_during_cell, req)
        else:
            worker.submit(req)

    def _comm_during_cell(self, req: Request) -> None:
        """On the worker's loop: a comm message that came while an async cell awaits is handled at once,
        as ipykernel does (the cell may be awaiting a widget's answer); otherwise it waits its turn."""
        worker = req.worker
        if worker.cell_task is None:
            worker.enqueue(req)
            return
        self._answer_now(req, self.shell_handlers)

    def _on_control_message(self, channel: str, idents: list, msg: dict, header_frame: bytes) -> None:
        """Control thread: handle the request right here."""
        req = Request("control", idents, msg, header_frame=header_frame)
        self._control_request = req
        msg_type = msg["header"].get("msg_type")
        if msg_type not in self.control_handlers and msg_type in self.shell_handlers:
            # "control is identical to shell, on a separate socket": a shell request sent here joins
            # the parent shell's line (never the control thread, which must stay free for
            # interrupts), and is answered here
            self._run_soon(self._control_to_shell, req)
            return
        self._answer_now(req, self.control_handlers)

    def _control_to_shell(self, req: Request) -> None:
        """On the main loop: queue a shell request that came on control (numbered under the IO
        lock, as every shell request is)."""
        with self.sockets.io_lock:
            self.parent_worker.submit(req)

    async def handle_shell(self, req: Request, worker: ShellWorker) -> None:
        """Handle one shell request on its worker (its turn in the worker's line has come)."""
        routing.set_latest(req)
        await self._answer(req, self.shell_handlers, worker)
        self.bridge.after_request()

    async def _answer(self, req: Request, handlers: dict, worker: ShellWorker | None = None) -> None:
        """The one path every request takes: busy, the checks, its handler (outputs, then the reply),
        idle; everything parented to `req`. A handler may be async (execute_request)."""
        token = routing.current_request.set(req)
        try:
            self._publish_status("busy", req)
            problem = problem_with(req.msg)
            handler = None if problem else handlers.get(req.msg_type)
            if handler is None:
                self._refuse(req, problem)
            elif worker is not None and req.msg_type == "execute_request" and req.seq <= worker.abort_through:
                self._send_aborted(req)
            else:
                try:
                    result = handler(req)
                    if asyncio.iscoroutine(result):
                        await result
                except BaseException as e:  # a handler bug or a stray interrupt still gets a reply
                    self._reply_exception(req, e)
            self.output.flush_streams()
            self._publish_status("idle", req)
        finally:
            routing.current_request.reset(token)

    def _answer_now(self, req: Request, handlers: dict) -> None:
        """`_answer` on the calling thread, for a synchronous handler (control requests, a comm
        message during an async cell): the coroutine finishes without ever suspending."""
        coro = self._answer(req, handlers)
        try:
            coro.send(None)
        except StopIteration:
            return
        coro.close()
        log.error("a %s handler awaited where nothing can resume it", req.msg_type)

    def _new_subshell_worker(self, subshell_id: str) -> ShellWorker:
        worker = ShellWorker(self.handle_shell, self.answer_aborted, subshell_id)
        worker.cells = SubshellCells()
        return worker

    def answer_aborted(self, req: Request) -> None:
        """A shell request that will never run (its subshell was deleted): busy, `aborted`, idle."""
        self._publish_status("busy", req)
        self._send_aborted(req)
        self._publish_status("idle", req)

    def _send_aborted(self, req: Request) -> None:
        if req.msg_type.endswith("_request"):
            self.send_reply(req, {"status": "aborted"},
                            metadata=execute_metadata(self.wire.session_id, now_iso(), "aborted"))

    def _refuse_unknown_subshell(self, req: Request) -> None:
        """Sockets' lock held: a shell request for a subshell that does not exist gets an error reply."""
        if problem_with(req.msg) is not None:
            self._refuse(req, problem_with(req.msg))
            return
        self._publish_status("busy", req)
        if req.msg_type.endswith("_request"):
            self.send_reply(req, unknown_subshell_reply(req.subshell_id),
                            metadata=execute_metadata(self.wire.session_id, now_iso(), "error"))
        else:
            log.warning("dropped a %s for unknown subshell_id %r", req.msg_type, req.subshell_id)
        self._publish_status("idle", req)

    def _refuse(self, req: Request, problem: str | None) -> None:
        """Answer a malformed or unknown request with an error reply (nothing is run)."""
        msg_type = req.msg.get("header", {}).get("msg_type", "")
        if problem is None:
            problem = f"unknown message type {msg_type!r}"
        log.warning("refused a %s message: %s", req.channel, problem)
        if isinstance(msg_type, str) and msg_type.endswith("_request") and isinstance(
                req.msg.get("header", {}).get("msg_id"), str):
            self.send_reply(req, error_reply("BadRequest", problem))

    def _reply_exception(self, req: Request, e: BaseException) -> None:
        log.error("error handling %s:\n%s", req.msg_type, traceback.format_exc())
        if req.msg_type in COMM_TYPES:
            return  # comm messages get no reply
        self.send_reply(req, error_reply(type(e).__name__, str(e), traceback.format_exception(e)))

    # ------------------------------------------------------------------ outgoing messages

    def _publish_status(self, state: str, req: Request) -> None:
        # `busy` is not sent on its own: execute_input, the reply or idle follows at once and sends
        # everything queued, in order
        self.output.publish("status", _STATUS_CONTENT[state], req, wake=state != "busy")

    def send_reply(self, req: Request, content: dict, metadata=None) -> None:
        """Send the reply to `req` on its channel, after every iopub message it produced so far."""
        msg_type = req.msg_type.rsplit("_", 1)[0] + "_reply"
        msg = self.wire.msg(msg_type, content, parent=req.header, metadata=metadata)
        frames = self.wire.serialize(msg, ident=req.idents, parent_frame=req.header_frame)
        if req.channel == "control":
            if req.worker is not None:  # a shell request that came on control: its outputs first
                self.output.before_reply()
            self.sockets.send("control", frames)
        else:
            # not sent yet: `idle` follows every shell reply and sends outputs, reply and idle in order
            self.output.before_reply(wake=False)
            self.sockets.send_after_iopub(req.channel, frames, wake=False)

    def _run_soon(self, fn, *args) -> None:
        """Run `fn(*args)` on the main loop, from any thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def _send_on_stdin(self, frames: list) -> None:
        """Send an input_request on stdin after every output its request produced so far."""
        self.output.before_reply()
        self.sockets.send_after_iopub("stdin", frames)

    # ------------------------------------------------------------------ shell handlers

    async def execute_request(self, req: Request) -> None:
        c = req.content
        code = c["code"]
        silent = bool(c.get("silent", False))
        store_history = bool(c.get("store_history", not silent)) and not silent
        bridge = self.bridge
        worker = req.worker
        subshell = worker.subshell_id is not None
        cells = worker.cells
        count = cells.next_count
        if not silent:
            self.publisher.publish("execute_input", {"code": code, "execution_count": count})
        started = now_iso()
        cell_id = (req.msg.get("metadata") or {}).get("cellId")
        # a subshell keeps its own count and history; IPython's belong to the parent shell
        cell = RunningCell(own_count=count if cells.own else None)
        notice = self.memory.cell_started(not subshell, count, code)
        if notice is not None:  # the previous kernel on this connection file died in a cell
            self.output.write_stream("stderr", notice, req)
        try:
            status = await bridge.execute(code, silent, store_history and not cells.own, worker, cell,
                                          cell_id=cell_id, cell_meta=req.msg.get("metadata"))
        finally:
            self.memory.cell_ended(not subshell)
        cells.ran(code, store_history)
        reply = {**status, "execution_count": cells.next_count - 1}
        if status["status"] == "error":  # ipyparallel's field, which ipykernel still sends
            reply["engine_info"] = {"engine_uuid": self.wire.session_id,
                                    "engine_id": self.ipykernel_api.int_id, "method": "execute"}
        expressions = c.get("user_expressions") or {}
        reply["user_expressions"] = (bridge.user_expressions(expressions)
                                     if status["status"] == "ok" and isinstance(expressions, dict) else {})
        reply["payload"] = bridge.take_payloads()
        self.output.finish_cell(req)
        if status["status"] == "error" and c.get("stop_on_error", True) and not silent:
            self.sockets.receive_waiting()  # take in what the client already sent, then abort it
            worker.abort_through = worker.seq
        self.send_reply(req, reply,
                        metadata=execute_metadata(self.wire.session_id, started, status["status"]))

    def complete_request(self, req: Request) -> None:
        c = req.content
        self.send_reply(req, self.bridge.complete(c["code"], c["cursor_pos"]))

    def inspect_request(self, req: Request) -> None:
        c = req.content
        omit = c.get("omit_sections") or ()
        self.send_reply(req, self.bridge.inspect(c["code"], c["cursor_pos"],
                                                 int(c.get("detail_level", 0) or 0),
                                                 omit if isinstance(omit, list) else ()))

    def is_complete_request(self, req: Request) -> None:
        self.send_reply(req, self.bridge.is_complete(req.content["code"]))

    def history_request(self, req: Request) -> None:
        worker = req.worker if req.worker is not None else self.parent_worker  # (one sent on control)
        self.send_reply(req, worker.cells.history(req.content))

    def kernel_info_request(self, req: Request) -> None:
        self.send_reply(req, kernel_info(debugger=debugger_available()))

    def comm_info_request(self, req: Request) -> None:
        target = req.content.get("target_name")
        self.send_reply(req, {"status": "ok", "comms": self.comm_manager.comms_info(target)})

    def usage_request(self, req: Request) -> None:
        """jupyter-resource-usage's kernel panel: this kernel's CPU and memory (with its children's)
        and the host's, as ipykernel reports them, and the memory guard's report."""
        content = usage_content(self._usage_processes)
        content["memory_guard"] = self.memory.report()  # ipymini's: the limit and the use against it
        self.send_reply(req, content)

    def connect_request(self, req: Request) -> None:
        ports = {f"{ch}_port": self.conn[f"{ch}_port"] for ch in ("shell", "iopub", "stdin", "hb",
                                                                   "control")}
        self.send_reply(req, {"status": "ok", **ports})

    def shutdown_request(self, req: Request) -> None:
        content = {"status": "ok", "restart": bool(req.content.get("restart", False))}
        self.send_reply(req, content)
        self.publisher.publish("shutdown_reply", content, request=req)
        self.request_stop()

    # ------------------------------------------------------------------ control handlers

    def interrupt_request(self, req: Request) -> None:
        self.interrupt()
        self.send_reply(req, {"status": "ok"})

    def debug_request(self, req: Request) -> None:
        # Requests that need a started debugger are answered at once while it is not (JupyterLab
        # sends `evaluate` on Tab either way); debugpy itself is imported by `initialize`.
        if self.debugger is None:
            if not debugger_available():
                self.send_reply(req, dap_response(req.content, False, message="debugpy is not installed"))
                return
            from ipymini.debugging.debugger import Debugger

            self.debugger = Debugger(self.bridge.shell, self.publisher)
            self.bridge.attach_debugger(self.debugger)
        self.send_reply(req, self.debugger.handle(req.content))

    def create_subshell_request(self, req: Request) -> None:
        subshell_id = self.subshells.create()
        self.sockets.share_shell_reading()
        self.send_reply(req, {"status": "ok", "subshell_id": subshell_id})

    def list_subshell_request(self, req: Request) -> None:
        self.send_reply(req, {"status": "ok", "subshell_id": self.subshells.ids()})

    def delete_subshell_request(self, req: Request) -> None:
        subshell_id = req.content.get("subshell_id")
        if isinstance(subshell_id, str) and self.subshells.delete(subshell_id):
            self.send_reply(req, {"status": "ok"})
        else:
            self.send_reply(req, unknown_subshell_reply(subshell_id))

