"""GUI event loops through the real kernel: `%gui tk|qt|asyncio`, `%matplotlib tk|qt` (issue 26).

Tk runs on an Xvfb display the module starts (Debian's `xvfb`; installed with apt-get when missing, as
.ci/run does); Qt is PySide6 from the test extra on Qt's offscreen platform (matplotlib still wants
$DISPLAY before it loads a GUI backend, so Qt kernels get the Xvfb display too). One kernel per
toolkit; each test enables the loop and opens the windows it needs (`with_window`).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time

import pytest

from harness import KernelHarness, of_type, stream_text, value

DEADLINE = 20  # seconds any one expected event may take on a loaded machine


@pytest.fixture(scope="module")
def display():
    """An Xvfb display of our own (`-displayfd`: the server picks a free number)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "xvfb"]):
            subprocess.run(cmd, env=env, capture_output=True, timeout=900)
        xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.fail("Xvfb is missing (Debian's xvfb package; .ci/run installs it)")
    r, w = os.pipe()
    proc = subprocess.Popen([xvfb, "-displayfd", str(w), "-nolisten", "tcp", "-screen", "0", "800x600x24"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 30)
        number = os.read(r, 64).decode().strip() if ready else ""
        assert number.isdigit(), f"Xvfb did not report a display within 30 s ({proc.poll()=})"
        yield f":{number}"
    finally:
        os.close(r)
        proc.terminate()
        proc.wait(10)


def gui_kernel(display, **env) -> KernelHarness:
    return KernelHarness(env={"DISPLAY": display, "QT_QPA_PLATFORM": "offscreen", **env})


def needs(toolkit: str) -> None:
    """Skip, saying why, where this interpreter has no binding for the toolkit (a Python built
    without Tk's headers has no _tkinter)."""
    module = {"tk": "tkinter", "qt": "PySide6"}[toolkit]
    pytest.importorskip(module, reason=f"this Python ({sys.version.split()[0]}) cannot import {module}")


@pytest.fixture(scope="module")
def tk_kernel(display):
    needs("tk")
    k = gui_kernel(display)
    yield k
    k.stop()


@pytest.fixture(scope="module")
def qt_kernel(display):
    needs("qt")
    k = gui_kernel(display)
    yield k
    k.stop()


DEBIAN_PACKAGES = "/usr/lib/python3/dist-packages"
DEBIAN_BINDINGS = {"wx": "python3-wxgtk4.0", "gi": "python3-gi gir1.2-gtk-3.0"}


@pytest.fixture(scope="module")
def debian_bindings(tmp_path_factory):
    """A directory holding only Debian's wxPython and PyGObject (installed with apt-get when missing,
    as .ci/run does), for a kernel's PYTHONPATH: neither has a wheel on PyPI for Linux. Debian builds
    them for its CPython 3.11, so under another version they cannot import: those tests skip then."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"Debian's wxPython and PyGObject are built for CPython 3.11, not {sys.version.split()[0]}")
    missing = [pkg for name, pkg in DEBIAN_BINDINGS.items() if not os.path.isdir(f"{DEBIAN_PACKAGES}/{name}")]
    if missing and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        *" ".join(missing).split()], env=env, capture_output=True, timeout=900)
    shim = tmp_path_factory.mktemp("debian-bindings")
    for name in DEBIAN_BINDINGS:
        assert os.path.isdir(f"{DEBIAN_PACKAGES}/{name}"), f"{name} missing: apt-get install {DEBIAN_BINDINGS[name]}"
        os.symlink(f"{DEBIAN_PACKAGES}/{name}", shim / name)
    return str(shim)


@pytest.fixture(scope="module")
def debian_kernel(display, debian_bindings):
    """A kernel that can import wx and gi (one at a time: each test leaves its loop)."""
    k = gui_kernel(display, PYTHONPATH=os.pathsep.join([debian_bindings, os.environ["PYTHONPATH"]]))
    yield k
    k.stop()


def wait_for_stream(kernel: KernelHarness, text: str, timeout: float = DEADLINE) -> dict:
    """The first stream message containing `text` (read from iopub, whoever it is parented to)."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=max(0.01, deadline - time.monotonic()))
        except Exception:
            break
        if msg["msg_type"] == "stream" and text in msg["content"]["text"]:
            return msg
        seen.append((msg["msg_type"], msg["content"].get("text", "")))
    raise AssertionError(f"no {text!r} on iopub within {timeout}s; saw {seen}")


def wait_until(kernel: KernelHarness, expr: str, timeout: float = DEADLINE) -> str:
    """Evaluate `expr` (user_expressions, each time a new request) until it is truthy; its repr."""
    deadline = time.monotonic() + timeout
    while True:
        result = value(kernel, f"({expr}) or ''")
        if result not in ("''", "False", "0", "[]"):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr} still {result} after {timeout}s")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stderr_text(msgs) -> str:
    return stream_text(msgs, "stderr")


