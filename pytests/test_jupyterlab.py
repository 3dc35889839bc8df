"""JupyterLab end to end: a real JupyterLab server and headless Chromium driven with Playwright.

One server (127.0.0.1 only, token auth, temporary root/config/runtime dirs) and one browser page per
module; the tests run in order in one notebook created from the launcher's "Python 3 (ipymini)"
card. Each check saves a screenshot under test-artifacts/ (gitignored).

The browser is Debian's /usr/bin/chromium (installed with apt-get when missing); Playwright only
drives it: never `playwright install`. The completion check is timed: JupyterLab 4 may send a
`debug_request` along with Tab's completion, and the kernel must answer it at once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness import REPO
from harness.gateway import free_port
from harness.lab import (UI_TIMEOUT, alive_after_interrupt, chromium, lab_dirs,  # noqa: F401 (fixture)
                         notebook_page, run_cell, stop_button_interrupts, type_in_last_cell, wait_done,
                         wait_idle)

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "test-artifacts"
TOKEN = "ipymini-e2e"


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    """A JupyterLab server in a temporary root dir; yields its base URL."""
    tmp = tmp_path_factory.mktemp("lab")
    env = {**os.environ, **lab_dirs(tmp)}
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={tmp / 'root'}",
           "--ServerApp.terminals_enabled=False", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "lab-server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited ({server.returncode}):\n{log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within 90s:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def page(chromium, lab_url, tmp_path_factory):
    """A browser page showing a new ipymini notebook, its kernel idle."""
    with notebook_page(chromium, lab_url, TOKEN, tmp_path_factory.mktemp("chromium-profile")) as pg:
        wait_idle(pg)
        yield pg


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"lab-{name}.png"))


def test_print(page):
    from playwright.sync_api import expect

    cell = run_cell(page, 'print("hello from ipymini")')
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("hello from ipymini")
    shot(page, "print")


def test_out_result(page):
    from playwright.sync_api import expect

    cell = run_cell(page, "6 * 7")
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("42")
    prompt = cell.locator(".jp-InputArea-prompt").inner_text()
    expect(cell.locator(".jp-OutputArea-prompt")).to_have_text(prompt)  # Out [n] matches In [n]
    shot(page, "out-result")


def test_html_output(page):
    from playwright.sync_api import expect

    cell = run_cell(page, 'from IPython.display import HTML\nHTML("<b>bold html</b> and <i>italic</i>")')
    out = cell.locator(".jp-OutputArea-output.jp-RenderedHTMLCommon")
    expect(out.locator("b")).to_have_text("bold html")
    expect(out.locator("i")).to_have_text("italic")
    shot(page, "html")


def test_ipywidgets_slider_renders(page):
    from playwright.sync_api import expect

    cell = run_cell(page, "import ipywidgets as widgets\nwidgets.IntSlider(value=4, max=9, description='slide')")
    slider = cell.locator(".widget-slider")
    expect(slider).to_be_visible(timeout=UI_TIMEOUT)
    expect(cell.locator(".widget-label")).to_contain_text("slide")
    expect(cell.locator(".widget-readout")).to_have_text("4")
    shot(page, "slider")


def test_traceback(page):
    from playwright.sync_api import expect

    cell = run_cell(page, 'def boom():\n    raise ValueError("kaboom")\n\nboom()')
    err = cell.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(err).to_contain_text("ValueError")
    expect(err).to_contain_text("Cell In[")
    expect(err).to_contain_text("ValueError: kaboom")
    shot(page, "traceback")


def test_streaming_prints_arrive_while_running(page):
    from playwright.sync_api import expect

    cell = run_cell(page, 'import time\nfor i in range(4):\n    print(f"tick {i}", flush=True)\n'
                          '    time.sleep(1)', wait=False)
    out = cell.locator(".jp-OutputArea-output")
    expect(out).to_contain_text("tick 0", timeout=10_000)
    # the first line is shown while the cell still runs
    assert "tick 3" not in out.inner_text()
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:")
    shot(page, "streaming-partial")
    wait_done(cell)
    expect(out).to_have_text("tick 0\ntick 1\ntick 2\ntick 3")
    shot(page, "streaming-done")


def test_input_answered_in_the_input_box(page):
    from playwright.sync_api import expect

    cell = run_cell(page, 'name = input("your name? ")\nprint("hello", name)', wait=False)
    box = cell.locator(".jp-Stdin-input")
    box.wait_for()
    expect(cell.locator(".jp-Stdin-prompt")).to_contain_text("your name?")
    shot(page, "input-asked")
    box.fill("Ada")
    box.press("Enter")
    wait_done(cell)
    expect(cell.locator(".jp-OutputArea")).to_contain_text("hello Ada")
    shot(page, "input-answered")


def test_tab_completion(page):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    cell = type_in_last_cell(page, "import collec")
    editor = cell.locator(".cm-content")
    expect(editor).to_have_text("import collec")  # the editor has the text before Tab asks
    # JupyterLab lists the kernel's matches (even a single one) in the completer; a click takes one
    match = page.locator(".jp-Completer .jp-Completer-match", has_text=re.compile(r"^collections$"))
    for attempt in range(3):
        # on a loaded machine JupyterLab sometimes hides its list again right after showing it (it
        # judged the reply stale), or keeps it hidden: the user presses Tab again, and so does the test
        t0 = time.monotonic()
        page.keyboard.press("Tab")
        try:
            match.or_(editor.filter(has_text="collections")).first.wait_for(timeout=8_000)
            if match.is_visible():
                shot(page, "completion-list")
                match.click(timeout=3_000)
            expect(editor).to_have_text("import collections", timeout=3_000)
            break
        except (PlaywrightTimeout, AssertionError):
            if attempt == 2:
                raise
            page.keyboard.press("Escape")  # closes the list (and leaves the editor): come back to it
            editor.click()
            page.keyboard.press("End")
    assert time.monotonic() - t0 < 5, "completion took too long (debug_request not answered?)"
    shot(page, "completion")
    page.keyboard.press("Shift+Enter")
    wait_done(cell)
    cell = run_cell(page, "collections.__name__")
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("'collections'")


def test_stop_button_interrupts_sleep(page):
    stop_button_interrupts(page, seconds=30, within=5, timeout=10_000)
    shot(page, "interrupt")
    alive_after_interrupt(page)


def test_kernel_restart(page):
    from playwright.sync_api import expect

    run_cell(page, "marker = 123")
    page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="restart"] button').click()
    page.locator(".jp-Dialog .jp-mod-accept").click()
    page.locator(".jp-Dialog").wait_for(state="detached")
    wait_idle(page)
    cell = run_cell(page, '"marker" in globals()')
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("False")
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[1]:")  # a fresh kernel counts from 1
    shot(page, "restart")
