"""The debugger: Jupyter's debug protocol (`debug_request` / `debug_reply` / `debug_event`) over debugpy.

A frontend (JupyterLab's visual debugger, VS Code) sends DAP requests inside `debug_request` messages on
the control channel; this module answers them on the control thread, so it keeps answering while the
main thread is stopped at a breakpoint. debugpy runs in this process: `debugpy.listen(...,
in_process_debug_adapter=True)` makes pydevd itself the DAP server (no adapter subprocess), and the
kernel talks to it as a DAP client over a local socket (dap.py). Events pydevd sends are published on
iopub as `debug_event`.

Some requests are answered here without debugpy (Jupyter's additions to DAP: debugInfo, dumpCell,
inspectVariables, richInspectVariables, copyToGlobals, plus source and modules), the rest are forwarded.
A request that needs a started debugger gets `success: false` at once when it is not started
(JupyterLab sends `evaluate` on Tab whether the debugger is on or not).

debugpy is imported on the first request that needs it, never at kernel startup. Before importing it:
- PYDEVD_DISABLE_FILE_VALIDATION=1: pydevd otherwise prints a frozen-modules warning into the cell output;
- PYDEVD_USE_SYS_MONITORING: 1 on Python 3.12+ (pydevd's PEP 669 backend, its own default there), 0
  before. With settrace, every line of user code pays for a trace call while a debugger is attached
  (a loop ran 6-11x slower on 3.13); with sys.monitoring, code without breakpoints runs at full
  speed. The kernel's hidden threads (IO, control, subshells) are skipped per thread by both backends
  (`is_pydev_daemon_thread`: pydevd's monitoring callbacks return at once for them and never disable
  a code location another thread may need). `before_cell` re-arms tracing in settrace mode only.
Either can be overridden by setting it in the kernel's environment.
"""

from __future__ import annotations

import ast
import logging
import os
import sys
import threading

from ipymini import patches, settings
from ipymini.debugging import cellfile
from ipymini.debugging.dap import DAPClient, DAPError, hide_thread, import_debugpy, response

log = logging.getLogger("ipymini")

# Commands answered without a started debugger (the rest fail at once when it is not started).
STATIC = frozenset({"debugInfo", "inspectVariables", "richInspectVariables", "modules", "copyToGlobals",
                    "dumpCell", "source"})

# Modules whose frames are the kernel's, not the user's: never stepped into or shown while stepping.
KERNEL_MODULES = ("ipymini", "IPython", "traitlets", "zmq", "jupyter_client", "jupyter_core", "comm",
                  "asyncio", "debugpy", "concurrent", "selectors", "threading", "contextvars")

# Names of the user namespace a variables view leaves out (IPython's own entries).
HIDDEN_NAMES = frozenset({"__name__", "__doc__", "__package__", "__loader__", "__spec__",
                          "__annotations__", "__builtins__", "__builtin__", "__display__", "get_ipython",
                          "debugpy", "exit", "quit", "In", "Out", "_oh", "_dh", "_", "__", "___"})


def visible_name(name: str) -> bool:
    """Whether a variable is the user's (not IPython's In/Out/_i1/_3 bookkeeping)."""
    if name in HIDDEN_NAMES or name.startswith("_i"):
        return False
    return not (name.startswith("_") and name[1:2].isdigit())