WINDOWS = {  # a window of each toolkit, made once per kernel
    "tk": "import tkinter\nif 'root' not in globals():\n    root = tkinter.Tk()\n    root.title('ipymini-tk')",
    "qt": "from PySide6 import QtCore, QtWidgets\nif 'label' not in globals():\n"
          "    label = QtWidgets.QLabel('ipymini-qt')\n    label.show()",
    "wx": "import wx\nif 'frame' not in globals():\n    frame = wx.Frame(None, title='ipymini-wx')\n"
          "    frame.Show()",
    "gtk3": "import gi\ngi.require_version('Gtk', '3.0')\nfrom gi.repository import GLib, Gtk\n"
            "if 'window' not in globals():\n    window = Gtk.Window(title='ipymini-gtk')\n    window.show()",
}


def with_window(k: KernelHarness, toolkit: str, fresh: bool = False) -> str:
    """Enable the toolkit's loop (left first with `fresh`) and open its window; returns the msg_id
    of the cell that enabled the loop."""
    if fresh:
        k.run_ok("%gui")
    reply, msgs = k.execute(f"%gui {toolkit}")
    assert reply["content"]["status"] == "ok" and not of_type(msgs, "stream"), msgs
    k.run_ok(WINDOWS[toolkit])
    return reply["parent_header"]["msg_id"]


TIMERS = {  # a toolkit timer printing `text` 300 ms later
    "tk": "root.after(300, lambda: print('{text}'));",
    "qt": "QtCore.QTimer.singleShot(300, lambda: print('{text}'))",
    "wx": "wx.CallLater(300, lambda: print('{text}'));",
    "gtk3": "GLib.timeout_add(300, lambda: print('{text}') or False);",
}
CLICKS = {  # a left click on the figure's canvas, queued on the toolkit's event queue
    "tk": "w = fig.canvas.get_tk_widget()\n"
          "for kind in ('ButtonPress-1', 'ButtonRelease-1'):\n"
          "    w.event_generate(f'<{kind}>', x=30, y=40, when='tail')",
    "qt": "from matplotlib.backends.qt_compat import QtCore, QtGui\n"
          "left, none = QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.KeyboardModifier.NoModifier\n"
          "for t in (QtCore.QEvent.Type.MouseButtonPress, QtCore.QEvent.Type.MouseButtonRelease):\n"
          "    p = QtCore.QPointF(30, 40)\n"
          "    QtCore.QCoreApplication.postEvent(fig.canvas, QtGui.QMouseEvent(t, p, p, left, left, none))",
}


def timer_fires_while_idle(k: KernelHarness, toolkit: str) -> None:
    enabling = with_window(k, toolkit, fresh=True)
    assert value(k, "get_ipython().active_eventloop") == repr(toolkit)
    scheduled = k.kc.execute(TIMERS[toolkit].format(text=f"{toolkit} timer fired"))
    k.shell_reply(scheduled)
    k.iopub_until_idle(scheduled)  # the cell is over; the kernel is idle when the timer fires
    fired = wait_for_stream(k, f"{toolkit} timer fired")
    # as in ipykernel 7.4: output of toolkit callbacks goes to the cell that enabled the loop
    assert fired["parent_header"]["msg_id"] == enabling


def leaving_and_entering_again(k: KernelHarness, toolkit: str) -> None:
    with_window(k, toolkit)
    reply, msgs = k.execute("%gui")
    assert reply["content"]["status"] == "ok" and not of_type(msgs, "stream")
    assert value(k, "get_ipython().active_eventloop") == "None"
    k.run_ok(TIMERS[toolkit].format(text=f"{toolkit} timer after leaving"))
    k.run_ok("import time\ntime.sleep(0.5)")
    assert f"{toolkit} timer after leaving" not in stream_text(k.drain_iopub(0.5))  # not served now
    reenter = k.kc.execute(f"%gui {toolkit}")
    k.shell_reply(reenter)
    fired = wait_for_stream(k, f"{toolkit} timer after leaving")
    assert fired["parent_header"]["msg_id"] == reenter


