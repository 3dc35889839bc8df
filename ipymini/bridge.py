"""The IPython bridge: everything Python-specific the kernel asks of IPython.

The kernel speaks the Jupyter protocol; this module speaks IPython. It builds the shell from IPython's
configuration (profile config files, startup files, extensions, `--Class.trait=value` options) and turns
request content into IPython calls and IPython results into reply content: execution, completion,
inspection, is_complete, history and kernel_info's language_info.

The bridge never holds the kernel: it is given `KernelServices`, the few things it needs from the
protocol side (a publisher, a way to ask for input, the subshell ids, the interrupt count), and runs each
cell for a `CellTracker` that records whether the cell computes or awaits (for interrupts).
Must not import: ipymini.kernel.
"""

from __future__ import annotations

import asyncio
import builtins
import getpass
import inspect
import os
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from IPython.core import page, payloadpage
from IPython.core.async_helpers import _pseudo_sync_runner

from ipymini import patches
from ipymini.kernelcode import calls_user_code
from ipymini.scheduling.cell_asyncio import sync_cell
from ipymini.shell import tracebacks
from ipymini.shell.completion import Completer
from ipymini.shell.ipykernel_api import language_info, present_as_ipykernel
from ipymini.shell.zmqshell import RunningCell, ZMQInteractiveShell, running_cell

HISTORY_DELAY = 0.5  # seconds: the most a cell's history waits before it is written to disk
WARM_UP_DELAY = 0.1  # seconds after start-up before the traceback formatter is warmed (tracebacks.py)


@dataclass
class KernelServices:
    """What the bridge and its shell get from the kernel, instead of the kernel."""

    publisher: object  # output/publisher.Publisher: results, errors and displays go out through it
    request_input: Callable[[str, bool], str]  # (prompt, password) -> the client's answer
    subshell_ids: Callable[[], list]  # the running subshells' ids (for %subshell)
    interrupt_count: Callable[[], int]  # interrupts delivered so far (`!cmd` ends the cell on one)
    # what user code sees as `get_ipython().kernel` (shell/ipykernel_api.py); ipymini never uses it
    ipykernel_api: object
    memory: object = None  # memory/MemoryGuard: describes a cell's MemoryError, gives its memory back
    gui_loops: object = None  # gui/loops.GuiLoops: what `%gui` / `%matplotlib tk|qt` switch


class CellTracker(Protocol):
    """Where the running cell is, for interrupts: computing on its thread, or awaiting as a task
    (scheduling/workers.ShellWorker implements it)."""

    def computing(self): ...  # a context manager around a cell that runs synchronously

    def awaiting(self, task: asyncio.Task, cell: RunningCell): ...  # around awaiting the cell's task


def install_magics(shell, app, subshell_ids) -> None:
    """ipykernel's kernel magics (kernel_magics.py), %rollback / %%transaction (transactions.py) and
    %checkpoint (checkpoints.py)."""
    from ipymini.namespace import checkpoints, transactions
    from ipymini.shell import kernel_magics

    kernel_magics.install(shell, app.connection_file, subshell_ids)
    transactions.install(shell)
    checkpoints.install(shell)