class Debugger:
    """Answers debug requests for one kernel (on the control thread) and publishes debug events."""

    def __init__(self, shell, publisher):
        """`shell`: the IPython shell (its namespace and input transformers); `publisher`: where
        debug events go (output/publisher.Publisher)."""
        self.shell = shell
        self.publisher = publisher
        self.started = False
        self.client: DAPClient | None = None
        self.address: tuple[str, int] | None = None  # where pydevd listens (debugpy.listen is once per process)
        self.breakpoints: dict[str, list] = {}  # source path -> breakpoints, for debugInfo
        self.stopped_threads: set[int] = set()
        self.just_my_code = settings.value("IPYMINI_DEBUG_JUST_MY_CODE")
        self.timeout = settings.value("IPYMINI_DEBUG_TIMEOUT")
        self._removed_transforms: list = []
        self._explorer = None
        self._lock = threading.Lock()
        self.debugpy_dir = ""  # frames under it are the debugger's own
        self.interrupting = False  # an interrupt is on its way to a cell that was stopped

    # ------------------------------------------------------------------ requests

    def handle(self, request: dict) -> dict:
        """The DAP response to one request (the content of a debug_request)."""
        command = request.get("command")
        if not isinstance(command, str) or not isinstance(request.get("seq", 0), int):
            return response(request, False, message="not a DAP request")
        if request.get("arguments") is not None and not isinstance(request.get("arguments"), dict):
            return response(request, False, message="DAP arguments must be an object")
        with self._lock:  # one request at a time: requests and their state changes stay in order
            try:
                if command == "initialize":
                    return self.initialize(request)
                handler = getattr(self, "do_" + command, None)
                if command in STATIC:
                    return handler(request)
                if not self.started:
                    return response(request, False, message="the debugger is not started")
                if handler is not None:
                    return handler(request)
                return self.forward(request)
            except DAPError as e:
                return response(request, False, message=str(e))

    def forward(self, request: dict, arguments: dict | None = None, command: str | None = None) -> dict:
        """Send a request to debugpy; its response, renumbered to answer `request`."""
        if arguments is None:
            arguments = request.get("arguments")
        reply = self.client.request(command or request["command"], arguments, timeout=self.timeout)
        reply["request_seq"] = request.get("seq", 0)
        reply["command"] = request["command"]
        return reply

    def initialize(self, request: dict) -> dict:
        if not self.started:
            try:
                self.start()
            except Exception as e:
                log.exception("could not start the debugger")
                return response(request, False, message=f"could not start the debugger: {e}")
        reply = self.forward(request)
        if not reply.get("success"):
            self.stop()
        return reply

    def do_attach(self, request: dict) -> dict:
        arguments = dict(request.get("arguments") or {})
        if "justMyCode" not in arguments and "debugOptions" not in arguments:
            arguments["justMyCode"] = self.just_my_code
        rules = arguments.get("rules") if isinstance(arguments.get("rules"), list) else []
        arguments["rules"] = rules + [{"module": m, "include": False} for m in KERNEL_MODULES]
        return self.forward(request, arguments)

    def do_disconnect(self, request: dict) -> dict:
        try:
            reply = self.forward(request)
        except DAPError as e:
            reply = response(request, True, message=f"disconnected ({e})")
        finally:
            self.stop()
        return reply

    def do_setBreakpoints(self, request: dict) -> dict:
        reply = self.forward(request)
        path = ((request.get("arguments") or {}).get("source") or {}).get("path")
        if isinstance(path, str):
            placed = (reply.get("body") or {}).get("breakpoints") if reply.get("success") else None
            if placed is not None:
                lines = [{"line": b["line"]} for b in placed if "line" in b]
            else:
                lines = (request.get("arguments") or {}).get("breakpoints") or []
            if lines:
                self.breakpoints[path] = lines
            else:
                self.breakpoints.pop(path, None)
        return reply

    def do_stackTrace(self, request: dict) -> dict:
        reply = self.forward(request)
        body = reply.get("body") or {}
        frames = body.get("stackFrames")
        if reply.get("success") and isinstance(frames, list):
            # the kernel's frames below the cell are no use to the user: show the stack from the cell up
            cells = [i for i, f in enumerate(frames)
                     if cellfile.is_cell_file(((f.get("source") or {}).get("path")) or "")]
            if cells:
                body["stackFrames"] = frames[:cells[-1] + 1]
                body["totalFrames"] = len(body["stackFrames"])
        return reply

    def do_threads(self, request: dict) -> dict:
        forget_ended_dummy_threads()
        reply = self.forward(request)
        threads = (reply.get("body") or {}).get("threads")
        if isinstance(threads, list):  # kernel threads started after the debugger (hide_kernel_threads)
            reply["body"]["threads"] = [t for t in threads if not is_kernel_thread(t.get("name", ""))]
        return reply

    def do_variables(self, request: dict) -> dict:
        if not self.stopped_threads:
            ref = (request.get("arguments") or {}).get("variablesReference")
            return response(request, body={"variables": self.explorer().children(ref)})
        reply = self.forward(request)
        body = reply.get("body") or {}
        if isinstance(body.get("variables"), list):
            body["variables"] = [v for v in body["variables"] if visible_name(v.get("name", ""))]
        return reply

    def do_debugInfo(self, request: dict) -> dict:
        return response(request, body={
            "isStarted": self.started,
            "hashMethod": "Murmur2",
            "hashSeed": cellfile.HASH_SEED,
            "tmpFilePrefix": cellfile.tmp_prefix(),
            "tmpFileSuffix": cellfile.SUFFIX,
            "breakpoints": [{"source": path, "breakpoints": lines}
                            for path, lines in self.breakpoints.items()],
            "stoppedThreads": sorted(self.stopped_threads),
            "richRendering": True,
            "exceptionPaths": ["Python Exceptions"],
            "copyToGlobals": True,
        })

    def do_dumpCell(self, request: dict) -> dict:
        code = (request.get("arguments") or {}).get("code")
        if not isinstance(code, str):
            return response(request, False, message="dumpCell needs arguments.code (a string)")
        path = cellfile.cell_filename(code)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        return response(request, body={"sourcePath": path})

    def do_source(self, request: dict) -> dict:
        path = ((request.get("arguments") or {}).get("source") or {}).get("path")
        if isinstance(path, str) and os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return response(request, body={"content": f.read()})
        if self.started and self.stopped_threads:
            return self.forward(request)  # pydevd knows code with no file (e.g. <string>)
        return response(request, False, message="source unavailable")

    def do_modules(self, request: dict) -> dict:
        arguments = request.get("arguments") or {}
        modules = list(sys.modules.values())
        start = arguments.get("startModule", 0) or 0
        count = arguments.get("moduleCount", 0) or len(modules)
        found = []
        for i, module in enumerate(modules[start:start + count], start):
            path = getattr(getattr(module, "__spec__", None), "origin", None)
            if isinstance(path, str) and path.endswith(".py"):
                found.append({"id": i, "name": module.__name__, "path": path})
        return response(request, body={"modules": found, "totalModules": len(modules)})

    def do_inspectVariables(self, request: dict) -> dict:
        self._explorer = None  # a fresh view of the namespace as it is now
        return response(request, body={"variables": self.explorer().children(None)})

    def do_richInspectVariables(self, request: dict) -> dict:
        arguments = request.get("arguments") or {}
        name = arguments.get("variableName")
        if not isinstance(name, str) or not name.isidentifier():
            ok = name in ("special variables", "function variables")
            return response(request, ok, {"data": {}, "metadata": {}},
                            None if ok else "variableName must be an identifier")
        data, metadata = {}, {}
        if self.started and self.stopped_threads and "frameId" in arguments:
            reply = self.client.request("evaluate", {
                "expression": f"get_ipython().display_formatter.format({name})",
                "frameId": arguments["frameId"], "context": "clipboard"}, timeout=self.timeout)
            if reply.get("success"):
                try:
                    data, metadata = ast.literal_eval(reply["body"]["result"])
                except (ValueError, SyntaxError, TypeError, KeyError):
                    data, metadata = {}, {}
        else:
            result = self.shell.user_expressions({name: name})[name]
            if result.get("status") == "ok":
                data, metadata = result.get("data", {}), result.get("metadata", {})
        return response(request, body={"data": data,
                                       "metadata": {k: v for k, v in metadata.items() if k in data}})

    def do_copyToGlobals(self, request: dict) -> dict:
        arguments = request.get("arguments") or {}
        dst, src = arguments.get("dstVariableName"), arguments.get("srcVariableName")
        if not (isinstance(dst, str) and dst.isidentifier() and isinstance(src, str) and src.isidentifier()):
            return response(request, False,
                            message="dstVariableName and srcVariableName must be valid identifiers")
        if not (self.started and self.stopped_threads):
            return response(request, False, message="copyToGlobals needs a stopped thread")
        return self.forward(request, {"expression": f"globals()[{dst!r}]", "value": src,
                                      "frameId": arguments.get("srcFrameId")}, command="setExpression")

    # ------------------------------------------------------------------ events

    def on_event(self, event: dict) -> None:
        """Reader thread: note stopped/continued threads, then publish the event on iopub."""
        body = event.get("body") or {}
        kind = event.get("event")
        if kind == "stopped" and self.interrupting and self.client is not None:
            self.client.send("continue", {"threadId": body.get("threadId")})  # the interrupt goes first
            return
        if kind == "stopped" and "threadId" in body:
            self.stopped_threads.add(body["threadId"])
        elif kind == "continued":
            if body.get("allThreadsContinued", True):
                self.stopped_threads.clear()
            else:
                self.stopped_threads.discard(body.get("threadId"))
        self.publisher.publish("debug_event", event)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start pydevd's DAP server in this process (once) and connect to it."""
        debugpy = import_debugpy()
        self.debugpy_dir = os.path.dirname(os.path.abspath(debugpy.__file__))
        hide_kernel_threads()
        if self.address is None:
            self.address = tuple(debugpy.listen(("127.0.0.1", 0), in_process_debug_adapter=True))
        os.makedirs(cellfile.tmp_directory(), mode=0o700, exist_ok=True)
        self.client = DAPClient(*self.address, on_event=self.on_event, timeout=self.timeout)
        # breakpoints name lines of the cell as typed: keep IPython from dropping its leading blank lines
        from IPython.core.inputtransformer2 import leading_empty_lines

        transforms = self.shell.input_transformer_manager.cleanup_transforms
        if leading_empty_lines in transforms:
            transforms.remove(leading_empty_lines)
            self._removed_transforms.append(leading_empty_lines)
        install_breakpointhook()
        self.started = True

    def stop(self) -> None:
        """Disconnect from debugpy (it keeps listening for the next initialize)."""
        self.started = False
        if self.client is not None:
            self.client.close()
            self.client = None
        transforms = self.shell.input_transformer_manager.cleanup_transforms
        while self._removed_transforms:
            transforms.insert(0, self._removed_transforms.pop())
        self.breakpoints.clear()
        self.stopped_threads.clear()

    def in_debugger(self, frame) -> bool:
        """Main thread, SIGINT handler: whether it interrupted the debugger's own code (a cell stopped
        at a breakpoint waits in there). A KeyboardInterrupt raised there would escape pydevd's trace
        function, which makes Python drop debugging on the thread."""
        if not self.debugpy_dir:
            return False
        while frame is not None:  # it may wait in threading.py, called by pydevd
            if frame.f_code.co_filename.startswith(self.debugpy_dir):
                return True
            frame = frame.f_back
        return False

    def resume_for_interrupt(self, retry) -> None:
        """Main thread, SIGINT handler: let a stopped cell run on so the interrupt can land in it.
        Only sends (never waits: the control thread may hold the connection's lock, never the other
        way round); stops until the cell ends are resumed at once (on_event)."""
        self.interrupting = True
        if self.client is not None and self.stopped_threads:
            try:
                self.client.send("continue", {"threadId": next(iter(self.stopped_threads))})
            except DAPError:
                pass
        timer = hide_thread(threading.Timer(0.002, retry))
        timer.start()

    def on_cell_error(self, exc_info) -> None:
        """Main thread, an exception escaped a cell: IPython caught it, so pydevd never sees it as
        uncaught; hand it over so the "uncaught" exception breakpoint stops on it."""
        etype, value, tb = exc_info
        self.interrupting = False
        if (not self.started or tb is None or etype is None or issubclass(etype, KeyboardInterrupt)
                or threading.current_thread() is not threading.main_thread()):
            return
        frame_tb = tb
        while frame_tb is not None and not cellfile.is_cell_file(frame_tb.tb_frame.f_code.co_filename):
            frame_tb = frame_tb.tb_next
        if frame_tb is None:
            return  # not raised by a cell's code (e.g. a syntax error)
        import debugpy

        try:
            debugpy.trigger_exception_handler((etype, value, tb))
        except Exception:
            log.exception("could not report an exception to the debugger")

    def before_cell(self) -> None:
        """Main thread, before a cell: make sure it is traced (in settrace mode an interrupt at a stop
        can untrace the thread; sys.monitoring is per interpreter and stays on)."""
        self.interrupting = False
        if (self.started and not uses_sys_monitoring() and sys.gettrace() is None
                and threading.current_thread() is threading.main_thread()):
            import pydevd

            pydevd.settrace(suspend=False, patch_multiprocessing=False)

    def explorer(self):
        if self._explorer is None:
            from ipymini.debugging.varexplorer import VariableExplorer

            self._explorer = VariableExplorer(self.shell.user_ns, visible_name)
        return self._explorer

    def close(self) -> None:
        """Kernel shutdown: disconnect and remove the cell files."""
        if self.client is not None:
            self.stop()
        import shutil

        shutil.rmtree(cellfile.tmp_directory(), ignore_errors=True)


