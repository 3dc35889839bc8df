"""IPYMINI_* settings (ipymini/settings.py): parsing, errors at startup, the README table."""

import os
import re
import subprocess
import sys

import pytest
from jupyter_client.connect import write_connection_file

from ipymini import settings
from ipymini.settings import SettingError
from harness import REPO, KernelHarness, stream_text

# name: (default value, a good non-default text, its value, a bad text or None when any text is good)
CASES = {
    "IPYMINI_CAPTURE_FD": (True, "0", False, "maybe"),
    "IPYMINI_OUTPUT_LIMIT": (None, "1e3", 1000, "lots"),
    "IPYMINI_IOPUB_STALL_TIMEOUT": (10.0, "2.5", 2.5, "-1"),
    "IPYMINI_IOPUB_HWM": (100, "8", 8, "abc"),
    "IPYMINI_COMMS_ON_SUBSHELLS": (False, "1", True, "2"),
    "IPYMINI_MEMORY_LIMIT": (None, "2G", 2 << 30, "10M"),
    "IPYMINI_THREAD_OUTPUT": ("running", "Starter", "starter", "creator"),
    "IPYMINI_LOG_LEVEL": ("WARNING", "debug", "DEBUG", "LOUD"),
    "IPYMINI_COMPLETION_TIMEOUT": (1.5, "0", 0.0, "nan"),
    "IPYMINI_USE_JEDI": (None, "off", False, "jedi"),
    "IPYMINI_EXPERIMENTAL_COMPLETIONS": (True, "0", False, "no way"),
    "IPYMINI_ROLLBACK": (False, "TRUE", True, "sometimes"),
    "IPYMINI_CHECKPOINT_DIR": (None, "~/ck", "~/ck", None),
    "IPYMINI_DEBUG_TIMEOUT": (15.0, "30", 30.0, "soon"),
    "IPYMINI_HANDSHAKE_TIMEOUT": (10.0, "2.5", 2.5, "-1"),
    "IPYMINI_DEBUG_JUST_MY_CODE": (True, "false", False, "x"),
    "IPYMINI_KERNEL_IP": ("0.0.0.0", "127.0.0.1", "127.0.0.1", None),
    "IPYMINI_STACKS_SIGNAL": (None, "SIGUSR1", "sigusr1", "SIGKILL"),
}
STARTUP_TIMEOUT = 60  # seconds for a kernel that must refuse to start


