"""Writes the end-to-end notebooks of this folder and records their expected outputs.

    .venv/bin/python pytests/notebooks/make_notebooks.py              # write + record with ipymini
    .venv/bin/python pytests/notebooks/make_notebooks.py --only hello # just one notebook
    .venv/bin/python pytests/notebooks/make_notebooks.py --kernel python3 --out /tmp/nb-ipykernel
                                                                      # same notebooks on ipykernel

Recorded outputs become the expected outputs of pytests/test_notebooks.py: review them by eye (and
against the ipykernel run) before committing. Cells are `source` or `(source, [tags])`;
`metadata.ipymini_test` holds the nbclient options a notebook is run with.

"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

TINY_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
RAISES = ["raises-exception"]

NOTEBOOKS: dict[str, tuple[list, dict]] = {
    "hello": ([
        'print("Hello, world!")',
        "6 * 7",
        'name = "ipymini"\nprint(f"hi from {name}")\nname.upper()',
        'import sys\nprint("to stderr", file=sys.stderr)\nprint("back to stdout")',
        "x = 1\nx;",
        "object()",
        "%time total = sum(range(1000))",
        "total",
    ], {}),
    "rich_display": ([
        "import base64\nfrom IPython.display import (HTML, JSON, SVG, Image, Latex, Markdown, Math,\n"
        "                                display)",
        'HTML("<b>bold</b> and <i>italic</i>")',
        'SVG(\'<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20">'
        '<circle cx="10" cy="10" r="8" fill="teal"/></svg>\')',
        f'Image(data=base64.b64decode("{TINY_PNG}"))',
        f'Image(data=base64.b64decode("{TINY_PNG}"), width=40)',
        r'Latex(r"$\alpha^2 + \beta^2 = \gamma^2$")',
        r'Math(r"\int_0^1 x\,dx = \frac{1}{2}")',
        'JSON({"name": "ipymini", "tags": ["kernel", "python"], "n": 3})',
        'Markdown("# Title\\n\\n* item")',
        'display(HTML("<p>one</p>"), Markdown("**two**"))\nprint("between")\ndisplay(3.5)',
        "class Rich:\n"
        "    def _repr_html_(self): return '<em>rich html</em>'\n"
        "    def _repr_latex_(self): return r'$\\mathrm{rich}$'\n"
        "    def __repr__(self): return 'Rich()'\n"
        "Rich()",
        "class Bundle:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/plain': 'bundle', 'application/vnd.ipymini+json': {'k': 1}}, \\\n"
        "               {'application/vnd.ipymini+json': {'note': 'meta'}}\n"
        "Bundle()",
        'display({"text/plain": "raw text", "text/html": "<p>raw html</p>"}, raw=True)',
    ], {}),
    "update_display": ([
        'from IPython.display import display, update_display\nh = display("first version", display_id=True)',
        'h.update("second version")',
        'display("a", display_id="shared")\ndisplay("b", display_id="shared")',
        'update_display("updated both", display_id="shared")',
        'h2 = display("counting 0", display_id=True)\nfor i in range(1, 4):\n    h2.update(f"counting {i}")',
        'h3 = display("kept as is", display_id="third")\nprint("stream after a display")',
    ], {}),
    "clear_output": ([
        'from IPython.display import clear_output, display\nprint("gone")\nclear_output()\nprint("kept")',
        'for i in range(5):\n    clear_output(wait=True)\n    print(f"step {i}")',
        'print("before")\ndisplay("also gone")\nclear_output()\ndisplay("shown")',
        'print("stays")\nclear_output(wait=True)',
    ], {}),
    "errors": ([
        "1/0",
        'print("still running")',
        'def f():\n    raise ValueError("bad value")\n\nf()',
        "undefined_name",
        "def (:",
        'print("partial output")\nraise RuntimeError("after output")',
        'print("the end")',
    ], {"allow_errors": True}),
    "error_tags": ([
        'print("start")',
        ('raise KeyError("expected")', RAISES),
        'print("continues after a tagged error")',
    ], {}),
    "unicode": ([
        'print("héllo wörld — 日本語 — 🎉")',
        '"Ωμέγα ✓"',
        "π = 3.14159\nπ * 2",
        'from IPython.display import HTML\nHTML("<p>ünïcödé ✓ 漢字</p>")',
        'import sys\nprint("stderr: ✗ ошибка", file=sys.stderr)',
        ('raise ValueError("ünïcödé error ✗")', RAISES),
        'len("🎉"), "🎉".encode()',
    ], {}),
    "stdin": ([
        'try:\n    input("name? ")\nexcept Exception as e:\n    print(type(e).__name__, "-", e)',
        'import getpass\ntry:\n    getpass.getpass()\nexcept Exception as e:\n    print(type(e).__name__)',
        ("input()", RAISES),
        'print("kernel still fine")',
    ], {}),
    "history": ([
        "a = 10",
        "a * 2",
        "_i2",
        "In[1]",
        "_2 + 1",
        "%history -n 1-3",
        "len(In), sorted(Out)",
    ], {}),
    "interrupt": ([
        'import time\nprint("sleeping")',
        ("time.sleep(30)", RAISES),
        'print("kernel alive after the interrupt")',
    ], {"timeout": 5, "interrupt_on_timeout": True}),
    "widgets": ([
        "import ipywidgets as widgets\nslider = widgets.IntSlider(value=3, min=0, max=10, description='n')\nslider",
        "slider.value = 7\nprint(slider.value, slider.comm is not None)",
        "out = widgets.Output()\nwith out:\n    print('captured by the Output widget')\nout",
    ], {}),
}


def build(name: str) -> nbformat.NotebookNode:
    cells, options = NOTEBOOKS[name]
    nb = new_notebook()
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        nb.cells.append(new_code_cell(source, metadata={"tags": tags} if tags else {}))
    nb.metadata["kernelspec"] = {"name": "ipymini", "display_name": "Python 3 (ipymini)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    if options:
        nb.metadata["ipymini_test"] = options
    return nb


def main() -> int:
    import notebook_runner

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--kernel", default="ipymini")
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.only or NOTEBOOKS:
        nb = notebook_runner.execute(build(name), kernel_name=args.kernel)
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        nb.metadata.pop("language_info", None)
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, out / f"{name}.ipynb")
        print("wrote", out / f"{name}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
