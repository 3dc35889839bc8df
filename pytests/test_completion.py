"""complete_request through IPython's completer: spans in code points, types, env flags, time budget."""

import time

import pytest
from harness import KernelHarness


def complete(kernel, code, cursor_pos=None, timeout=20):
    reply, msgs = kernel.request("complete_request", {
        "code": code, "cursor_pos": len(code) if cursor_pos is None else cursor_pos}, timeout=timeout)
    content = reply["content"]
    assert content["status"] == "ok", content
    return content


def test_matches_and_span(kernel):
    kernel.run_ok("alpha_value = 1\nalpha_other = 2")
    c = complete(kernel, "x = alpha_")
    assert {"alpha_value", "alpha_other"} <= set(c["matches"])
    assert (c["cursor_start"], c["cursor_end"]) == (4, 10)


def test_cursor_in_the_middle_of_the_code(kernel):
    kernel.run_ok("beta_value = 1")
    code = "beta_\nprint(1)"
    c = complete(kernel, code, cursor_pos=5)
    assert "beta_value" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (0, 5)


def test_non_ascii_positions_are_code_points(kernel):
    kernel.run_ok("ñame = 1")
    code = "ñame = 1\nña"
    c = complete(kernel, code)
    assert "ñame" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (9, 11)  # code points, not UTF-8 or UTF-16 units
    code = "s = '😀😀'; ña"
    c = complete(kernel, code)
    assert "ñame" in c["matches"]
    assert (c["cursor_start"], c["cursor_end"]) == (len(code) - 2, len(code))
    assert code[c["cursor_start"]:c["cursor_end"]] == "ña"


def test_attribute_after_emoji(kernel):
    code = "'😀'.upp"
    c = complete(kernel, code)
    start, end = c["cursor_start"], c["cursor_end"]
    assert end == len(code)
    # whichever completer answered, replacing the span must give '😀'.upper
    assert any(code[:start] + m + code[end:] == "'😀'.upper" for m in c["matches"])


def test_experimental_types_and_signatures():
    # types and signatures come from jedi: a budget it cannot run out of on a busy machine (with the
    # default budget a slow jedi is cut off and the names come typed "variable" by IPython's matcher)
    k = KernelHarness(env={"IPYMINI_USE_JEDI": "1", "IPYMINI_COMPLETION_TIMEOUT": "30"})
    try:
        k.run_ok("def gamma_func(a, b=2): pass\ngamma_var = 3")
        complete(k, "gamma_", timeout=60)  # jedi's first run (typeshed): IPython stops typing after 0.4 s
        c = complete(k, "gamma_", timeout=60)
        types = c["metadata"]["_jupyter_types_experimental"]
        assert [t["text"] for t in types] == c["matches"]
        by_text = {t["text"]: t for t in types}
        assert by_text["gamma_func"]["type"] == "function"
        assert "a" in by_text["gamma_func"]["signature"]
        assert by_text["gamma_var"]["type"] in ("instance", "statement", "variable")
        for t in types:
            assert (t["start"], t["end"]) == (c["cursor_start"], c["cursor_end"])
    finally:
        k.stop()


def test_no_matches(kernel):
    c = complete(kernel, "zzz_nothing_like_this_")
    assert c["matches"] == []
    assert c["cursor_start"] == c["cursor_end"] == len("zzz_nothing_like_this_")


def test_import_completion_sees_modules_added_since_the_last_one(kernel, tmp_path):
    """Module lists are reused between completions, but a new module shows at once."""
    kernel.run_ok(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})")
    (tmp_path / "ipymini_probe_one.py").write_text("")
    assert "ipymini_probe_one" in complete(kernel, "import ipymini_probe_")["matches"]
    time.sleep(0.01)  # a later mtime for the directory
    (tmp_path / "ipymini_probe_two.py").write_text("")
    matches = complete(kernel, "import ipymini_probe_")["matches"]
    assert {"ipymini_probe_one", "ipymini_probe_two"} <= set(matches)
    kernel.run_ok(f"sys.path.remove({str(tmp_path)!r})")


