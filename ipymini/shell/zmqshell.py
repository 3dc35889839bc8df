"""IPython's extension points, filled in for a kernel.

IPython asks for subclasses here (its display hook, display publisher and shell are configurable
classes), so these are thin IPython subclasses, not ipymini classes: each override turns one IPython
side effect into a kernel message through the Publisher it is given (output/publisher.py) and its
payloads. `shell.kernel` is only what user code sees as `get_ipython().kernel`; ipymini never uses it.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from dataclasses import dataclass

from IPython.core.autocall import ExitAutocall
from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.compilerop import CachingCompiler
from IPython.core.display_trap import DisplayTrap
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.events import EventManager
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.payload import PayloadManager
from traitlets import Any, Type

from ipymini import patches
from ipymini.debugging.cellfile import cell_filename
from ipymini.kernelcode import KERNEL_DIR, calls_user_code
from ipymini.output import routing
from ipymini.shell import tracebacks
from ipymini.shell.formatting import DisplayFormatter


@dataclass
class RunningCell:
    """What the IPython side knows of how the cell it runs is run (it never sees the worker): a
    subshell's own execution count (None on the parent shell, whose count and history are IPython's),
    and whether an interrupt cancelled the cell while it awaited (its worker sets it)."""

    own_count: int | None = None
    interrupted: bool = False


# the cell running in this context (its thread, the task it awaits): set by the bridge around it
running_cell: contextvars.ContextVar = contextvars.ContextVar("ipymini_cell", default=None)


def _subshell_count():
    """The execution count of the cell running on a subshell, or None on the parent shell."""
    cell = running_cell.get()
    return cell.own_count if cell is not None else None


class KernelDisplayHook(DisplayHook):
    """Sends the value of a cell's last expression as `execute_result`."""

    _local = threading.local()  # the result being built, per thread (subshells run concurrently)

    def start_displayhook(self):
        self._local.result = {"data": {}, "metadata": {}}

    def write_output_prompt(self):
        count = _subshell_count()
        count = self.prompt_count if count is None else count
        self._local.result["execution_count"] = count

    def update_user_ns(self, result):
        if _subshell_count() is None:  # subshells leave the parent's Out, _ and _N alone
            out = self.shell.user_ns.get("_oh")
            before = len(out) if isinstance(out, dict) else None
            super().update_user_ns(result)
            if before is not None and len(out) <= before:  # IPython culled its output cache
                self._forget_culled_results(out)

    def _forget_culled_results(self, out):
        """IPython's cull drops old `_N` from the namespace but not from `user_ns_hidden`, which so
        kept every result of the session alive (~1 KB a cell for a 100-item list)."""
        hidden = self.shell.user_ns_hidden
        for name in [n for n in hidden if n[:1] == "_" and n[1:].isdigit() and int(n[1:]) not in out]:
            del hidden[name]

    def log_output(self, format_dict):
        if _subshell_count() is None:
            super().log_output(format_dict)
            self._forget_old_outputs()

    def _forget_old_outputs(self):
        """IPython keeps every result's format data (for `%notebook`, `%history -o`) for the whole
        session, ~1 KB a cell that grew without bound; keep the last `cache_size` cells', as `Out`."""
        hm = self.shell.history_manager
        oldest = self.prompt_count - (self.cache_size or 1000)
        for store in (hm.outputs, hm.output_hist_reprs):
            while store:
                first = next(iter(store))
                if first > oldest:
                    break
                del store[first]

    def write_format_data(self, format_dict, md_dict=None):
        self._local.result["data"] = format_dict
        self._local.result["metadata"] = md_dict or {}

    def finish_displayhook(self):
        result = getattr(self._local, "result", None)
        self._local.result = None
        if result and result["data"]:
            self.shell.publisher.publish("execute_result", result)


class ZMQDisplayPublisher(DisplayPublisher):
    """Sends `display()` calls as `display_data` / `update_display_data`, and `clear_output`.

    Hooks (used by output-capturing widgets) see each message first and may swallow it by returning None.
    Named (and configured, `c.ZMQDisplayPublisher`) as ipykernel's is.
    """

    topic = b"display_data"  # ipykernel's attribute; ipymini topics messages by their type

    @property
    def parent_header(self) -> dict:
        """The header of the request the calling code's displays go to."""
        return routing.get_parent().get("header", {})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hooks = []

    def register_hook(self, hook):
        self._hooks.append(hook)

    def unregister_hook(self, hook):
        try:
            self._hooks.remove(hook)
            return True
        except ValueError:
            return False

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
        content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
        self._send("update_display_data" if update else "display_data", content)

    def clear_output(self, wait=False):
        self._send("clear_output", {"wait": bool(wait)})

    def _send(self, msg_type, content):
        publisher = self.shell.publisher
        if self._hooks:
            msg = publisher.message(msg_type, content)
            for hook in list(self._hooks):
                msg = hook(msg)
                if msg is None:
                    return
            publisher.publish_msg(msg)
        else:
            publisher.publish(msg_type, content)


