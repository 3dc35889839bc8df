"""Fuzzing: malformed traffic on shell, control and stdin never executes code and never wedges the kernel.

Each hypothesis example is a burst of hostile messages; after it the kernel must still answer a valid
kernel_info on control and an execute_request on shell, and a sentinel file that every hostile message
tries to create must not exist. IPYMINI_FUZZ_EXAMPLES raises the example count for longer local runs.
"""

import json
import os
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_client.session import Session

from harness import KernelHarness, stream_text

EXAMPLES = int(os.environ.get("IPYMINI_FUZZ_EXAMPLES", "40"))
DELIM = b"<IDS|MSG>"
STATS = {"messages": 0, "bursts": 0}


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    k = KernelHarness()
    info = k.km.get_connection_info()
    ctx = zmq.Context.instance()
    socks = {}
    for channel in ("shell", "control", "stdin"):
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(f"tcp://{info['ip']}:{info[channel + '_port']}")
        socks[channel] = sock
    session = Session(key=info["key"], signature_scheme=info["signature_scheme"])
    sentinel = tmp_path_factory.mktemp("fuzz") / "executed"
    yield k, socks, session, sentinel
    for sock in socks.values():
        sock.close()
    print(f"\nfuzz: {STATS['messages']} messages in {STATS['bursts']} bursts, nothing executed")
    k.stop()


def evil_code(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').close()"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
msg_types = st.sampled_from(["execute_request", "complete_request", "inspect_request", "history_request",
                             "is_complete_request", "comm_open", "comm_msg", "comm_close", "input_reply",
                             "kernel_info_request", "shutdown_request", "interrupt_request",
                             "debug_request", "create_subshell_request", "delete_subshell_request",
                             "no_such_request", "", "x" * 300])


@st.composite
def hostile_message(draw, session, sentinel):
    """Frames of one malformed message (it must never run code, whatever its kind)."""
    kind = draw(st.sampled_from(["garbage", "bad_signature", "signed_bad_json", "signed_bad_shape",
                                 "huge", "no_delimiter"]))
    code = evil_code(sentinel)
    if kind == "garbage":
        return draw(st.lists(st.binary(max_size=200), min_size=1, max_size=8))
    if kind == "no_delimiter":
        return [json.dumps({"msg_type": "execute_request"}).encode(), json.dumps({"code": code}).encode()]
    header = session.msg_header(draw(msg_types))
    parts = [json.dumps(header, default=str).encode(), b"{}", b"{}",
             json.dumps({"code": code, "silent": False}).encode()]
    if kind == "bad_signature":
        sig = draw(st.sampled_from([b"", b"0" * 64, session.sign(parts)[::-1]]))
        return [DELIM, sig] + parts
    if kind == "signed_bad_json":
        index = draw(st.integers(0, 3))
        parts[index] = draw(st.binary(min_size=1, max_size=100)).replace(b"{", b"[") + b"{"
        return [DELIM, session.sign(parts)] + parts
    if kind == "signed_bad_shape":
        # well-signed, valid JSON, but never a runnable execute_request: wrong types or missing fields
        header = draw(st.one_of(
            st.just({}),
            st.fixed_dictionaries({"msg_type": json_values}),
            st.fixed_dictionaries({"msg_type": st.just("execute_request"), "msg_id": json_values}),
            st.just({**session.msg_header("execute_request"), "msg_id": 12}),
            st.just(dict(session.msg_header("execute_request"))),
        ))
        content = draw(st.one_of(
            json_values.filter(lambda v: not isinstance(v, dict)),
            st.fixed_dictionaries({"code": st.one_of(st.integers(), st.lists(st.just(code)), st.none())}),
            st.just({"silent": False, "codes": code}),
        ))
        parts = [json.dumps(header, default=str).encode(), json.dumps(draw(json_values)).encode(),
                 b"{}", json.dumps(content).encode()]
        extra = draw(st.lists(st.binary(max_size=50), max_size=3))  # stray buffers
        return [DELIM, session.sign(parts)] + parts + extra
    # huge: a valid, harmless request carrying megabytes of padding
    big = {"padding": "p" * draw(st.integers(1 << 20, 4 << 20))}
    parts = [json.dumps(session.msg_header("kernel_info_request"), default=str).encode(), b"{}", b"{}",
             json.dumps(big).encode()]
    return [DELIM, session.sign(parts)] + parts


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_hostile_bursts_never_execute_and_never_wedge(target, data):
    k, socks, session, sentinel = target
    burst = data.draw(st.lists(st.tuples(st.sampled_from(list(socks)), hostile_message(session, sentinel)),
                               min_size=1, max_size=6))
    for channel, frames in burst:
        socks[channel].send_multipart(frames)
    STATS["messages"] += len(burst)
    STATS["bursts"] += 1
    reply, _ = k.request("kernel_info_request", {}, channel="control", timeout=30)
    assert reply["content"]["status"] == "ok"
    assert stream_text(k.run_ok("print('ok')", timeout=30)) == "ok\n"
    assert not sentinel.exists(), "a hostile message executed code"
    for sock in socks.values():  # replies to the huge/unknown requests are not needed
        while sock.poll(0):
            sock.recv_multipart()