def answers_with_a_window_open(k: KernelHarness) -> None:
    """Shell, control, interrupts (computing and awaiting cells), subshells, comms and the debugger."""
    assert value(k, "1 + 1") == "2"
    reply, _ = k.request("kernel_info_request", {}, channel="control")
    assert reply["content"]["status"] == "ok"
    for code in ("import time\ntime.sleep(60)", "import asyncio\nawait asyncio.sleep(60)"):
        interrupted(k, code)
    reply, _ = k.request("create_subshell_request", {}, channel="control")
    subshell = reply["content"]["subshell_id"]
    msg = k.kc.session.msg("execute_request", {"code": "40 + 2", "silent": False})
    msg["header"]["subshell_id"] = subshell
    k.kc.shell_channel.send(msg)
    assert k.shell_reply(msg["header"]["msg_id"])["content"]["status"] == "ok"
    k.request("delete_subshell_request", {"subshell_id": subshell}, channel="control")
    k.run_ok("import comm\ncomm.get_comm_manager().register_target(\n"
             "    'gui.echo', lambda c, m: c.on_msg(lambda m2: c.send({'echo': m2['content']['data']})))")
    for msg_type, content in (("comm_open", {"comm_id": "gui-1", "target_name": "gui.echo", "data": {}}),
                              ("comm_msg", {"comm_id": "gui-1", "data": {"x": 1}})):
        msg = k.kc.session.msg(msg_type, content)
        k.kc.shell_channel.send(msg)
        msgs = k.iopub_until_idle(msg["header"]["msg_id"])
    assert [m["content"]["data"] for m in of_type(msgs, "comm_msg")] == [{"echo": {"x": 1}}]
    reply, _ = k.request("debug_request", {"type": "request", "seq": 1, "command": "initialize",
                                           "arguments": {"adapterID": "python"}}, channel="control")
    assert reply["content"].get("success") is True, reply["content"]


# -- tk and Qt (PySide6) --

@pytest.mark.parametrize("toolkit", ["tk", "qt"])
def test_toolkit_timer_fires_while_idle_and_prints_to_the_enabling_cell(request, toolkit):
    timer_fires_while_idle(request.getfixturevalue(f"{toolkit}_kernel"), toolkit)


@pytest.mark.parametrize("toolkit", ["tk", "qt"])
def test_matplotlib_window_draws_and_gets_events_while_idle(request, toolkit):
    k = request.getfixturevalue(f"{toolkit}_kernel")
    k.run_ok(f"%matplotlib {toolkit}\nimport matplotlib.pyplot as plt\n"
             "fig, ax = plt.subplots()\nevents = []\n"
             "fig.canvas.mpl_connect('draw_event', lambda e: events.append('draw'))\n"
             "fig.canvas.mpl_connect('button_press_event', lambda e: events.append(('press', e.button)))\n"
             "ax.plot([1, 3, 2]);")
    assert value(k, "plt.get_backend(), plt.isinteractive()") == f"('{toolkit}agg', True)"
    wait_until(k, "'draw' in events")  # the window was drawn between requests
    if toolkit == "tk":  # a click generated before the window is mapped can be lost (once on 3.14)
        wait_until(k, "fig.canvas.get_tk_widget().winfo_viewable()")
    k.run_ok(CLICKS[toolkit])
    wait_until(k, "[e for e in events if e[0] == 'press']")  # served while the kernel is idle
    msgs = k.run_ok("before = len(events)\nplt.pause(0.05)\nfig.canvas.draw()\nprint(len(events) > before)")
    assert stream_text(msgs) == "True\n"
    interrupted(k, "plt.pause(60)")  # matplotlib's own wait in a cell ends on an interrupt


def interrupted(k: KernelHarness, code: str) -> None:
    """Run `code` once the cell has started (interrupt_request), and expect KeyboardInterrupt as its
    reply (an interrupt sent before the cell runs would find the kernel idle and do nothing)."""
    msg_id = k.kc.execute(f"print('cell started', flush=True)\n{code}")
    started = wait_for_stream(k, "cell started")
    assert started["parent_header"]["msg_id"] == msg_id
    time.sleep(0.2)  # (landing before `code` blocks interrupts the cell all the same)
    # (the interrupt's iopub is skipped by the cell's wait below)
    assert k.control("interrupt_request")["content"]["status"] == "ok"
    reply = k.shell_reply(msg_id)
    assert reply["content"].get("ename") == "KeyboardInterrupt", (code, reply["content"])
    k.iopub_until_idle(msg_id)


@pytest.mark.parametrize("toolkit", ["tk", "qt"])
def test_kernel_answers_everything_with_a_window_open(request, toolkit):
    k = request.getfixturevalue(f"{toolkit}_kernel")
    with_window(k, toolkit)
    answers_with_a_window_open(k)


@pytest.mark.parametrize("toolkit", ["tk", "qt"])
def test_leaving_the_loop_and_entering_again(request, toolkit):
    leaving_and_entering_again(request.getfixturevalue(f"{toolkit}_kernel"), toolkit)