def _drop_kernel_frames(tb) -> None:
    """Cut the kernel's own frames off the end of an interrupt's traceback: the kernel's SIGINT
    handler (or input()) raised it for the user's code, which is where the traceback should end."""
    last_user = None
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(KERNEL_DIR):
            last_user = tb
        tb = tb.tb_next
    if last_user is not None:
        last_user.tb_next = None


class _Permanent:
    """A trap already installed for good: entering and leaving it around a cell does nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


class _PermanentBuiltinTrap(_Permanent, BuiltinTrap):
    pass


class _PermanentDisplayTrap(_Permanent, DisplayTrap):
    pass


class KernelPayloadManager(PayloadManager):
    """Payloads (pager text, set_next_input, ask_exit) kept per thread: subshells run concurrently."""

    _local = threading.local()

    @property
    def _payload(self):
        payload = getattr(self._local, "payload", None)
        if payload is None:
            payload = self._local.payload = []
        return payload

    @_payload.setter
    def _payload(self, value):
        self._local.payload = value


class KernelExitAutocall(ExitAutocall):
    """`exit` / `quit`: ask the frontend to close; `exit(keep_kernel=True)` keeps the kernel."""

    def __call__(self, keep_kernel=False):
        self._ip.ask_exit(keep_kernel)


class CellCompiler(CachingCompiler):
    """Compiles each cell under the file name a debugger frontend computes for it (cellfile.py)."""

    def get_code_name(self, raw_code, transformed_code, number):
        return cell_filename(raw_code)


class KernelEventManager(EventManager):
    """IPython's event callbacks (pre_execute, post_run_cell, ...), where an interrupt stops the cell.

    IPython catches KeyboardInterrupt in a callback, prints "Error in callback" and goes on with the
    cell: an interrupt that lands in a slow hook (or in the few instructions of IPython's own before
    each cell) would be lost, and the cell it was meant to stop would run. ipykernel 7.4 loses it so.
    Here it propagates, and the cell ends in KeyboardInterrupt. Other errors are shown as IPython shows
    them, and the cell goes on."""

    @calls_user_code  # the callbacks are user code (an interrupt may land there)
    def trigger(self, event: str, *args, **kwargs) -> None:
        for callback in list(self.callbacks[event]):
            try:
                callback(*args, **kwargs)
            except Exception:
                if self.print_on_error:
                    print(f"Error in callback {callback} (for {event}), with arguments args {args},"
                          f"kwargs {kwargs}:")
                self.shell.showtraceback()


class ZMQInteractiveShell(InteractiveShell):
    """The InteractiveShell a kernel runs: errors, payloads and exits become messages.

    Named as ipykernel's shell is, because libraries decide "am I in a notebook?" by
    `type(get_ipython()).__name__ == "ZMQInteractiveShell"` (rich, plotly and many others), and user
    configuration addresses it as `c.ZMQInteractiveShell`. It is ipymini's own class all the same.
    """

    displayhook_class = Type(KernelDisplayHook)
    display_pub_class = Type(ZMQDisplayPublisher)
    compiler_class = Type(CellCompiler)
    exiter = Any()
    kernel = Any(allow_none=True)  # `get_ipython().kernel`, which widget libraries look for
    publisher = Any(allow_none=True)  # output/publisher.Publisher: how results and errors are sent
    interrupt_count = Any(lambda: 0)  # () -> how many interrupts the kernel has delivered so far
    # the kernel's Debugger once a frontend started one (not `debugger`: that is IPython's %debug method)
    kernel_debugger = Any(allow_none=True)
    gui_loops = Any(allow_none=True)  # gui/loops.GuiLoops: the GUI event loop enable_gui switches

    _thread_state = threading.local()

    # ipykernel's API for choosing where output goes (ipywidgets' Output widget uses it): see routing
    def get_parent(self) -> dict:
        """The request message the calling code's output goes to."""
        return routing.get_parent()

    def set_parent(self, parent) -> None:
        """Send the calling thread's output (and that of threads with no request) to `parent`."""
        routing.set_parent(parent)

    def set_thread_parent(self, parent):
        """Send the calling thread's output to `parent`; returns a token for reset_thread_parent."""
        return routing.set_thread_parent(parent)

    def reset_thread_parent(self, token) -> None:
        routing.reset_thread_parent(token)

    @property
    def parent_header(self) -> dict:
        return self.get_parent()

    def _exiter_default(self):
        return KernelExitAutocall(self)

    def init_display_formatter(self):
        self.display_formatter = DisplayFormatter(parent=self)  # shell/formatting.py
        self.configurables.append(self.display_formatter)

    def init_payload(self):
        self.payload_manager = KernelPayloadManager(parent=self)
        self.configurables.append(self.payload_manager)

    @property
    def failed_without_raising(self) -> bool:
        """Whether the cell running on this thread failed though its code raised nothing: formatting
        its result raised (ipykernel fails such a cell too), or a transaction it ran failed."""
        return getattr(self._thread_state, "failed_without_raising", False)

    @failed_without_raising.setter
    def failed_without_raising(self, value: bool):
        self._thread_state.failed_without_raising = value

    @property
    def last_error(self):
        """The error shown by the cell running on this thread (None if it succeeded so far)."""
        return getattr(self._thread_state, "last_error", None)

    @last_error.setter
    def last_error(self, value):
        self._thread_state.last_error = value

    def make_thread_safe(self) -> None:
        """Install the builtins and display hook once for the kernel's lifetime.

        IPython swaps them in and out around each cell with nesting counters, which breaks when
        subshells run cells on several threads at once.
        """
        self.builtin_trap.activate()
        patches.patch(sys, "displayhook", self.displayhook)
        self.builtin_trap = _PermanentBuiltinTrap(shell=self)
        self.display_trap = _PermanentDisplayTrap(hook=self.displayhook)

    def init_io(self):
        pass  # the kernel installs sys.stdout / sys.stderr itself

    def init_events(self):
        super().init_events()
        events = KernelEventManager(self, self.events.callbacks.keys())
        events.callbacks = self.events.callbacks  # what IPython registered (its pre_execute hook)
        events.print_on_error = self.events.print_on_error
        self.events = events

    def _clear_warning_registry(self):
        # IPython's pre_execute hook tests for the key, then deletes it: two subshells starting cells at
        # once (truly at once without the GIL) both pass the test, and one fails with KeyError,
        # printed into its cell's output
        self.user_global_ns.pop("__warningregistry__", None)

    def init_environment(self):
        import os

        # as ipykernel sets them: colored `ls`, color from tools that honor FORCE_COLOR, and no pagers
        # in subprocesses (nothing could answer them)
        os.environ.update(TERM="xterm-color", CLICOLOR="1", FORCE_COLOR="1", CLICOLOR_FORCE="1",
                          PAGER="cat", GIT_PAGER="cat")

    def enable_gui(self, gui=None):
        """`%gui NAME`, `%matplotlib tk|qt|...`: enter (or with None, leave) a GUI event loop."""
        if self.gui_loops is None:
            return
        try:
            self.gui_loops.enable(gui)
        except ValueError as e:  # an unknown name: %gui prints the message, as in ipykernel
            raise UsageError(str(e)) from e
        self.active_eventloop = gui

    def ask_exit(self, keep_kernel=False):
        self.exit_now = not keep_kernel
        self.payload_manager.write_payload({"source": "ask_exit", "keepkernel": keep_kernel})

    def set_next_input(self, text, replace=False):
        payloads = self.payload_manager._payload  # the last set_next_input of a cell wins
        payloads[:] = [p for p in payloads if p.get("source") != "set_next_input"]
        self.payload_manager.write_payload(
            {"source": "set_next_input", "text": text, "replace": replace})

    @calls_user_code  # the interrupt must reach IPython's wait for the command
    def system_piped(self, cmd):
        """`!cmd`: IPython stops the command on an interrupt and carries on; the kernel ends the cell."""
        before = self.interrupt_count()
        super().system_piped(cmd)
        if self.interrupt_count() != before:
            raise KeyboardInterrupt

    system = system_piped

    def showtraceback(self, exc_tuple=None, *args, **kwargs):
        etype = sys.exc_info()[0] if exc_tuple is None else exc_tuple[0]
        cell = running_cell.get()
        if etype is asyncio.CancelledError and cell is not None and cell.interrupted:
            # an awaiting cell cancelled by an interrupt reports the KeyboardInterrupt the user asked for
            tb = (sys.exc_info() if exc_tuple is None else exc_tuple)[2]
            exc_tuple = (KeyboardInterrupt, KeyboardInterrupt(), tb)
        debugger = self.kernel_debugger
        if debugger is not None:
            debugger.on_cell_error(sys.exc_info() if exc_tuple is None else exc_tuple)
        if etype is not None and issubclass(etype, MemoryError) and self.memory_guard is not None:
            self.memory_guard.describe((sys.exc_info() if exc_tuple is None else exc_tuple)[1])
        if etype is not None and issubclass(etype, (KeyboardInterrupt, MemoryError)):
            _drop_kernel_frames((sys.exc_info() if exc_tuple is None else exc_tuple)[2])
        tracebacks.install_caches()  # before the first traceback, should it come before the warm-up
        return super().showtraceback(exc_tuple, *args, **kwargs)

    memory_guard = None  # memory/MemoryGuard: says in a MemoryError what the guard saw (bridge.py)
    keepkernel_on_exit = None  # ipykernel's attribute (exit(keep_kernel=...) is passed per call here)
    _last_traceback = None  # the last traceback shown, as ipykernel keeps it
    traceback_filters = ()  # functions stb -> stb every traceback shown passes (namespace/transactions.py)

    def _showtraceback(self, etype, evalue, stb):
        for change in self.traceback_filters:
            stb = change(stb)
        self._last_traceback = stb
        if getattr(KernelDisplayHook._local, "result", None) is not None:
            self.failed_without_raising = True  # a formatter raised while the cell's result was built
        self.last_error = {"ename": getattr(etype, "__name__", str(etype)), "evalue": str(evalue),
                           "traceback": stb}
        self.publisher.publish("error", dict(self.last_error))
