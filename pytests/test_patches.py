"""ipymini's one list of patches (ipymini/patches.py): what it changes outside its own objects, and
that every change can be undone."""

import ast
import getpass
import subprocess
import sys

import pytest
from harness import KernelHarness, value

from ipymini import patches

# what a running kernel has patched by the time it answers its first request
AT_STARTUP = {"sys.stdout", "sys.stderr", "sys.displayhook", "builtins.input", "getpass.getpass",
              "asyncio.run", "asyncio.runners.run", "asyncio.runners.Runner.run",
              "asyncio.base_events.BaseEventLoop.run_until_complete",
              "asyncio.base_events.BaseEventLoop.run_forever", "os.system", "subprocess.Popen.wait",
              "os.waitpid",
              "comm.create_comm", "comm.get_comm_manager", "sys.modules[ipykernel.zmqshell]"}


@pytest.fixture
def clean_patches():
    saved = list(patches._applied)
    patches._applied.clear()
    yield
    patches.restore_all()
    patches._applied[:] = saved


def test_patch_and_restore_a_module_attribute_a_class_attribute_and_a_dict_item(clean_patches):
    original_getpass, original_wait = getpass.getpass, subprocess.Popen.__dict__["wait"]
    had_module = "ipykernel.zmqshell" in sys.modules
    patches.patch(getpass, "getpass", lambda prompt="": "secret")
    patches.patch(subprocess.Popen, "wait", lambda self, timeout=None: 0)
    if not had_module:
        patches.patch(sys.modules, "ipykernel.zmqshell", object())
    assert getpass.getpass() == "secret" and subprocess.Popen.wait(None) == 0
    assert patches.applied()[:2] == ["getpass.getpass", "subprocess.Popen.wait"]
    patches.restore_all()
    assert getpass.getpass is original_getpass
    assert subprocess.Popen.__dict__["wait"] is original_wait
    assert ("ipykernel.zmqshell" in sys.modules) == had_module
    assert patches.applied() == []


def test_a_target_changed_again_by_someone_else_is_left_alone(clean_patches):
    original = getpass.getpass
    patches.patch(getpass, "getpass", lambda prompt="": "ours")
    theirs = lambda prompt="": "theirs"  # noqa: E731
    getpass.getpass = theirs
    try:
        patches.restore_all()
        assert getpass.getpass is theirs
    finally:
        getpass.getpass = original


def test_an_undeclared_target_is_refused(clean_patches):
    import json

    with pytest.raises(ValueError, match="json.dumps is not in ipymini's list of patches"):
        patches.patch(json, "dumps", lambda obj: "")
    assert patches.applied() == []


def test_unpatch_puts_one_original_back_at_once_and_forgets_it(clean_patches):
    original_getpass, original_hook = getpass.getpass, sys.excepthook
    first = patches.patch(getpass, "getpass", lambda prompt="": "kept")
    second = patches.patch(sys, "excepthook", lambda *exc: None)
    patches.unpatch(second)
    assert sys.excepthook is original_hook and patches.applied() == ["getpass.getpass"]
    patches.unpatch(second)  # a second time: nothing left to do
    theirs = lambda prompt="": "theirs"  # noqa: E731
    getpass.getpass = theirs  # changed again since: left as it is, and forgotten
    try:
        patches.unpatch(first)
        assert getpass.getpass is theirs and patches.applied() == []
    finally:
        getpass.getpass = original_getpass


def test_assign_sets_a_declared_target_with_nothing_to_undo(clean_patches):
    import asyncio

    class MyRunner(asyncio.Runner):  # an object's attribute is named by the class PATCHES declares
        pass

    class Plain:
        pass

    runner = MyRunner()
    patches.assign(runner, "_interrupt_count", 5)
    assert runner._interrupt_count == 5 and patches.applied() == []
    with pytest.raises(ValueError, match=r"test_patches\.test_assign.*\.Plain\(\)\._x is not in ipymini's"):
        patches.assign(Plain(), "_x", 1)


def test_after_import_waits_for_the_import_itself(tmp_path, monkeypatch):
    """A library probing for a module (importlib.util.find_spec) does not use up the hook."""
    import importlib.util

    (tmp_path / "probed_module_27.py").write_text("value = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    patches.after_import("probed_module_27", seen.append)
    assert importlib.util.find_spec("probed_module_27") is not None and seen == []
    import probed_module_27

    assert seen == [probed_module_27]
    assert not any(getattr(f, "name", None) == "probed_module_27" for f in sys.meta_path)
    del sys.modules["probed_module_27"]


def test_every_declared_patch_says_why():
    assert all(isinstance(why, str) and len(why) > 10 for why in patches.PATCHES.values())


def test_a_running_kernel_patches_what_the_list_says_and_restores_it():
    k = KernelHarness()
    try:
        applied = set(ast.literal_eval(value(k, "__import__('ipymini.patches').patches.applied()")))
        assert AT_STARTUP <= applied <= set(patches.PATCHES)
        # threads keep Python's rules unless IPYMINI_THREAD_OUTPUT=starter (test_thread_routing.py)
        assert not applied & {"threading.Thread.start", "concurrent.futures.thread.ThreadPoolExecutor.submit"}
        k.run_ok("import pdb")  # patched when first imported
        assert "pdb.Pdb" in ast.literal_eval(value(k, "__import__('ipymini.patches').patches.applied()"))
        # put every original back (as shutdown does), then look: results come through user_expressions
        reply, _ = k.execute(
            "from ipymini import patches as _p; _p.restore_all()\n"
            "import builtins, threading, asyncio, os, sys, pdb, comm\n"
            "_restored = [builtins.input.__module__, threading.Thread.start.__module__,\n"
            "             asyncio.run.__module__, os.system.__module__ if hasattr(os.system, '__module__') else '',\n"
            "             sys.stdout is sys.__stdout__, pdb.Pdb.__module__, comm.create_comm.__module__,\n"
            "             'ipykernel.zmqshell' in sys.modules, _p.applied()]",
            user_expressions={"r": "_restored"})
        assert reply["content"]["status"] == "ok", reply["content"]
        restored = ast.literal_eval(reply["content"]["user_expressions"]["r"]["data"]["text/plain"])
        assert restored[0] == "builtins" and restored[1] == "threading"
        assert restored[2] == "asyncio.runners" and restored[3] in ("posix", "nt", "")
        assert restored[4] is True and restored[5] == "pdb" and restored[6] == "comm"
        assert restored[7] is False and restored[8] == []
    finally:
        k.stop()
