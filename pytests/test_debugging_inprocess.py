"""The debugging package in-process: DAP framing and the cell file names breakpoints are set in.
Through the real kernel and debugpy (the variable explorer needs pydevd loaded, which a kernel does
and a test process should not): test_debugger.py."""

import pytest

from ipymini.debugging import cellfile
from ipymini.debugging.dap import DAPError, FrameReader, encode, response


def test_dap_frames_split_however_the_bytes_arrive():
    messages = [{"seq": 1, "type": "request", "command": "initialize"},
                {"seq": 2, "type": "event", "event": "output", "body": {"output": "é\r\n\r\n"}}]
    stream = b"".join(encode(m) for m in messages)
    for size in (1, 7, len(stream)):
        reader, got = FrameReader(), []
        for i in range(0, len(stream), size):
            got += reader.feed(stream[i:i + size])
        assert got == messages and not reader.buffer


def test_a_dap_frame_without_its_length_is_refused():
    with pytest.raises(DAPError, match="Content-Length"):
        FrameReader().feed(b"X-Other: 1\r\n\r\n{}")


def test_a_response_answers_its_request():
    request = {"seq": 5, "type": "request", "command": "evaluate"}
    ok = response(request, body={"result": "1"})
    assert (ok["type"], ok["request_seq"], ok["command"], ok["success"], ok["body"]) == (
        "response", 5, "evaluate", True, {"result": "1"})
    failed = response(request, success=False, message="not stopped")
    assert failed["success"] is False and failed["message"] == "not stopped"


def test_cell_file_names_are_stable_per_code_and_recognised():
    a, b = cellfile.cell_filename("x = 1\n"), cellfile.cell_filename("x = 2\n")
    assert a == cellfile.cell_filename("x = 1\n") and a != b
    assert a.startswith(cellfile.tmp_prefix()) and a.endswith(".py")
    assert cellfile.is_cell_file(a) and not cellfile.is_cell_file("/usr/lib/python3/os.py")


def test_cell_file_names_are_ipykernels():
    """JupyterLab sets breakpoints in the file name it computes the way ipykernel does (murmur2 of the
    code): the names must be the same."""
    compiler = pytest.importorskip("ipykernel.compiler")
    for code in ("x = 1\n", "print('é')\n", ""):
        assert cellfile.murmur2(code.encode()) == compiler.murmur2_x86(code, compiler.get_tmp_hash_seed())