def test_an_interrupt_ends_root_mainloop_in_a_cell(tk_kernel):
    # (ipykernel 7.4 cannot: Tcl waits for the next window event before Python sees the SIGINT)
    with_window(tk_kernel, "tk")
    interrupted(tk_kernel, "root.mainloop()")
    assert value(tk_kernel, "root.winfo_exists()") == "1"


def test_qt_versions_after_leaving_as_ipykernel_says(qt_kernel):
    with_window(qt_kernel, "qt")
    qt_kernel.run_ok("%gui")
    msgs = qt_kernel.run_ok("%gui qt5")  # PySide6 (Qt 6) is loaded: it stays, and the cell says so
    assert stream_text(msgs) == "Cannot switch Qt versions for this session; you must use qt6.\n"
    for code in ("%gui", "%gui qt6"):  # (IPython refuses to even look for PyQt6 now: not an error)
        reply, msgs = qt_kernel.execute(code)
        assert reply["content"]["status"] == "ok" and not of_type(msgs, "stream"), (code, msgs)
    assert value(qt_kernel, "get_ipython().active_eventloop") == "'qt6'"


def test_asyncio_callbacks_run_while_tk_waits(tk_kernel):
    with_window(tk_kernel, "tk")
    msgs = tk_kernel.run_ok("import asyncio\n"
                            "asyncio.get_event_loop().call_later(0.2, print, 'asyncio under tk');")
    assert "asyncio under tk" not in stream_text(msgs)
    wait_for_stream(tk_kernel, "asyncio under tk")


@pytest.mark.parametrize("toolkit", ["tk", "qt"])
def test_idle_cpu_stays_near_zero_with_a_window_open(request, toolkit):
    k = request.getfixturevalue(f"{toolkit}_kernel")
    with_window(k, toolkit)
    pid = int(value(k, "__import__('os').getpid()"))
    time.sleep(0.5)
    before = cpu_seconds(pid)
    time.sleep(3)
    # a loop that polled every few ms would cost ~0.05-0.1 s here; a busy loop 3 s
    assert cpu_seconds(pid) - before < 0.3


def test_a_second_toolkit_is_refused_while_one_is_active(tk_kernel):
    with_window(tk_kernel, "tk")
    reply, msgs = tk_kernel.execute("%gui qt")
    assert reply["content"]["status"] == "ok"
    assert stderr_text(msgs) == "ERROR:root:Cannot activate multiple GUI eventloops\n"


TICKING = ("ticks = [0]\n"
           "def tick():\n"
           "    ticks[0] += 1\n"
           "    line.set_ydata([0, ticks[0] % 7])\n"
           "    fig.canvas.draw_idle()\n"
           "timer = fig.canvas.new_timer(interval=10)\ntimer.add_callback(tick)\ntimer.start()")
RELABEL = {  # the window of WINDOWS relabelled every 10 ms by a toolkit timer, counting in `ticks`
    "tk": "ticks = [0]\nlabel = tkinter.Label(root)\nlabel.pack()\n"
          "def tick():\n    ticks[0] += 1\n    label.config(text=str(ticks[0]))\n    root.after(10, tick)\n"
          "tick()",
    "qt": "ticks = [0]\n"
          "def tick():\n    ticks[0] += 1\n    label.setText(str(ticks[0]))\n"
          "timer = QtCore.QTimer()\ntimer.timeout.connect(tick)\ntimer.start(10)",
}


@pytest.mark.parametrize("toolkit", ["tk", "qt"])
def test_chaos_clients_with_a_busy_window_open(display, tmp_path, toolkit):
    """pytests/chaos.py (interrupts, stdin, subshell churn, floods, control requests) while a window
    changes every 10 ms from a toolkit timer: every request answered once, every ok cell's output
    whole. (No pyplot here: an interrupt landing in pyplot's post_execute hook prints IPython's
    "Error in callback" into an ok cell, as in ipykernel, which the chaos client would count.)"""
    from chaos import run_chaos

    needs(toolkit)
    k = gui_kernel(display)
    try:
        with_window(k, toolkit)
        k.run_ok(RELABEL[toolkit])
        wait_until(k, "ticks[0] > 10")
        k.kc.stop_channels()
        figures = run_chaos(k.km.get_connection_info(), k.km.provisioner.process.pid, seed=26, clients=3,
                            requests=int(os.environ.get("IPYMINI_CHAOS_REQUESTS", "200")))
        assert figures["errors"] == [] and figures["answered"] == figures["sent"]
        assert k.km.is_alive()
        k.kc = k.km.client()
        k.kc.start_channels()
        k.kc.wait_for_ready(timeout=30)
        before = int(value(k, "ticks[0]"))
        wait_until(k, f"ticks[0] > {before}")  # the window still redraws
    finally:
        k.stop()