def test_magics_and_paths(kernel):
    c = complete(kernel, "%tim")
    assert "%time" in c["matches"] or "%timeit" in c["matches"]


@pytest.mark.parametrize("attr", ["__dir__", "__getattr__"])
def test_slow_object_is_cut_off(kernel, attr):
    body = ("    def __dir__(self):\n        time.sleep(30)\n        return ['zeta']\n" if attr == "__dir__"
            else "    def __getattr__(self, name):\n        time.sleep(30)\n        raise AttributeError(name)\n")
    kernel.run_ok("import time\nclass Slow:\n" + body + "slow = Slow()")
    t0 = time.monotonic()
    reply, msgs = kernel.request("complete_request", {"code": "slow.", "cursor_pos": 5}, timeout=15)
    elapsed = time.monotonic() - t0
    assert elapsed < 6, elapsed  # budget 1.5 s (plus scheduling noise), never the 30 s sleep
    assert reply["content"]["status"] == "ok"
    assert isinstance(reply["content"]["matches"], list)
    assert [m["msg_type"] for m in msgs] == ["status", "status"]  # the cut-off is not reported as an error
    msgs = kernel.run_ok("print('alive')")
    assert any(m["msg_type"] == "stream" and m["content"]["text"] == "alive\n" for m in msgs)


def test_completion_keeps_the_users_alarm(kernel):
    kernel.run_ok(
        "import signal\nfired = []\n"
        "signal.signal(signal.SIGALRM, lambda *a: fired.append(1))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.8)")
    complete(kernel, "pri")
    time.sleep(1.2)
    reply, _ = kernel.execute("", user_expressions={"f": "len(fired)"})
    assert reply["content"]["user_expressions"]["f"]["data"]["text/plain"] == "1"


def test_env_flags_turn_off_jedi_and_types():
    k = KernelHarness(env={"IPYMINI_USE_JEDI": "0", "IPYMINI_EXPERIMENTAL_COMPLETIONS": "0",
                           "IPYMINI_COMPLETION_TIMEOUT": "0.3"})
    try:
        reply, _ = k.execute("", user_expressions={"j": "get_ipython().Completer.use_jedi"})
        assert reply["content"]["user_expressions"]["j"]["data"]["text/plain"] == "False"
        k.run_ok("delta_value = 1")
        c = complete(k, "delta_")
        assert c["matches"] == ["delta_value"]
        assert c["metadata"] == {}
        # the budget is configurable
        k.run_ok("import time\nclass Slow:\n    def __dir__(self):\n        time.sleep(30)\n"
                 "        return []\nslow = Slow()")
        t0 = time.monotonic()
        complete(k, "slow.")
        assert time.monotonic() - t0 < 1.2
    finally:
        k.stop()


def test_env_flag_turns_on_jedi():
    k = KernelHarness(env={"IPYMINI_USE_JEDI": "1", "IPYMINI_COMPLETION_TIMEOUT": "5"})
    try:
        reply, _ = k.execute("", user_expressions={"j": "get_ipython().Completer.use_jedi"})
        assert reply["content"]["user_expressions"]["j"]["data"]["text/plain"] == "True"
        c = complete(k, "import o")
        assert "os" in c["matches"]
        types = {t["text"]: t["type"] for t in c["metadata"]["_jupyter_types_experimental"]}
        assert types.get("os") in ("module", "<unknown>")
    finally:
        k.stop()


