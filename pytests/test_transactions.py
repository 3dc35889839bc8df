"""Transactional cells: %rollback on|off, %%transaction, IPYMINI_ROLLBACK (transactions.py)."""

import time

import pytest

from harness import KernelHarness, of_type, stream_text


def values(kernel, expr: str) -> str:
    return stream_text(kernel.run_ok(f"print({expr})")).strip()


@pytest.fixture
def rollback_on(kernel):
    kernel.run_ok("%rollback on")
    yield kernel
    kernel.run_ok("%rollback off")


def test_failing_cell_with_rollback_on_restores_bindings(rollback_on):
    kernel = rollback_on
    kernel.run_ok("tx_a = 1\ntx_b = [1]\ntx_keep = 'kept'")
    reply, msgs = kernel.execute("tx_a = 2\ntx_new = 3\ndel tx_keep\ntx_b.append(2)\n1/0")
    content = reply["content"]
    assert content["status"] == "error"
    assert (content["ename"], content["evalue"]) == ("ZeroDivisionError", "division by zero")
    [err] = of_type(msgs, "error")
    note = err["content"]["traceback"][-1]
    assert "Rolled back" in note and "tx_new" in note and "tx_a" in note and "tx_keep" in note
    assert content["traceback"] == err["content"]["traceback"]
    # rebound and deleted names are back, the new name is gone; the in-place append is not undone
    assert values(kernel, "tx_a, tx_keep, 'tx_new' in globals(), tx_b") == "1 kept False [1, 2]"


def test_rollback_keeps_ipython_bookkeeping(rollback_on):
    kernel = rollback_on
    kernel.run_ok("40 + 2")
    reply, _ = kernel.execute("tx_x = 1\nraise KeyError('k')")
    n = reply["content"]["execution_count"]
    out = values(kernel, f"_, 'raise KeyError' in _i{n}, 'raise KeyError' in In[{n}], _ih is In")
    assert out == "42 True True True"


def test_successful_cell_with_rollback_on_keeps_its_names(rollback_on):
    rollback_on.run_ok("tx_ok = 5")
    assert values(rollback_on, "tx_ok") == "5"


def test_rollback_off_is_the_old_behavior(kernel):
    assert "off" in stream_text(kernel.run_ok("%rollback"))
    reply, msgs = kernel.execute("tx_off = 1\nraise ValueError('boom')")
    assert reply["content"]["status"] == "error"
    assert not any("Rolled back" in line for line in reply["content"]["traceback"])
    assert values(kernel, "tx_off") == "1"


def test_transaction_cell_magic(kernel):
    kernel.run_ok("tx_t = 'before'")
    reply, msgs = kernel.execute("%%transaction\ntx_t = 'after'\ntx_t2 = 1\nraise RuntimeError('no')")
    assert (reply["content"]["status"], reply["content"]["ename"]) == ("error", "RuntimeError")
    assert "Rolled back" in of_type(msgs, "error")[0]["content"]["traceback"][-1]
    assert values(kernel, "tx_t, 'tx_t2' in globals()") == "before False"
    # a successful transaction keeps its names, shows its result and may await
    msgs = kernel.run_ok("%%transaction\nimport asyncio\ntx_t3 = await asyncio.sleep(0, 'awaited')\ntx_t3")
    assert of_type(msgs, "execute_result")[0]["content"]["data"]["text/plain"] == "'awaited'"
    # only that cell was transactional
    kernel.execute("tx_t4 = 1\n1/0")
    assert values(kernel, "tx_t4") == "1"


def test_transaction_through_run_cell_magic(kernel):
    reply, _ = kernel.execute("get_ipython().run_cell_magic('transaction', '', 'tx_m = 1\\n1/0')")
    assert reply["content"]["status"] == "error"
    assert values(kernel, "'tx_m' in globals()") == "False"


def test_bad_rollback_argument(kernel):
    reply, _ = kernel.execute("%rollback sideways")
    assert (reply["content"]["status"], reply["content"]["ename"]) == ("error", "UsageError")


@pytest.mark.parametrize("how", [{"env": {"IPYMINI_ROLLBACK": "1"}},
                                 {"extra_args": ["--IPyMini.rollback=True"]}], ids=["env", "config"])
def test_kernel_wide_rollback(how):
    k = KernelHarness(**how)
    try:
        k.run_ok("tx_env = 1")
        reply, _ = k.execute("tx_env = 2\nundefined_name")
        assert reply["content"]["ename"] == "NameError"
        assert values(k, "tx_env") == "1"
    finally:
        k.stop()


def test_snapshot_and_rollback_are_cheap():
    """Unit check of the cost: a shallow copy of a 100k-name namespace and its rollback."""
    import time
    from types import SimpleNamespace

    from ipymini.namespace.transactions import Transactions

    ns = {f"v{i}": i for i in range(100_000)}
    tx = Transactions(SimpleNamespace(user_ns=ns, config={}))
    t0 = time.perf_counter()
    tx.begin()
    ns["v1"], ns["added"] = "changed", 1
    tx.end(failed=True)
    assert ns["v1"] == 1 and "added" not in ns
    assert time.perf_counter() - t0 < 1.0


def test_transactions_belong_to_their_shell_thread(kernel):
    """A subshell's error during a parent's %%transaction neither fails nor rolls back the parent."""

    sub = kernel.create_subshell()
    try:
        parent = kernel.submit("%%transaction\nimport time\ntx_parent = 1\ntime.sleep(1.0)")
        time.sleep(0.3)
        child = kernel.submit("tx_child = 1\n1/0", sub)
        replies, iopub = kernel.wait_all([parent, child])
        assert replies[parent]["content"]["status"] == "ok"
        assert replies[child]["content"]["status"] == "error"
        assert not any("Rolled back" in line for line in replies[child]["content"]["traceback"])
        assert values(kernel, "tx_parent, tx_child") == "1 1"
    finally:
        kernel.control("delete_subshell_request", {"subshell_id": sub})


def test_interrupt_reaches_a_transaction_cell(kernel):
    """The cell inside %%transaction is user code run by the kernel's magic: an interrupt stops it."""
    import time

    msg_id = kernel.kc.execute("%%transaction\nimport time\nprint('GO', flush=True)\nwhile True:\n    pass")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        msg = kernel.kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            break
    kernel.km.interrupt_kernel()
    reply = kernel.shell_reply(msg_id, timeout=10)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    kernel.iopub_until_idle(msg_id)