# -- wx and GTK 3 (Debian's bindings) --

@pytest.mark.parametrize("toolkit", ["wx", "gtk3"])
def test_wx_and_gtk3_serve_their_windows_and_the_kernel(debian_kernel, toolkit):
    timer_fires_while_idle(debian_kernel, toolkit)
    answers_with_a_window_open(debian_kernel)
    leaving_and_entering_again(debian_kernel, toolkit)
    debian_kernel.run_ok("%gui")  # the next toolkit's test starts with no loop

# -- asyncio, failures, shutdown --

def test_gui_asyncio_is_silent_and_runs_callbacks_after_the_cell(kernel):
    reply, msgs = kernel.execute("%gui asyncio")
    assert reply["content"]["status"] == "ok" and not of_type(msgs, "stream"), msgs
    msg_id = kernel.kc.execute("import asyncio\nasyncio.get_event_loop().call_later(0.2, print, 'later');")
    kernel.shell_reply(msg_id)
    assert "later" not in stream_text(kernel.iopub_until_idle(msg_id))
    fired = wait_for_stream(kernel, "later")
    assert fired["parent_header"]["msg_id"] == msg_id  # asyncio handles keep their cell's context
    reply, msgs = kernel.execute("%gui")
    assert reply["content"]["status"] == "ok" and not of_type(msgs, "stream")


def test_toolkits_that_cannot_start_say_why_in_the_cell(kernel):
    # wx and PyGObject are not installed in the test venv; osx is macOS only. ipykernel 7.4 accepts
    # these silently and logs the same ImportError in the kernel's own log.
    for gui, message in (("wx", "No module named 'wx'"), ("gtk", "No module named 'gobject'"),
                         ("gtk3", "No module named 'gi'"), ("osx", "the 'osx' event loop is macOS's (Cocoa)")):
        reply, msgs = kernel.execute(f"%gui {gui}")
        assert reply["content"]["status"] == "ok"
        assert stderr_text(msgs).startswith("ERROR:root:") and message in stderr_text(msgs), (gui, msgs)
        assert value(kernel, "get_ipython().active_eventloop") == "None"
    reply, msgs = kernel.execute("%gui gtk4")
    assert stderr_text(msgs).startswith("ERROR:root:Invalid GUI request 'gtk4', valid ones are:dict_keys(")


@pytest.mark.parametrize("toolkit, says", [
    ("qt", "Qt needs a display"),  # ipykernel's kernel dies here
    ("tk", "no display name and no $DISPLAY environment variable"),
])
def test_without_a_display_qt_and_tk_fail_in_the_cell_and_the_kernel_lives(kernel, toolkit, says):
    needs(toolkit)
    reply, msgs = kernel.execute("import os\nfor v in ('DISPLAY', 'WAYLAND_DISPLAY', 'QT_QPA_PLATFORM'):\n"
                                 f"    os.environ.pop(v, None)\n%gui {toolkit}")
    assert says in stderr_text(msgs), msgs
    assert value(kernel, "'alive'") == "'alive'"


@pytest.mark.parametrize("toolkit", ["tk", "qt"])
def test_shutdown_with_a_window_open_is_clean(display, tmp_path, toolkit):
    needs(toolkit)
    log = tmp_path / "kernel.log"
    k = KernelHarness(env={"DISPLAY": display, "QT_QPA_PLATFORM": "offscreen"}, stderr=open(log, "w"))
    try:
        # a figure whose toolkit timer uses the user's namespace, which IPython empties at exit,
        # and a redraw slower than its interval (closing a Tk window ran `update()`, which never ran dry)
        k.run_ok(f"%matplotlib {toolkit}\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
                 "line, = ax.plot([0, 1])\n" + TICKING + "\nimport time\n"
                 "fig.canvas.mpl_connect('draw_event', lambda event: time.sleep(0.02))")
        wait_until(k, "ticks[0] > 3")
        k.kc.stop_channels()
        process = k.km.provisioner.process
        k.km.shutdown_wait_time = DEADLINE  # (a loaded machine): killed only after that
        k.km.shutdown_kernel(now=False)  # a shutdown_request
        assert process.returncode == 0  # exited by itself (killed: -9)
    finally:
        if k.km.is_alive():
            k.km.shutdown_kernel(now=True)
    text = log.read_text()
    assert "Traceback" not in text and "Fatal" not in text and "Segmentation" not in text, text
