"""inspect_request, is_complete_request and history_request through IPython."""

import re
import tempfile

import pytest
from harness import KernelHarness


def ok(kernel, msg_type, **content):
    reply, msgs = kernel.request(msg_type, content)
    if msg_type != "is_complete_request":  # whose status is the answer
        assert reply["content"]["status"] == "ok", reply["content"]
    assert [m["msg_type"] for m in msgs] == ["status", "status"]
    return reply["content"]


# -- inspect --

def plain(content):
    return re.sub(r"\x1b\[[0-9;]*m", "", content["data"]["text/plain"])


def test_inspect_detail_levels(kernel):
    kernel.run_ok("def documented(a, b=1):\n    'The doc line.'\n    return a + b  # SOURCE_MARK")
    c0 = ok(kernel, "inspect_request", code="documented", cursor_pos=3, detail_level=0)
    assert c0["found"] is True
    text = plain(c0)
    assert "The doc line." in text and "documented(a, b=1)" in text
    assert "SOURCE_MARK" not in text
    c1 = ok(kernel, "inspect_request", code="documented", cursor_pos=3, detail_level=1)
    assert "SOURCE_MARK" in plain(c1)
    assert c0["metadata"] == {} and c1["found"] is True


def test_inspect_name_under_cursor_inside_a_call(kernel):
    code = "x = zip(a, b)"
    c = ok(kernel, "inspect_request", code=code, cursor_pos=code.index("zip") + 2, detail_level=0)
    assert c["found"] is True
    assert "zip" in c["data"]["text/plain"]


def test_inspect_unknown_name(kernel):
    c = ok(kernel, "inspect_request", code="no_such_name_here", cursor_pos=5, detail_level=0)
    assert c == {"status": "ok", "found": False, "data": {}, "metadata": {}}


def test_inspect_html_when_the_html_pager_is_on(kernel):
    c = ok(kernel, "inspect_request", code="len", cursor_pos=3, detail_level=0)
    assert "text/html" not in c["data"]  # IPython's default, as in ipykernel
    kernel.run_ok("get_ipython().enable_html_pager = True")
    try:
        c = ok(kernel, "inspect_request", code="len", cursor_pos=3, detail_level=0)
        assert "text/plain" in c["data"] and "text/html" in c["data"]
    finally:
        kernel.run_ok("get_ipython().enable_html_pager = False")


def test_inspect_omit_sections(kernel):
    kernel.run_ok("def omitted():\n    'Omit me.'")
    c = ok(kernel, "inspect_request", code="omitted", cursor_pos=3, detail_level=0)
    assert "Omit me." in c["data"]["text/plain"]
    c = ok(kernel, "inspect_request", code="omitted", cursor_pos=3, detail_level=0,
           omit_sections=["Docstring"])
    assert "Omit me." not in c["data"]["text/plain"]


# -- is_complete --

@pytest.mark.parametrize("code, status, indent", [
    ("x = 1", "complete", None),
    ("print('hi')\n", "complete", None),
    ("for i in range(3):", "incomplete", "    "),
    ("def f():\n    if True:", "incomplete", "        "),
    ("x = [1,\n", "incomplete", ""),
    ("%%time\nx = 1\n", "incomplete", ""),
    ("1 +* 2 )", "invalid", None),
])
def test_is_complete(kernel, code, status, indent):
    c = ok(kernel, "is_complete_request", code=code)
    assert c["status"] == status, c
    if indent is None:
        assert "indent" not in c
    else:
        assert c["indent"] == indent


# -- history --

def history(kernel, **content):
    content.setdefault("output", False)
    content.setdefault("raw", True)
    return ok(kernel, "history_request", **content)["history"]


def test_history_across_sessions_and_access_types():
    ipdir = tempfile.mkdtemp(prefix="ipymini-hist-")
    k = KernelHarness(env={"IPYTHONDIR": ipdir})
    try:
        k.run_ok("hist_a = 1")
        k.run_ok("hist_a + 41")
        k.run_ok("hist_b = 'x'")
        k.run_ok("hist_a + 41")
        [[first, _, _]] = history(k, hist_access_type="tail", n=1)
        tail = history(k, hist_access_type="tail", n=2, output=True)
        assert tail == [[first, 3, ["hist_b = 'x'", None]], [first, 4, ["hist_a + 41", "42"]]]
        rng = history(k, hist_access_type="range", session=0, start=1, stop=3, output=True)
        assert rng == [[first, 1, ["hist_a = 1", None]], [first, 2, ["hist_a + 41", "42"]]]
        # a missing start means from the first cell (never IPython's empty line 0)
        assert [h[1] for h in history(k, hist_access_type="range", session=0)] == [1, 2, 3, 4]
        found = history(k, hist_access_type="search", pattern="hist_a*")
        assert found == [[first, 1, "hist_a = 1"], [first, 2, "hist_a + 41"], [first, 4, "hist_a + 41"]]
        unique = history(k, hist_access_type="search", pattern="hist_a*", unique=True)
        assert [h[2] for h in unique] == ["hist_a = 1", "hist_a + 41"]
        assert history(k, hist_access_type="search", pattern="hist_a*", n=1) == [[first, 4, "hist_a + 41"]]
        assert history(k, hist_access_type="search", pattern="hist_?*", output=True)[-1] == \
            [first, 4, ["hist_a + 41", "42"]]
    finally:
        k.stop()
    k = KernelHarness(env={"IPYTHONDIR": ipdir})
    try:
        k.run_ok("second = 2")
        [[current, line, text]] = history(k, hist_access_type="range", session=0)
        assert (line, text) == (1, "second = 2")
        assert current == first + 1
        assert history(k, hist_access_type="range", session=current) == [[current, 1, "second = 2"]]
        prev = history(k, hist_access_type="range", session=-1, start=1, stop=3)
        assert prev == [[first, 1, "hist_a = 1"], [first, 2, "hist_a + 41"]]
        tail = history(k, hist_access_type="tail", n=2)
        assert tail == [[first, 4, "hist_a + 41"], [current, 1, "second = 2"]]
        found = history(k, hist_access_type="search", pattern="second*")
        assert found == [[current, 1, "second = 2"]]
    finally:
        k.stop()


def test_history_raw_versus_transformed(kernel):
    kernel.run_ok("%time hist_magic = 1")
    [[_, _, raw]] = history(kernel, hist_access_type="tail", n=1, raw=True)
    [[_, _, parsed]] = history(kernel, hist_access_type="tail", n=1, raw=False)
    assert raw == "%time hist_magic = 1"
    assert "run_line_magic" in parsed


def test_history_bad_requests_get_error_replies(kernel):
    for content in ({"hist_access_type": "sideways"}, {"hist_access_type": "tail", "n": "ten"},
                    {"hist_access_type": "search", "pattern": 5}):
        reply, _ = kernel.request("history_request", {"output": False, "raw": True, **content})
        assert reply["content"]["status"] == "error"
        assert reply["content"]["history"] == []
    assert kernel.run_ok("1")  # still serving