class Bridge:
    """Owns the IPython shell and answers the kernel's Python questions."""

    def __init__(self, app, services: KernelServices):
        self.app = app
        self.services = services
        self.debugger = None  # set by attach_debugger
        present_as_ipykernel(ZMQInteractiveShell)
        shell = ZMQInteractiveShell.instance(parent=app, profile_dir=app.profile_dir,
                                             kernel=services.ipykernel_api,
                                             publisher=services.publisher,
                                             interrupt_count=services.interrupt_count,
                                             gui_loops=services.gui_loops)
        app.shell = shell
        self.shell = shell
        shell.memory_guard = services.memory
        if "IPKernelApp" not in shell.config:  # what tqdm.auto & co. look for (see app.IPKernelApp)
            shell.config.IPKernelApp.connection_file = app.connection_file
        shell.configurables.append(app)  # `%config IPKernelApp`, as in ipykernel
        # some libraries read these (ipykernel's names; see shell/ipykernel_api.py)
        shell.display_pub.session = services.ipykernel_api.session
        shell.display_pub.pub_socket = services.ipykernel_api.iopub_socket
        shell.set_hook("show_in_pager", page.as_hook(payloadpage.page), 99)
        shell.make_thread_safe()
        run_params = inspect.signature(shell.run_cell_async).parameters
        self._run_kwargs = {k for k in ("cell_id", "cell_meta") if k in run_params}
        self._history = None  # the HistoryManager whose writes we batch (see _defer_history_writes)
        self._history_timer = None
        self._install_input()
        install_magics(shell, app, services.subshell_ids)
        self.completer = Completer(shell)

    def start(self) -> None:
        """Run what IPython's configuration asks for at startup (after the kernel can publish)."""
        app = self.app
        # matplotlib's default backend becomes inline, as in ipykernel; only an environment variable
        # here, so nothing is imported until the user imports matplotlib
        if not os.environ.get("MPLBACKEND"):
            os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        app.init_path()
        app.init_gui_pylab()
        app.init_extensions()
        app.init_code()
        self._defer_history_writes()
        # on the main loop, once it is idle: a thread doing it raced user code in pygments' lazy
        # lexer imports and could hold the import lock across a user's fork
        asyncio.get_event_loop().call_later(WARM_UP_DELAY, tracebacks.warm_up, self.shell)

    def _defer_history_writes(self) -> None:
        """Write history in batches, at most HISTORY_DELAY seconds after a cell.

        IPython's saving thread writes to SQLite as soon as a cell is stored (db_cache_size 0) and
        holds the cache lock through the commit, so the next cell waits for the disk: ~1.3 ms on every
        round trip on this machine. Here the write is triggered by a timer that `after_request` arms,
        so a burst of cells costs one write. A configured db_cache_size is left alone.
        """
        hm = self.shell.history_manager
        if hm is None or not hm.enabled or not hm.using_thread:
            return
        if "db_cache_size" in self.app.config.get("HistoryManager", {}):
            return
        hm.db_cache_size = 1 << 30
        self._history = hm

    def after_request(self) -> None:
        """Called when a request is complete: make sure its history is written soon."""
        hm = self._history
        if hm is None or self._history_timer is not None:
            return
        if hm.db_input_cache or hm.db_output_cache:
            def write():
                self._history_timer = None
                flag = hm.save_flag
                if flag is not None:
                    flag.set()

            timer = threading.Timer(HISTORY_DELAY, write)
            timer.daemon = True
            self._history_timer = timer
            timer.start()

    # -- execution --

    async def execute(self, code: str, silent: bool, store_history: bool, tracker: CellTracker,
                      cell: RunningCell, cell_id=None, cell_meta=None) -> dict:
        """Run one cell; returns the reply content's status part (status, and the error when it failed)."""
        token = running_cell.set(cell)  # (before the task is made: it copies the context)
        try:
            return await self._execute(code, silent, store_history, tracker, cell, cell_id, cell_meta)
        finally:
            running_cell.reset(token)

    @calls_user_code  # an interrupt may land in the cell, never in this function itself
    async def _execute(self, code, silent, store_history, tracker, cell, cell_id, cell_meta) -> dict:
        shell = self.shell
        shell.last_error = None
        shell.failed_without_raising = False
        if self.debugger is not None:
            self.debugger.before_cell()
        try:
            transformed = shell.transform_cell(code)
            preprocessing_exc = None
        except Exception:
            transformed, preprocessing_exc = code, sys.exc_info()
        kwargs = {}
        if "cell_id" in self._run_kwargs:
            kwargs["cell_id"] = cell_id
        if "cell_meta" in self._run_kwargs:
            kwargs["cell_meta"] = cell_meta
        coro = shell.run_cell_async(code, store_history=store_history, silent=silent,
                                    transformed_cell=transformed,
                                    preprocessing_exc_tuple=preprocessing_exc, **kwargs)
        result = escaped = None
        try:
            # top-level await needs one of these words: skip IPython's second tokenize without them
            maybe_async = "await" in transformed or "async" in transformed
            if maybe_async and shell.should_run_async(code, transformed_cell=transformed,
                                      preprocessing_exc_tuple=preprocessing_exc):
                task = asyncio.ensure_future(coro)
                with tracker.awaiting(task, cell):
                    result = await task
            else:
                # IPython's run_cell would also tee every stdout write into history_manager.outputs:
                # a per-write cost and unbounded memory under floods. Stepping the coroutine avoids it.
                with tracker.computing(), sync_cell():
                    result = _pseudo_sync_runner(coro)
        except BaseException as e:
            escaped = e
            try:
                shell.showtraceback(running_compiled_code=True)
            except BaseException:  # as in IPython's run_cell: with %pdb on and no stdin, showing it
                pass  # enters pdb, which raises StdinNotImplementedError again (already shown)
        finally:
            cell_error = shell.last_error
            # a traceback shown by the cell itself (showtraceback() in an except block) is output;
            # the cell failed only if its code raised, or formatting its result did (as in ipykernel)
            failed = (escaped is not None or result is None or not result.success
                      or shell.failed_without_raising)
            # a failing post-execute hook is shown as an error output, but the cell itself succeeded
            for event, args in (("post_execute", ()), ("post_run_cell", (result,))):
                if event == "post_run_cell" and silent:
                    continue
                try:
                    shell.events.trigger(event, *args)
                except Exception:
                    shell.showtraceback()
        if not failed:
            return {"status": "ok"}
        error_in_exec = result.error_in_exec if result is not None else None
        if isinstance(error_in_exec, MemoryError) and self.services.memory is not None:
            self._drop_what_the_failed_cell_left(result)
            still_high = self.services.memory.after_memory_error(error_in_exec)
            if still_high:
                sys.stderr.write(still_high)
        error = cell_error
        if error is None:  # failed without a traceback being shown (should not happen)
            err = result.error_before_exec or result.error_in_exec if result is not None else escaped
            error = {"ename": type(err).__name__, "evalue": str(err), "traceback": []}
        return {"status": "error", **error}

    def _drop_what_the_failed_cell_left(self, result) -> None:
        """After a MemoryError: IPython's own references to what the cell made go (its formatter's
        last traceback; a result it displayed before failing, with ast_node_interactivity 'all', in
        Out, _, __, ___ and the execution result), so the memory guard can give the memory back."""
        shell = self.shell
        shell.InteractiveTB.tb = None
        result.result = None
        count = result.execution_count
        out = shell.user_ns.get("Out")
        if count is None or not isinstance(out, dict) or count not in out:
            return
        shown = out.pop(count)
        for names in (shell.user_ns, shell.user_ns_hidden, shell.displayhook.__dict__):
            for name in ("_", "__", "___", f"_{count}"):
                if names.get(name) is shown:
                    names[name] = ""

    def user_expressions(self, expressions: dict) -> dict:
        return self.shell.user_expressions(expressions or {})

    def take_payloads(self) -> list:
        """The cell's payloads (pager text, set_next_input, ask_exit), cleared for the next cell."""
        pm = self.shell.payload_manager
        payloads = pm.read_payload()
        pm.clear_payload()
        # `exit` asks the frontend to close the kernel (its ask_exit payload); the shell must not stop
        self.shell.exit_now = False
        return payloads

    def attach_debugger(self, debugger) -> None:
        """The debugger a frontend started: told before each cell and on each cell's error."""
        self.debugger = debugger
        self.shell.kernel_debugger = debugger

    # -- shell services --

    def complete(self, code: str, cursor_pos: int | None) -> dict:
        """complete_reply content (see completion.py)."""
        return self.completer.complete(code, cursor_pos)

    def inspect(self, code: str, cursor_pos: int, detail_level: int, omit_sections=()) -> dict:
        """inspect_reply content: IPython's object info for the name at the cursor."""
        from IPython.utils.tokenutil import token_at_cursor

        name = token_at_cursor(code, cursor_pos)
        try:
            bundle = self.shell.object_inspect_mime(name, detail_level=detail_level,
                                                    omit_sections=set(omit_sections or ()))
        except KeyError:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}
        if not self.shell.enable_html_pager:
            bundle.pop("text/html", None)
        return {"status": "ok", "found": True, "data": bundle, "metadata": {}}

    def is_complete(self, code: str) -> dict:
        """is_complete_reply content from IPython's input transformer."""
        status, indent = self.shell.input_transformer_manager.check_complete(code)
        reply = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    # -- stdin --

    def _install_input(self) -> None:
        request_input = self.services.request_input

        def input(prompt=""):
            return request_input(str(prompt), False)

        def getpass_(prompt="Password: ", stream=None):
            return request_input(str(prompt), True)

        patches.patch(builtins, "input", input)
        patches.patch(getpass, "getpass", getpass_)

    def shutdown(self) -> None:
        """Let IPython save history and run its exit hooks."""
        import atexit

        atexit.unregister(self.shell.atexit_operations)
        try:
            self.shell.atexit_operations()
        except Exception:
            pass


