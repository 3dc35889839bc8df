"""ipymini/shell/tracebacks.py: tracebacks cost less and read exactly as IPython's own.

Each check runs in a fresh interpreter: the caches patch pygments and stack_data for the process."""

import json
import re
import subprocess
import sys

from harness import KernelHarness

TRACEBACKS = r'''
import contextlib, io, json, sys
from IPython.core.interactiveshell import InteractiveShell
sh = InteractiveShell.instance()
if sys.argv[1] == "cached":
    from ipymini.shell import tracebacks
    tracebacks.install_caches()
cells = ["1/0", "def f(x):\n    return g(x)\ndef g(y):\n    return {}[y]\nf('k')",
         "try:\n    1/0\nexcept Exception as e:\n    raise ValueError('x') from e",
         "import json\njson.loads('{')", "x = [1,\n 2][5]", "def r(n):\n    return r(n+1)\nr(0)"]
out = {}
for colors in ("neutral", "linux", "nocolor"):
    sh.colors = colors
    for mode in ("Context", "Verbose"):
        sh.InteractiveTB.set_mode(mode)
        for cell in cells:
            with contextlib.redirect_stdout(io.StringIO()) as f:
                sh.run_cell(cell)
            out[f"{colors} {mode} {cell}"] = f.getvalue()
print(json.dumps(out))
'''


def run_python(code: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cached_tracebacks_read_exactly_as_ipythons_own():
    plain, cached = (json.loads(run_python(TRACEBACKS, kind)) for kind in ("plain", "cached"))
    assert len(plain) == 36 and plain.keys() == cached.keys()
    for key, text in plain.items():
        assert "Error" in text, key
        same = re.sub(r"0x[0-9a-f]+", "0x?", text) == re.sub(r"0x[0-9a-f]+", "0x?", cached[key])
        assert same, key  # object addresses differ between processes, nothing else


def test_lexer_subclasses_share_tables_only_when_they_change_nothing_they_are_built_from():
    code = r'''
from ipymini.shell import tracebacks
tracebacks.install_caches()
from pygments.lexers.python import PythonLexer
from pygments.token import Name
import stack_data
PythonLexer()  # builds PythonLexer's tables
class Marking(PythonLexer):
    def get_tokens(self, text):
        yield from super().get_tokens(text)
class OwnTokens(PythonLexer):
    tokens = {"root": [(r".+", Name)]}
class OwnFlags(PythonLexer):
    flags = 0
print(Marking._tokens is PythonLexer._tokens, "_tokens" in OwnTokens.__dict__,
      "_tokens" in OwnFlags.__dict__, list(OwnTokens().get_tokens("x = 1"))[0][0] is Name,
      stack_data.style_with_executing_node("default", "bg:ansired")
      is stack_data.style_with_executing_node("default", "bg:ansired"))
'''
    assert run_python(code).split() == ["True", "False", "False", "True", "True"]


def test_the_first_error_of_a_fresh_kernel_and_later_ones():
    k = KernelHarness()
    try:
        for _ in range(2):
            reply, msgs = k.execute("def f():\n    1/0\nf()")
            assert reply["content"]["ename"] == "ZeroDivisionError"
            (error,) = [m for m in msgs if m["msg_type"] == "error"]
            text = "\n".join(error["content"]["traceback"])
            assert "----> 3 f()" in re.sub(r"\x1b\[[0-9;]*m", "", text)
        applied = json.loads(k.run_ok("import json\nfrom ipymini import patches\n"
                                      "print(json.dumps(patches.applied()))")[-2]["content"]["text"])
        assert {"pygments.lexers.python.PythonLexer.__init_subclass__",
                "stack_data.style_with_executing_node"} <= set(applied)
    finally:
        k.stop()
