"""`jupyter console --kernel ipymini` end to end, driven in a pseudo-terminal with pexpect.

One console session per module: the tests run in order against it (prompt numbers are tracked, not
assumed), and the last one types `exit` and checks the kernel process is gone. The terminal is an
xterm, so prompt_toolkit draws with escape sequences: `Console.expect` matches on the text with them
stripped. (jupyter_console 6.6 crashes on an iopub message whose parent_header is null; ipymini
always sends a dict, `{}` when there is no parent.)
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pexpect
import pytest

import harness  # noqa: F401  (sets JUPYTER_PATH to the repository's kernelspec)

pytestmark = pytest.mark.console

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\x1b[=>]|\r")


class Console:
    """A running `jupyter console` and the text it has printed (escape sequences stripped)."""

    def __init__(self, tmp: Path):
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "IPYTHONDIR": str(tmp / "ipython"),
               "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        jupyter = str(Path(sys.executable).with_name("jupyter"))
        self.child = pexpect.spawn(jupyter, ["console", "--kernel", "ipymini"], env=env, cwd=str(tmp),
                                   encoding="utf-8", timeout=30, dimensions=(40, 120))
        self.raw = ""
        self.pos = 0
        self.count = 1
        self.expect(r"In \[1\]: ", timeout=60)

    def text(self) -> str:
        return ESCAPES.sub("", self.raw)

    def expect(self, pattern: str, timeout: float = 20) -> re.Match:
        """Wait for `pattern` in the output after the previous match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.text(), self.pos)
            if m:
                self.pos = m.end()
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} not seen within {timeout}s; output ends with:\n"
                                   f"{self.text()[-800:]}")
            try:
                self.raw += self.child.read_nonblocking(4096, timeout=0.2)
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                raise AssertionError(f"console exited while waiting for {pattern!r}:\n{self.text()[-800:]}")

    def next_prompt(self, timeout: float = 20) -> None:
        """Wait for the prompt of the next cell (every executed cell counts, errors too)."""
        self.count += 1
        self.expect(rf"In \[{self.count}\]: ", timeout)

    def run(self, line: str, output: str, timeout: float = 20) -> re.Match:
        """Type one line, wait for `output` and the next prompt."""
        self.child.sendline(line)
        m = self.expect(output, timeout)
        self.next_prompt(timeout)
        return m


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    c = Console(tmp_path_factory.mktemp("console"))
    yield c
    if c.child.isalive():
        c.child.terminate(force=True)


def test_banner_and_first_prompt(console):
    assert "ipymini" in console.text()
    assert "In [1]: " in console.text()


def test_print(console):
    console.run('print("hello from ipymini")', r"\nhello from ipymini\n")


def test_out_result(console):
    n = console.count
    console.run("6 * 7", rf"Out\[{n}\]: 42\n")


def test_multiline_def_uses_continuation_prompt(console):
    console.child.send("def add_one(x):\r")
    console.expect(r"\.\.\.: ")
    console.child.send("return x + 1\r")
    console.expect(r"\.\.\.: ")
    console.child.send("\r")  # an empty line ends the block
    console.next_prompt()
    n = console.count
    console.run("add_one(41)", rf"Out\[{n}\]: 42\n")


def test_tab_completes_a_module_name(console):
    console.child.send("import collec")
    console.child.send("\t")
    console.expect(r"import collections")
    time.sleep(0.3)  # let the completion settle before Enter
    console.child.send("\r")
    console.next_prompt()
    n = console.count
    console.run("collections.__name__", rf"Out\[{n}\]: 'collections'")


def test_input_answered_at_its_prompt(console):
    console.child.sendline('answer = input("your name? ")')
    console.expect(r"your name\? ")
    console.child.sendline("Ada")
    console.next_prompt()
    n = console.count
    console.run("answer", rf"Out\[{n}\]: 'Ada'")


def test_help_with_question_mark(console):
    # len's docstring is one line on every supported Python (zip's changed in 3.13 and grew long
    # enough there to open the pager, which would swallow the following tests' input)
    console.run("len?", r"Docstring:\s+Return the number of items in a container\.[\s\S]*"
                        r"Type:\s+builtin_function_or_method")


def test_ctrl_c_interrupts_sleep(console):
    console.child.sendline("import time; time.sleep(30)")
    time.sleep(1.5)  # the cell is running
    t0 = time.monotonic()
    console.child.sendintr()
    console.expect(r"KeyboardInterrupt", timeout=10)
    assert time.monotonic() - t0 < 5
    console.next_prompt(timeout=10)
    n = console.count
    console.run('"still alive"', rf"Out\[{n}\]: 'still alive'")


def test_exit_leaves_no_kernel_behind(console):
    m = console.run("import os; os.getpid()", r"Out\[\d+\]: (\d+)")
    pid = int(m.group(1))
    assert pid != console.child.pid
    console.child.sendline("exit")
    console.child.expect(pexpect.EOF, timeout=30)
    console.child.close()
    assert console.child.exitstatus == 0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return
        if "\nState:\tZ" in state:  # exited, waiting to be reaped by its new parent
            return
        time.sleep(0.2)
    pytest.fail(f"kernel process {pid} still running after `exit`")