def test_every_setting_has_a_case():
    assert set(CASES) == set(settings.SETTINGS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_good_and_bad_values(name):
    default, good, good_value, bad = CASES[name]
    assert settings.value(name, {}) == default
    assert settings.value(name, {name: ""}) == default  # empty: the default
    assert settings.value(name, {name: good}) == good_value
    if bad is not None:
        with pytest.raises(SettingError) as e:
            settings.value(name, {name: bad})
        assert str(e.value).startswith(f"{name}={bad!r} is not valid: expected ")


def test_the_error_message():
    with pytest.raises(SettingError) as e:
        settings.value("IPYMINI_IOPUB_HWM", {"IPYMINI_IOPUB_HWM": "abc"})
    assert str(e.value) == "IPYMINI_IOPUB_HWM='abc' is not valid: expected a whole number ≥ 0"


@pytest.mark.parametrize("text,expected", [("1", True), ("0", False), ("Yes", True), ("no", False),
                                           ("ON", True), ("off", False), ("true", True), (" False ", False)])
def test_flags(text, expected):
    assert settings.value("IPYMINI_COMMS_ON_SUBSHELLS", {"IPYMINI_COMMS_ON_SUBSHELLS": text}) is expected


@pytest.mark.parametrize("text,expected", [("0", 0), ("2G", 2 << 30), ("512m", 512 << 20), ("1.5g", 3 << 29),
                                           ("65536K", 64 << 20), ("1 GiB", 1 << 30), ("1e9", 10**9),
                                           ("80%", 0.8), ("100%", 1.0)])
def test_memory_sizes(text, expected):
    assert settings.value("IPYMINI_MEMORY_LIMIT", {"IPYMINI_MEMORY_LIMIT": text}) == expected


@pytest.mark.parametrize("text", ["10M", "0%", "101%", "-1G", "1X", "nan", "inf"])
def test_memory_sizes_refused(text):
    with pytest.raises(SettingError):
        settings.value("IPYMINI_MEMORY_LIMIT", {"IPYMINI_MEMORY_LIMIT": text})


@pytest.mark.parametrize("text,expected", [("1000", 1000), ("1000.0", 1000), ("1e6", 1_000_000), ("0", 0)])
def test_output_limit_takes_numbers_as_before(text, expected):
    assert settings.value("IPYMINI_OUTPUT_LIMIT", {"IPYMINI_OUTPUT_LIMIT": text}) == expected


@pytest.mark.parametrize("name,text", [("IPYMINI_OUTPUT_LIMIT", "-1"), ("IPYMINI_OUTPUT_LIMIT", "inf"),
                                       ("IPYMINI_IOPUB_HWM", "1.5"), ("IPYMINI_IOPUB_HWM", "-1"),
                                       ("IPYMINI_COMPLETION_TIMEOUT", "-0.5"), ("IPYMINI_LOG_LEVEL", "10")])
def test_more_bad_values(name, text):
    with pytest.raises(SettingError, match=name):
        settings.value(name, {name: text})


def test_log_level_names():
    for name in ("debug", "INFO", "Warning", "WARN", "error", "critical"):
        assert settings.value("IPYMINI_LOG_LEVEL", {"IPYMINI_LOG_LEVEL": name}) == name.upper()
    # the remote launcher's own default
    assert settings.value("IPYMINI_LOG_LEVEL", {}, default="INFO") == "INFO"
    assert settings.value("IPYMINI_LOG_LEVEL", {"IPYMINI_LOG_LEVEL": "error"}, default="INFO") == "ERROR"


def test_config_path():
    """c.IPyMini.rollback / .checkpoint_dir apply when the variable is not set; a set variable wins."""
    rollback = {"IPyMini": {"rollback": True}}
    assert settings.value("IPYMINI_ROLLBACK", {}, config=rollback) is True
    assert settings.value("IPYMINI_ROLLBACK", {}, config={"IPyMini": {"rollback": "yes"}}) is True
    assert settings.value("IPYMINI_ROLLBACK", {}, config={"IPyMini": {"rollback": "maybe"}}) is False
    assert settings.value("IPYMINI_ROLLBACK", {}, config={}) is False
    assert settings.value("IPYMINI_ROLLBACK", {"IPYMINI_ROLLBACK": "0"}, config=rollback) is False
    assert settings.value("IPYMINI_ROLLBACK", {"IPYMINI_ROLLBACK": ""}, config=rollback) is False
    where = {"IPyMini": {"checkpoint_dir": "/tmp/ck"}}
    assert settings.value("IPYMINI_CHECKPOINT_DIR", {}, config=where) == "/tmp/ck"
    assert settings.value("IPYMINI_CHECKPOINT_DIR", {}, config={}) is None
    assert settings.value("IPYMINI_CHECKPOINT_DIR", {"IPYMINI_CHECKPOINT_DIR": "/x"}, config=where) == "/x"


def test_problems_lists_every_bad_value():
    env = {"IPYMINI_IOPUB_HWM": "abc", "IPYMINI_DEBUG_TIMEOUT": "soon", "IPYMINI_CAPTURE_FD": "1"}
    found = settings.problems(env)
    assert len(found) == 2
    assert found[0].startswith("IPYMINI_IOPUB_HWM='abc'") and found[1].startswith("IPYMINI_DEBUG_TIMEOUT='soon'")
    assert settings.problems({}) == []


def test_no_module_reads_ipymini_variables_itself():
    """Only settings.py looks IPYMINI_* variables up in the environment."""
    for path in (REPO / "ipymini").rglob("*.py"):
        if path.name != "settings.py":
            text = path.read_text()
            assert not re.search(r"environ[^\n]*IPYMINI_", text), path
            assert not re.search(r"getenv\([^\n]*IPYMINI_", text), path


# -- the README's table --

def _readme_table() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("| variable | default | meaning |")
    return readme[start:readme.index("\n\n", start) + 1]


def test_readme_table_is_the_declared_settings():
    assert _readme_table() == settings.markdown()
    rows = re.findall(r"^\| `(IPYMINI_\w+)` \| (.*?) \|", _readme_table(), re.M)
    assert [name for name, _ in rows] == list(settings.SETTINGS)
    for name, default in rows:
        s = settings.SETTINGS[name]
        assert default == (f"`{s.default}`" if s.default is not None else s.shown)


def test_markdown_command_prints_the_table():
    proc = subprocess.run([sys.executable, "-m", "ipymini.settings", "--markdown"], capture_output=True,
                          text=True, timeout=30, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _readme_table()


def test_launcher_does_not_import_ipython():
    proc = subprocess.run([sys.executable, "-c", "import ipymini.remote.launcher, sys; print('IPython' in sys.modules)"],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert proc.stdout.strip() == "False", proc.stderr


# -- the real kernel --

@pytest.mark.parametrize("name,bad", [("IPYMINI_IOPUB_HWM", "abc"), ("IPYMINI_DEBUG_TIMEOUT", "soon"),
                                      ("IPYMINI_LOG_LEVEL", "LOUD")])
def test_kernel_refuses_a_bad_value_at_startup(tmp_path, name, bad):
    conn, _ = write_connection_file(str(tmp_path / "kernel.json"), ip="127.0.0.1")
    env = {**os.environ, name: bad}
    proc = subprocess.run([sys.executable, "-m", "ipymini", "-f", conn], env=env, capture_output=True,
                          text=True, timeout=STARTUP_TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert f"ipymini: {name}={bad!r} is not valid: expected " in proc.stderr
    assert "Traceback" not in proc.stderr


def test_launcher_refuses_a_bad_value_at_startup(tmp_path):
    env = {**os.environ, "IPYMINI_IOPUB_HWM": "abc"}
    proc = subprocess.run([sys.executable, "-m", "ipymini.remote", "--kernel-id", "k", "--response-address",
                           "127.0.0.1:9", "--public-key", "x"], env=env, capture_output=True, text=True,
                          timeout=STARTUP_TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "IPYMINI_IOPUB_HWM='abc'" in proc.stderr


def test_kernel_takes_valid_values():
    """Values no other test starts a kernel with: a lowercase log level, the debugger's settings, and the
    newly accepted flag words."""
    env = {"IPYMINI_LOG_LEVEL": "info", "IPYMINI_DEBUG_TIMEOUT": "30", "IPYMINI_DEBUG_JUST_MY_CODE": "0",
           "IPYMINI_COMMS_ON_SUBSHELLS": "yes", "IPYMINI_EXPERIMENTAL_COMPLETIONS": "off"}
    k = KernelHarness(env=env)
    try:
        code = ("import logging\nfrom ipymini import settings\nfrom ipymini.debugging.debugger import Debugger\n"
                "d = Debugger(get_ipython(), None)\n"
                "print(logging.getLogger('ipymini').level, d.timeout, d.just_my_code,\n"
                "      settings.value('IPYMINI_COMMS_ON_SUBSHELLS'))")
        assert stream_text(k.run_ok(code)) == "20 30.0 False True\n"
        reply, _ = k.request("complete_request", {"code": "impo", "cursor_pos": 4})
        content = reply["content"]
        assert "import" in content["matches"]
        assert "_jupyter_types_experimental" not in content["metadata"]
    finally:
        k.stop()


def test_stacks_signal_dumps_every_thread_into_the_log_not_the_cell(tmp_path):
    """IPYMINI_STACKS_SIGNAL: a kernel busy in a cell dumps its threads' stacks into its log (the real
    stderr) on the signal, and goes on; the dump never lands in the cell's output (fd 2 is captured)."""
    import signal
    import time

    log = tmp_path / "kernel.log"
    k = KernelHarness(env={"IPYMINI_STACKS_SIGNAL": "SIGUSR2"}, stderr=open(log, "w"))
    try:
        msg_id = k.kc.execute("import time\ndef waiting_here():\n    time.sleep(1.5)\nwaiting_here()\n"
                              "print('done')")
        time.sleep(0.7)
        os.kill(k.km.provisioner.process.pid, signal.SIGUSR2)
        reply = k.shell_reply(msg_id)
        out = k.iopub_until_idle(msg_id)
        assert reply["content"]["status"] == "ok"
        assert stream_text(out) == "done\n"
        assert stream_text(out, "stderr") == ""
        dump = log.read_text()
        assert "waiting_here" in dump and dump.count("Thread 0x") >= 3, dump[-2000:]
        assert stream_text(k.run_ok("print('alive')")) == "alive\n"
    finally:
        k.stop()
