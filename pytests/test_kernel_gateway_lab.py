"""Kernel Gateway end to end in a browser: JupyterLab started with `--gateway-url`, kernels on a Kernel Gateway.

Kernel Gateway (jupyter_kernel_gateway, in the test venv) serves the repository's ipymini kernelspec on a
free 127.0.0.1 port with token auth; JupyterLab runs with `--gateway-url` and `--GatewayClient.auth_token`,
so every kernel request and the kernel websocket go Lab server → Kernel Gateway → ipymini. A notebook
is driven in headless Chromium (Debian's chromium, as in test_jupyterlab.py): print, an ipywidgets
slider (comms through both servers), the stop button, restart. The kernel is checked to be a child of
the gateway, not of Lab. Screenshots: test-artifacts/kg-*.png.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from harness import REPO
from harness import gateway as gh
from harness.lab import (KERNEL_READY, UI_TIMEOUT, alive_after_interrupt, chromium, lab_dirs,  # noqa: F401
                         notebook_page, run_cell, stop_button_interrupts, wait_done, wait_idle)
from harness.messages import result_text

pytestmark = [pytest.mark.gateway, pytest.mark.browser, pytest.mark.timeout(900)]  # may apt-get chromium

ARTIFACTS = REPO / "test-artifacts"
KG_TOKEN = "ipymini-kg"
LAB_TOKEN = "ipymini-kg-lab"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def kernel_gateway(tmp_path_factory):
    """Kernel Gateway serving the repo's ipymini kernelspec; yields the Server."""
    env = {**os.environ, **lab_dirs(tmp_path_factory.mktemp("kg"))}
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "kg-server.log"
    log.write_text("")
    server = gh.Server("Kernel Gateway", lambda port: [
        str(BIN / "jupyter"), "kernelgateway", "--KernelGatewayApp.ip=127.0.0.1", f"--KernelGatewayApp.port={port}",
        "--KernelGatewayApp.port_retries=0", f"--KernelGatewayApp.auth_token={KG_TOKEN}",
        "--KernelGatewayApp.default_kernel_name=ipymini", "--JupyterWebsocketPersonality.list_kernels=True"],
        log, env=env)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lab_url(kernel_gateway, tmp_path_factory):
    """JupyterLab whose kernels live on the Kernel Gateway; yields its base URL."""
    tmp = tmp_path_factory.mktemp("kg-lab")
    env = {**os.environ, **lab_dirs(tmp)}
    log = ARTIFACTS / "kg-lab-server.log"
    log.write_text("")

    def command(port: int) -> list[str]:
        cmd = [str(BIN / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={LAB_TOKEN}",
               f"--ServerApp.root_dir={tmp / 'root'}", "--ServerApp.terminals_enabled=False",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--gateway-url=http://127.0.0.1:{kernel_gateway.port}", f"--GatewayClient.auth_token={KG_TOKEN}",
               "--GatewayClient.request_timeout=60", "--GatewayClient.connect_timeout=60"]
        return cmd + (["--allow-root"] if os.geteuid() == 0 else [])

    def ready(port: int) -> bool:
        try:
            status, _ = gh.Rest(f"http://127.0.0.1:{port}", LAB_TOKEN)("GET", "/api/status", timeout=5)
            return status == 200
        except OSError:
            return False

    server = gh.Server("JupyterLab (--gateway-url)", command, log, env=env, ready=ready)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(chromium, lab_url, tmp_path_factory):  # noqa: F811
    with notebook_page(chromium, lab_url, LAB_TOKEN, tmp_path_factory.mktemp("kg-chromium")) as pg:
        _first_connection(pg)
        yield pg


def _first_connection(pg) -> None:
    """Wait for Lab to connect to the first kernel through the gateway, reloading the page once.

    The kernel comes up in seconds, but on a loaded machine the Lab server's websocket to the gateway
    for the notebook's session sometimes stops being read from the start (the gateway logs two
    connections for the session, "Replacing stale connection", then "WebSocket ping timeout"): the
    upstream race `_run_after_restart` describes, at the first connection. A user reloads the page;
    so does the test, once, loudly. The first start in a fresh clone (nothing compiled yet) once took
    over 30 s, so each attempt gets 90 s."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t0 = time.monotonic()
    try:
        pg.wait_for_function(KERNEL_READY, timeout=90_000)
        return
    except PlaywrightTimeout:
        print(f"\n!!! Lab did not connect to the first kernel in {time.monotonic() - t0:.0f}s "
              "(upstream gateway websocket race): reloading the page")
    pg.reload()
    pg.locator(".jp-NotebookPanel").wait_for()
    pg.wait_for_function(KERNEL_READY, timeout=90_000)
    print(f"!!! after the reload Lab connected {time.monotonic() - t0:.0f}s after the first try")


def shot(pg, name: str) -> None:
    pg.screenshot(path=str(ARTIFACTS / f"kg-{name}.png"))


def _gateway_kernels(kernel_gateway) -> list[dict]:
    _, kernels = gh.Rest(f"http://127.0.0.1:{kernel_gateway.port}", KG_TOKEN)("GET", "/api/kernels", timeout=10)
    return kernels


def test_print_runs_on_the_gateway(page, kernel_gateway):
    from playwright.sync_api import expect

    cell = run_cell(page, 'import os\nprint("hello through the gateway")\nos.getpid(), os.getppid()')
    expect(cell.locator(".jp-OutputArea-output").first).to_have_text("hello through the gateway")
    pid, ppid = map(int, re.findall(r"\d+", cell.locator(".jp-OutputArea-output").nth(1).inner_text()))
    assert ppid == kernel_gateway.proc.pid, "the kernel is not a child of the Kernel Gateway"
    kernels = _gateway_kernels(kernel_gateway)
    assert [k["name"] for k in kernels] == ["ipymini"], kernels
    shot(page, "print")


def test_widget_slider(page):
    from playwright.sync_api import expect

    cell = run_cell(page, "import ipywidgets as widgets\ns = widgets.IntSlider(value=4, max=9, description='slide')\ns")
    expect(cell.locator(".widget-slider")).to_be_visible(timeout=UI_TIMEOUT)
    expect(cell.locator(".widget-readout")).to_have_text("4")
    # kernel → browser: a value set in the kernel moves the rendered slider
    run_cell(page, "s.value = 7")
    expect(cell.locator(".widget-readout")).to_have_text("7")
    shot(page, "slider")


def test_stop_button_interrupts(page):
    stop_button_interrupts(page, seconds=60, within=10, timeout=15_000)
    shot(page, "interrupt")
    alive_after_interrupt(page)


KERNEL_ID = "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id"


def test_restart(page, kernel_gateway, lab_url):
    from playwright.sync_api import expect

    cell = run_cell(page, "import os\nmarker = os.getpid()\nmarker")
    old_pid = int(cell.locator(".jp-OutputArea-output").inner_text())
    kernel_id = page.evaluate(KERNEL_ID)
    page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="restart"] button').click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.locator(".jp-Dialog").wait_for(state="detached")
    # in the browser: a fresh namespace
    page, cell = _run_after_restart(page, '"marker" in globals()')
    if cell is not None:  # None: Lab lost the kernel behind the gateway (see _run_after_restart)
        expect(cell.locator(".jp-OutputArea-output")).to_have_text("False")
    shot(page, "restart")
    # on the gateway: a new kernel process, its child, the old one gone; checked through the Lab
    # server's API with a client session of our own
    gh.wait_for(lambda: not gh.pid_alive(old_pid), 30, "the old kernel process to exit")
    ws = gh.KernelSocket(lab_url, LAB_TOKEN, kernel_id)
    try:
        ws.wait_ready()
        _, iopub = ws.execute("import os as _os\n'marker' in globals(), _os.getpid(), _os.getppid()")
        fresh, new_pid, parent = re.findall(r"\w+", result_text(iopub))
        assert fresh == "False" and int(new_pid) != old_pid and int(parent) == kernel_gateway.proc.pid
    finally:
        ws.close()
    assert len(_gateway_kernels(kernel_gateway)) == 1


def _run_after_restart(page, code: str):
    """Run `code` in the notebook once the restarted kernel is back; returns (page, cell).

    Behind a gateway, Lab sometimes does not get its connection back after a restart although the
    kernel is up: the status stays `unknown`, or shows `idle` while a cell then stays `[*]`. The Lab
    server's websocket to the gateway for the notebook's client session stops being read (the gateway
    logs "WebSocket ping timeout"). Seen here with ipykernel as well as ipymini, more often on a loaded
    machine; the same family as jupyterlab#8013 and enterprise_gateway#903. "Reconnect to Kernel" keeps
    that client session and did not help. So: up to 20 s for the status, 20 s for the cell; if either
    fails, the notebook is opened in a new tab (a new client session) and the cell runs there, with a
    loud line in the output. If the new tab does not get it either, returns (page, None): the caller
    still checks the restart on the gateway through the Lab server's API, which has never failed.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    t0 = time.monotonic()
    try:
        page.wait_for_function(KERNEL_READY, timeout=20_000)
        cell = run_cell(page, code, wait=False)
        wait_done(cell, timeout=20_000)
        return page, cell
    except (PlaywrightTimeout, AssertionError):
        state = page.evaluate("() => { const k = window.jupyterapp?.shell.currentWidget?.sessionContext"
                              "?.session?.kernel; return [k?.status, k?.connectionStatus]; }")
        print(f"\n!!! Lab did not get the restarted kernel back (status {state} after "
              f"{time.monotonic() - t0:.0f}s): upstream gateway restart race; opening the notebook in a new tab")
    fresh = page.context.new_page()
    try:
        fresh.goto(page.url)
        fresh.locator(".jp-NotebookPanel").wait_for()
        wait_idle(fresh)
        # the tab shows the notebook as last saved: start from a new empty cell at the end
        fresh.locator(".jp-Notebook .jp-Cell").last.locator(".jp-InputArea-prompt").click()
        fresh.keyboard.press("Escape")
        fresh.keyboard.press("b")
        cell = run_cell(fresh, code)
    except (PlaywrightTimeout, AssertionError):
        # the same upstream race for the new tab's session too (seen more often with ipykernel):
        # the restart itself is still checked on the gateway by the caller, through the server's API
        print(f"!!! the new tab did not get the kernel back either ({time.monotonic() - t0:.0f}s)")
        return page, None
    print(f"!!! in the new tab the cell ran {time.monotonic() - t0:.1f}s after the restart")
    return fresh, cell
