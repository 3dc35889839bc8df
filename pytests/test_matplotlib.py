"""matplotlib shows figures inline by default (MPLBACKEND set as ipykernel does), at no startup cost."""

import base64

from harness import KernelHarness, of_type, value

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def pngs(msgs):
    return [base64.b64decode(m["content"]["data"]["image/png"]) for m in of_type(msgs, "display_data")
            if "image/png" in m["content"]["data"]]


def test_nothing_imported_at_startup(kernel):
    assert value(kernel, "'matplotlib' in __import__('sys').modules") == "False"
    assert value(kernel, "__import__('os').environ['MPLBACKEND']") == \
        "'module://matplotlib_inline.backend_inline'"


def test_plot_is_shown_at_the_end_of_the_cell(kernel):
    msgs = kernel.run_ok("import matplotlib.pyplot as plt\nprint('printed')\nplt.plot([1, 3, 2])")
    [png] = pngs(msgs)
    assert png.startswith(PNG_MAGIC)
    types = [m["msg_type"] for m in msgs]
    assert types.index("stream") < types.index("execute_result") < types.index("display_data")
    # the figure was closed: the next cell shows nothing
    assert pngs(kernel.run_ok("x = 1")) == []


def test_two_figures_and_explicit_inline_magic(kernel):
    msgs = kernel.run_ok("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                         "plt.figure(); plt.plot([1, 2])\nplt.figure(); plt.bar([1, 2], [3, 4]);")
    assert len(pngs(msgs)) == 2


def test_user_backend_choice_wins():
    k = KernelHarness(env={"MPLBACKEND": "agg"})
    try:
        msgs = k.run_ok("import matplotlib\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
                        "print(matplotlib.get_backend())")
        assert pngs(msgs) == []
        assert "agg" in "".join(m["content"].get("text", "") for m in msgs).lower()
    finally:
        k.stop()