def uses_sys_monitoring() -> bool:
    """Whether the imported pydevd traces with sys.monitoring (PEP 669) rather than settrace."""
    from _pydevd_bundle.pydevd_constants import PYDEVD_USE_SYS_MONITORING

    return bool(PYDEVD_USE_SYS_MONITORING)


def hide_kernel_threads() -> None:
    """Mark the kernel's threads so pydevd neither traces nor lists them."""
    for thread in threading.enumerate():
        if is_kernel_thread(thread.name):
            hide_thread(thread)
    # pyzmq's garbage collector thread (zero-copy sends) starts on first use: start it now to hide it
    from zmq.utils.garbage import gc as zmq_gc

    if not zmq_gc.is_alive():
        zmq_gc.start()
    hide_thread(zmq_gc.thread)


def forget_ended_dummy_threads() -> None:
    """Drop the `threading._DummyThread` entries of threads that have ended, so they are not listed.

    pydevd's sys.monitoring callbacks (3.12+) call `threading.current_thread()` in every thread, also
    in a thread's last moments, after threading has removed it from its table (the kernel's debugpy
    reader when a debug session ends): that makes a "Dummy-N" which nothing removes on 3.12, and the
    debugger listed it among the user's threads (seen in CI on 3.12)."""
    alive = sys._current_frames()
    active = threading._active  # (threading's own table: read and pruned, never replaced)
    for ident, thread in list(active.items()):
        if isinstance(thread, threading._DummyThread) and ident not in alive:
            active.pop(ident, None)


def is_kernel_thread(name: str) -> bool:
    return name.startswith("ipymini-") or name == "IPythonHistorySavingThread"


def install_breakpointhook() -> None:
    """`breakpoint()` in a cell stops in the attached debugger; with none attached it does what it
    did before (pdb, or PYTHONBREAKPOINT)."""
    previous = sys.breakpointhook
    if getattr(previous, "_ipymini", False):
        return

    def hook(*args, **kwargs):
        import pydevd

        if os.environ.get("PYTHONBREAKPOINT") or not pydevd._is_attached():
            return previous(*args, **kwargs)
        pydevd.settrace(suspend=True, trace_only_current_thread=True, patch_multiprocessing=False,
                        stop_at_frame=sys._getframe(1))

    hook._ipymini = True
    patches.patch(sys, "breakpointhook", hook)
