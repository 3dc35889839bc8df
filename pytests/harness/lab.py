"""JupyterLab in headless Chromium: the browser, private server dirs, a notebook page, running cells.

Used by test_jupyterlab.py (a JupyterLab server of its own) and test_kernel_gateway_lab.py (JupyterLab
with `--gateway-url`). The browser is Debian's /usr/bin/chromium (installed with apt-get when missing);
Playwright only drives it: never `playwright install`. Without a browser the tests skip loudly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UI_TIMEOUT = 30_000  # ms

KERNEL_READY = """() => {
    const kernel = window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel;
    return !!kernel && kernel.connectionStatus === "connected" && kernel.status === "idle";
}"""


def _loud_skip(reason: str):
    banner = "!" * 20
    print(f"\n{banner} BROWSER TESTS SKIPPED: {reason} {banner}", file=sys.stderr)
    pytest.skip(f"BROWSER TESTS NOT RUN: {reason}")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when it is missing."""
    if not os.path.exists(CHROMIUM):
        if shutil.which("apt-get") is None:
            _loud_skip(f"{CHROMIUM} is missing and there is no apt-get to install it")
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                      env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            except (OSError, subprocess.TimeoutExpired) as e:
                _loud_skip(f"`{' '.join(cmd)}` failed: {e}")
            if proc.returncode != 0:
                _loud_skip(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr[-500:]}")
        if not os.path.exists(CHROMIUM):
            _loud_skip(f"apt-get install chromium did not provide {CHROMIUM}")
    return CHROMIUM


def lab_dirs(tmp: Path) -> dict:
    """Private root, config, runtime, data and IPython dirs under `tmp` for a Jupyter server (the
    environment variables that point at them): no "would you like news?" toast over the notebook, and
    window.jupyterapp exposed to ask about the kernel."""
    for d in ("root", "config/labconfig", "runtime", "data", "ipython"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    (tmp / "config/labconfig/page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True},
         "exposeAppInBrowser": True}))
    return {"JUPYTER_CONFIG_DIR": str(tmp / "config"), "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
            "JUPYTER_DATA_DIR": str(tmp / "data"), "IPYTHONDIR": str(tmp / "ipython")}


@contextlib.contextmanager
def notebook_page(chromium: str, lab_url: str, token: str, profile: Path):
    """A browser page showing a new notebook made from the launcher's "Python 3 (ipymini)" card (its
    kernel not yet waited for: the caller does, see `wait_idle`)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900})
        try:
            context.set_default_timeout(UI_TIMEOUT)
            pg = context.pages[0] if context.pages else context.new_page()
            pg.goto(f"{lab_url}/lab?token={token}")
            pg.locator('.jp-LauncherCard[title="Python 3 (ipymini)"]').first.click()
            pg.locator(".jp-NotebookPanel").wait_for()
            yield pg
        finally:
            context.close()


def wait_idle(pg) -> None:
    """Wait until the notebook's kernel is connected and idle (the UI runs nothing before that)."""
    pg.wait_for_function(KERNEL_READY, timeout=UI_TIMEOUT)


def type_in_last_cell(pg, code: str):
    """Put `code` in the notebook's last (empty) cell; returns the cell."""
    cells = pg.locator(".jp-Notebook .jp-Cell")
    cell = cells.nth(cells.count() - 1)
    cell.locator(".cm-content").click()
    pg.keyboard.insert_text(code)  # no per-key auto-indent or bracket closing
    return cell


def run_cell(pg, code: str, wait: bool = True):
    """Type `code` in the last cell and run it (Shift+Enter); returns the cell."""
    cell = type_in_last_cell(pg, code)
    pg.keyboard.press("Shift+Enter")
    if wait:
        wait_done(cell)
    return cell


def wait_done(cell, timeout: float = UI_TIMEOUT) -> None:
    from playwright.sync_api import expect

    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"\[\d+\]:"), timeout=timeout)


def stop_button_interrupts(page, seconds: int, within: float, timeout: float) -> None:
    """Run `time.sleep(seconds)`, press the toolbar's stop button a second into it: KeyboardInterrupt
    shows within `timeout` ms and the cell ends within `within` seconds of the press; the kernel
    then runs the next cell."""
    from playwright.sync_api import expect

    cell = run_cell(page, f"import time\ntime.sleep({seconds})", wait=False)
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[*]:")
    time.sleep(1)
    t0 = time.monotonic()
    page.locator('.jp-NotebookPanel-toolbar [data-jp-item-name="interrupt"] button').click()
    err = cell.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    expect(err).to_contain_text("KeyboardInterrupt", timeout=timeout)
    wait_done(cell, timeout=timeout)
    assert time.monotonic() - t0 < within, f"the stop button took more than {within} s to interrupt"
    return cell


def alive_after_interrupt(page) -> None:
    from playwright.sync_api import expect

    cell = run_cell(page, '"alive after interrupt"')
    expect(cell.locator(".jp-OutputArea-output")).to_have_text("'alive after interrupt'")
