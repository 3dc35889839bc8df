"""Namespace checkpoints: %checkpoint save/restore/list/delete across kernel restarts (checkpoints.py)."""

import json
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from harness import KernelHarness, of_type, stream_text

SETUP = """\
import numpy as np
import os.path as osp
from math import sqrt
import socket
ck_int = 42
ck_list = [1, 'two', [3.0]]
ck_arr = np.arange(6).reshape(2, 3)
ck_shared = [ck_list, ck_list]
def ck_scale(x, k=2):
    return x * k + ck_int
@staticmethod
def ck_static():
    return 'static'
class CkPoint:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)
class CkEmpty:
    pass
ck_point = CkPoint(1, 2)
ck_alias = ck_scale
ck_sock = socket.socket()
"""

CHECK = ("print(ck_int, ck_list, ck_arr.tolist(), ck_scale(1), ck_static.__func__(), CkPoint(1, 2) == ck_point, "
         "isinstance(ck_point, CkPoint), CkEmpty.__name__, ck_alias is ck_scale, np.__name__, osp.__name__, "
         "sqrt(9), ck_shared[0] is ck_shared[1], ck_scale.__globals__ is globals(), 'ck_sock' in globals())")


@pytest.fixture(scope="module")
def ckdir(tmp_path_factory):
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="module")
def kernel(ckdir):
    k = KernelHarness(env={"IPYMINI_CHECKPOINT_DIR": str(ckdir)})
    yield k
    k.stop()


def error_of(kernel, code):
    reply, msgs = kernel.execute(code)
    content = reply["content"]
    assert content["status"] == "error", content
    return content["ename"], "\n".join(content["traceback"]) + stream_text(msgs, "stderr")


def test_save_restart_restore(kernel, ckdir):
    kernel.run_ok(SETUP)
    msgs = kernel.run_ok("%checkpoint save full")
    assert "Saved checkpoint 'full'" in stream_text(msgs)
    assert "ck_sock" in stream_text(msgs, "stderr")  # the unpicklable socket is reported by name
    before = stream_text(kernel.run_ok(CHECK))
    assert (ckdir / "full.ipyckpt").exists()
    assert not [p for p in ckdir.iterdir() if p.name.endswith(".tmp")]

    fresh = KernelHarness(env={"IPYMINI_CHECKPOINT_DIR": str(ckdir)})
    try:
        msgs = fresh.run_ok("%checkpoint restore full")
        assert "Restored checkpoint 'full'" in stream_text(msgs)
        assert "ck_sock" in stream_text(msgs, "stderr")
        after = stream_text(fresh.run_ok(CHECK))
        assert after == before.replace("True\n", "False\n")  # all equal, except the socket is absent
        assert after.startswith("42 [1, 'two', [3.0]] [[0, 1, 2], [3, 4, 5]] 44 ")
        # a restored function and class can be saved again (their source is known in the new kernel)
        msgs = fresh.run_ok("%checkpoint save again")
        assert "ck_scale" not in stream_text(msgs, "stderr") and "CkEmpty" not in stream_text(msgs, "stderr")
    finally:
        fresh.stop()


def test_unsaveable_values_are_listed_by_name(kernel, ckdir):
    kernel.run_ok("import threading\nck_lock = threading.Lock()\nck_gen = (i for i in range(3))\n"
                  "ck_lambda = lambda: 1\nck_refs_lock = {'lock': ck_lock}\n"
                  "CkDyn = type('CkDyn', (), {})\nck_dyn = CkDyn()")
    msgs = kernel.run_ok("%checkpoint save unsaveable")
    err = stream_text(msgs, "stderr")
    for name in ("ck_lock", "ck_gen", "ck_lambda", "ck_refs_lock", "CkDyn"):
        assert name in err
    assert "ck_dyn: refers to CkDyn" in err  # an instance of a class that could not be saved
    header = json.loads((ckdir / "unsaveable.ipyckpt").read_bytes().split(b"\n")[1])
    assert {"ck_lock", "ck_gen", "ck_lambda", "ck_refs_lock"} <= set(header["unsaved"])
    assert header["format"] == 1 and header["python"]
    kernel.run_ok("del ck_lock, ck_gen, ck_lambda, ck_refs_lock, CkDyn, ck_dyn")