HELP_LINKS = [  # ipykernel's list
    {"text": "Python Reference", "url": "https://docs.python.org/%d.%d" % sys.version_info[:2]},
    {"text": "IPython Reference", "url": "https://ipython.readthedocs.io/en/stable/"},
    {"text": "NumPy Reference", "url": "https://docs.scipy.org/doc/numpy/reference/"},
    {"text": "SciPy Reference", "url": "https://docs.scipy.org/doc/scipy/reference/"},
    {"text": "Matplotlib Reference", "url": "https://matplotlib.org/contents.html"},
    {"text": "SymPy Reference", "url": "http://docs.sympy.org/latest/index.html"},
    {"text": "pandas Reference", "url": "https://pandas.pydata.org/pandas-docs/stable/"},
]


def kernel_info(debugger: bool) -> dict:
    """kernel_info_reply content."""
    import IPython

    from ipymini import __version__
    from ipymini.protocol import PROTOCOL_VERSION

    return {
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "ipymini",
        "implementation_version": __version__,
        "language_info": language_info(),
        "banner": f"Python {sys.version}\nIPython {IPython.__version__} (ipymini {__version__}) "
                  "-- An enhanced Interactive Python. Type '?' for help.\n",
        "help_links": HELP_LINKS,
        "debugger": debugger,
        "supported_features": ["kernel subshells"] + (["debugger"] if debugger else []),
    }