def test_namespace_names_whatever_jedi_does(tmp_path):
    """With jedi on, IPython takes namespace names from jedi alone; the kernel adds its own, so names
    complete when jedi is slow, fails or raises (ipykernel's `al` -> only `%alias` gap)."""
    k = KernelHarness(env={"IPYMINI_USE_JEDI": "1", "IPYMINI_COMPLETION_TIMEOUT": "0"})
    try:
        k.run_ok("alpha = albert = 5")
        c = complete(k, "al", timeout=60)  # no budget: jedi answers, however slow its first time is
        assert {"alpha", "albert", "all", "%alias"} <= set(c["matches"])
        types = {t["text"]: t["type"] for t in c["metadata"]["_jupyter_types_experimental"]}
        assert types["albert"] == "instance"  # jedi answered: its entry (with the type) is kept
        # jedi's on-disk parse cache damaged (a write cut off): read as a miss and written anew, whole
        k.run_ok(f"import jedi, parso.cache, pathlib\njedi.settings.cache_directory = {str(tmp_path)!r}\n"
                 "parso.cache.parser_cache.clear()")
        complete(k, "al", timeout=60)
        k.run_ok("pkls = list(pathlib.Path(jedi.settings.cache_directory).rglob('*.pkl'))\n"
                 "assert pkls\nfor p in pkls:\n    p.write_bytes(p.read_bytes()[:100])\n"
                 "parso.cache.parser_cache.clear()")
        c = complete(k, "al", timeout=60)
        types = {t["text"]: t["type"] for t in c["metadata"]["_jupyter_types_experimental"]}
        assert types["albert"] == "instance"
        k.run_ok("import pickle\nfor p in pathlib.Path(jedi.settings.cache_directory).rglob('*'):\n"
                 "    assert p.suffix != '.tmp'\n    if p.suffix == '.pkl':\n        pickle.loads(p.read_bytes())")
        # jedi broken outright: IPython drops its matcher, the names still come
        k.run_ok("import jedi\ndef broken(*a, **k):\n    raise RuntimeError('jedi is broken')\n"
                 "jedi.Interpreter = broken")
        c = complete(k, "x = al")
        assert {"alpha", "albert", "all"} <= set(c["matches"])
        assert (c["cursor_start"], c["cursor_end"]) == (4, 6)
        # only plain names: not attributes, not inside a string
        assert not {"alpha", "albert"} & set(complete(k, "int.al")["matches"])
        assert not {"alpha", "albert"} & set(complete(k, "s = 'al")["matches"])
    finally:
        k.stop()


def test_jedi_module_names_are_reused_per_directory_until_it_changes(tmp_path):
    """In-process: jedi's own `import x<Tab>` listing is cached per directory, and a new module in it
    shows at once (the directory's mtime changed)."""
    import os

    from ipymini.shell.completion import _JediModuleNames

    scans = []

    def scan(inference_state, paths):
        scans.append(paths)
        return sorted(os.path.splitext(n)[0] for p in paths for n in os.listdir(p))

    names = _JediModuleNames(scan).names
    (tmp_path / "alpha.py").write_text("")
    assert names(None, [str(tmp_path)]) == ["alpha"]
    assert names(None, [str(tmp_path)]) == ["alpha"] and len(scans) == 1  # reused
    stamp = os.stat(tmp_path).st_mtime_ns
    (tmp_path / "beta.py").write_text("")
    os.utime(tmp_path, ns=(stamp + 10**7, stamp + 10**7))  # a later mtime, whatever the clock's grain
    assert names(None, [str(tmp_path)]) == ["alpha", "beta"] and len(scans) == 2


def test_completion_after_thousands_of_cells_still_offers_every_name(kernel):
    """jedi is not shown IPython's per-cell `_iN` names (30,000 of them made every completion spend its
    whole budget in jedi): completions are unchanged, `_iN` still complete, and one the code
    mentions is still inferred."""
    kernel.run_ok("for _n in range(100000, 130000):\n    globals()[f'_i{_n}'] = 'x'")
    try:
        assert "print" in complete(kernel, "pri")["matches"]
        assert "_i129999" in complete(kernel, "_i12999")["matches"]
        assert "upper" in complete(kernel, "_i100012.upp")["matches"]
    finally:
        kernel.run_ok("for _n in range(100000, 130000):\n    del globals()[f'_i{_n}']")