def test_restore_unknown_name(kernel):
    ename, text = error_of(kernel, "%checkpoint restore no_such_checkpoint")
    assert ename == "CheckpointError" and "no checkpoint named 'no_such_checkpoint'" in text


def _save(kernel, ckdir, name) -> Path:
    kernel.run_ok(f"ck_v = 'saved'\n%checkpoint save {name}")
    kernel.run_ok("ck_v = 'current'")
    return ckdir / f"{name}.ipyckpt"


def _assert_unchanged(kernel):
    assert stream_text(kernel.run_ok("print(ck_v)")).strip() == "current"


def test_truncated_checkpoint_is_refused(kernel, ckdir):
    path = _save(kernel, ckdir, "trunc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    ename, text = error_of(kernel, "%checkpoint restore trunc")
    assert ename == "CheckpointError" and "damaged" in text
    _assert_unchanged(kernel)
    path.write_bytes(data[:30])  # cut inside the header
    assert "damaged" in error_of(kernel, "%checkpoint restore trunc")[1]
    _assert_unchanged(kernel)


def test_foreign_file_is_refused(kernel, ckdir):
    (ckdir / "foreign.ipyckpt").write_bytes(b"\x80\x04K\x01.not a checkpoint")
    ename, text = error_of(kernel, "%checkpoint restore foreign")
    assert ename == "CheckpointError" and "not an ipymini checkpoint" in text


def test_other_python_version_is_refused(kernel, ckdir):
    path = _save(kernel, ckdir, "oldpy")
    magic, header, payload = path.read_bytes().split(b"\n", 2)
    h = json.loads(header)
    h["python_version"], h["python"] = [3, 99], "3.99.0"
    path.write_bytes(magic + b"\n" + json.dumps(h).encode() + b"\n" + payload)
    ename, text = error_of(kernel, "%checkpoint restore oldpy")
    assert ename == "CheckpointError" and "3.99.0" in text
    _assert_unchanged(kernel)


def test_failed_restore_leaves_namespace_untouched(kernel, ckdir):
    """A checkpoint that fails part-way (a module that no longer imports) changes no name at all."""
    kernel.run_ok("import json as ck_json")
    path = _save(kernel, ckdir, "badmod")
    magic, header, payload = path.read_bytes().split(b"\n", 2)
    h = json.loads(header)
    h["modules"]["ck_json"] = "no_such_module_ipymini"
    path.write_bytes(magic + b"\n" + json.dumps(h).encode() + b"\n" + payload)
    kernel.run_ok("del ck_json")
    ename, text = error_of(kernel, "%checkpoint restore badmod")
    assert "ck_json" in text and "unchanged" in text
    _assert_unchanged(kernel)
    assert stream_text(kernel.run_ok("print('ck_json' in globals())")).strip() == "False"


def test_list_and_delete(kernel, ckdir):
    kernel.run_ok("%checkpoint save listed")
    assert "listed" in stream_text(kernel.run_ok("%checkpoint list"))
    kernel.run_ok("%checkpoint delete listed")
    assert "listed" not in stream_text(kernel.run_ok("%checkpoint list"))
    assert error_of(kernel, "%checkpoint delete listed")[0] == "CheckpointError"
    assert error_of(kernel, "%checkpoint save ../escape")[0] == "CheckpointError"
    assert error_of(kernel, "%checkpoint")[0] == "UsageError"


def test_crash_mid_save_keeps_the_earlier_checkpoint(tmp_path, monkeypatch):
    """Unit check: a save that dies before os.replace leaves the old file and no temp file."""
    import os

    from ipymini.namespace import checkpoints

    main = ModuleType("__main__")
    shell = SimpleNamespace(user_ns={"x": 1}, user_ns_hidden={}, user_module=main, config={},
                            profile_dir=SimpleNamespace(location=str(tmp_path)))
    monkeypatch.setenv("IPYMINI_CHECKPOINT_DIR", str(tmp_path))
    cp = checkpoints.Checkpoints(shell)
    path, _, _ = cp.save("c")
    good = path.read_bytes()

    def crash(*args):
        raise OSError("simulated crash")

    shell.user_ns["x"] = 2
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        cp.save("c")
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ipyckpt"]
    assert cp.build(*cp.read("c")) == {"x": 1}
