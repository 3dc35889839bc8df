"""The memory guard's parts in-process (the real kernel is in test_memory_guard.py): finding the limit in
fake /proc and cgroup trees (v1, v2, nested, containers), the record the next kernel reads, giving
memory back, and glibc's account of its reusable memory."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

from ipymini.memory import limits, mallocstate, recovery
from ipymini.memory.lastcell import LastCell, first_line, path_for

GIB = 1 << 30
V1_UNLIMITED = "9223372036854771712"


def _tree(root: Path, cgroup: str, mountinfo: str, files: dict, meminfo_total_kb=8 << 20,
          available_kb=6 << 20) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    (root / "proc/self/statm").write_text("50000 25600 5120 1 0 40960 0\n")  # pages
    (root / "proc/self/status").write_text("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n")
    (root / "proc/meminfo").write_text(f"MemTotal: {meminfo_total_kb} kB\nMemFree: 1000 kB\n"
                                       f"MemAvailable: {available_kb} kB\n")
    for path, text in files.items():
        p = root / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


V1_MOUNTS = ("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n")
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
V1_STAT = ("cache 300\nrss 900\ntotal_cache 300\ntotal_rss 900\ntotal_active_file 100000\n"
           "total_inactive_file 200000\n")
V2_STAT = "anon 900\nfile 300000\nactive_file 100000\ninactive_file 200000\nshmem 0\n"


def test_v1_the_nearest_limited_ancestor(tmp_path):
    mem = "sys/fs/cgroup/memory"
    root = _tree(tmp_path, "5:cpu:/\n4:memory:/pod/kernel\n0::/\n", V1_MOUNTS, {
        f"{mem}/memory.limit_in_bytes": V1_UNLIMITED,
        f"{mem}/pod/memory.limit_in_bytes": str(GIB),
        f"{mem}/pod/memory.usage_in_bytes": "500000000\n",
        f"{mem}/pod/memory.stat": V1_STAT,
        f"{mem}/pod/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        f"{mem}/pod/kernel/memory.limit_in_bytes": V1_UNLIMITED,
    })
    found = limits.detect(None, root=str(root))
    cgroup, machine = found.budgets
    assert (cgroup.kind, cgroup.limit, cgroup.source) == ("cgroup", GIB, "cgroup /pod, memory.limit_in_bytes")
    assert cgroup.used() == 500000000 - 300000  # less the file cache the kernel would reclaim
    assert cgroup.oom_kills() == 3
    assert (machine.limit, machine.used()) == (8 << 30, 2 << 30)  # MemTotal less MemAvailable
    s = found.sample()
    assert s.kernel_anon == (25600 - 5120) * limits.PAGE and s.data == 40960 * limits.PAGE
    assert s.peak_resident == 204800 * 1024 and s.worst == 0
    assert s.spare == GIB - (500000000 - 300000) - limits.margin_for(GIB)
    found.close()


def test_v1_every_limited_cgroup_on_the_way_up_counts(tmp_path):
    mem = "sys/fs/cgroup/memory"
    files = {f"{mem}/memory.limit_in_bytes": V1_UNLIMITED}
    for path, limit, usage in (("a", 4 * GIB, 100), ("a/b", 2 * GIB, 100)):
        files.update({f"{mem}/{path}/memory.limit_in_bytes": str(limit),
                      f"{mem}/{path}/memory.usage_in_bytes": str(usage), f"{mem}/{path}/memory.stat": V1_STAT})
    root = _tree(tmp_path, "4:memory:/a/b\n", V1_MOUNTS, files)
    assert [b.limit for b in limits.cgroup_budgets(str(root))] == [2 * GIB, 4 * GIB]


def test_v2_memory_max(tmp_path):
    base = "sys/fs/cgroup"
    root = _tree(tmp_path, "0::/user.slice/kernel\n", V2_MOUNTS, {
        f"{base}/user.slice/memory.max": str(512 << 20),
        f"{base}/user.slice/memory.current": "300000000\n",
        f"{base}/user.slice/memory.stat": V2_STAT,
        f"{base}/user.slice/memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        f"{base}/user.slice/kernel/memory.max": "max\n",
        f"{base}/user.slice/kernel/memory.stat": V2_STAT,
    })
    (cgroup, _) = limits.detect(None, root=str(root)).budgets
    assert (cgroup.limit, cgroup.source) == (512 << 20, "cgroup /user.slice, memory.max")
    assert cgroup.used() == 300000000 - 300000 and cgroup.oom_kills() == 1


def test_a_container_sees_its_own_cgroup_as_the_root(tmp_path):
    """cgroup v2 with a cgroup namespace: /proc/self/cgroup says `/`, the mount is the container's."""
    base = "sys/fs/cgroup"
    root = _tree(tmp_path, "0::/\n", V2_MOUNTS, {f"{base}/memory.max": str(GIB),
                                                 f"{base}/memory.current": "1000\n",
                                                 f"{base}/memory.stat": V2_STAT})
    (cgroup, _) = limits.detect(None, root=str(root)).budgets
    assert cgroup.limit == GIB and cgroup.source == "cgroup /, memory.max"


def test_v1_without_a_namespace_the_mount_root_is_the_container(tmp_path):
    mounts = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,relatime - cgroup cgroup rw,memory\n"
    root = _tree(tmp_path, "4:memory:/docker/abc\n", mounts, {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": str(2 * GIB),
        "sys/fs/cgroup/memory/memory.usage_in_bytes": "1000\n",
        "sys/fs/cgroup/memory/memory.stat": V1_STAT})
    (cgroup, _) = limits.detect(None, root=str(root)).budgets
    assert cgroup.limit == 2 * GIB and cgroup.source == "cgroup /docker/abc, memory.limit_in_bytes"


def test_no_cgroup_the_machine_and_the_setting(tmp_path):
    root = _tree(tmp_path, "0::/\n", "", {})
    assert [b.kind for b in limits.detect(None, root=str(root)).budgets] == ["machine"]
    assert limits.detect(0, root=str(root)) is None  # 0: the guard is off
    found = limits.detect(600 << 20, root=str(root))
    setting = found.budgets[-1]
    assert (setting.limit, setting.source) == (600 << 20, "IPYMINI_MEMORY_LIMIT=600 MiB")
    s = found.sample()
    assert s.used[-1] == s.kernel_anon and s.worst == 1  # the kernel's own memory, and the tightest
    half = limits.detect(0.5, root=str(root)).budgets[-1]
    assert half.limit == 4 * GIB
    assert half.source == "IPYMINI_MEMORY_LIMIT=4 GiB, 50% of the machine's memory, /proc/meminfo"


def test_margins_and_room():
    assert limits.margin_for(GIB) == 64 << 20
    assert limits.margin_for(256 << 20) == 48 << 20  # at least 48 MiB
    assert limits.margin_for(64 * GIB) == 512 << 20  # at most 512 MiB
    assert [limits.human(n) for n in (0, 5 << 20, 1023 << 20, GIB, 1100 << 20)] == [
        "0 bytes", "5 MiB", "1,023 MiB", "1 GiB", "1.07 GiB"]


# -- the record of the running cell --

def test_the_next_kernel_learns_which_cell_was_running(tmp_path):
    path = path_for(str(tmp_path / "kernel-1.json"))
    assert path == str(tmp_path / ".kernel-1.json.ipymini-cell")
    record = LastCell(path)
    assert record.notice() is None  # nothing before it
    record.cell_started(0, 7, "\n\n   x = [bytearray(10**6) for _ in range(3000)]\nmore")
    record.sample(990 << 20, GIB, 900 << 20, 1, "cgroup /pod, memory.limit_in_bytes")
    del record  # killed: nothing more is written, the file stays
    notice = LastCell(path).notice({"cgroup /pod, memory.limit_in_bytes": 3, "the machine": 9})
    assert notice.startswith("[ipymini] The previous kernel died while running cell [7]: "
                             "x = [bytearray(10**6) for _ in range(3000)]\n")
    assert "held 900 MiB, and 990 MiB of the 1 GiB limit (cgroup /pod, memory.limit_in_bytes)" in notice
    assert "OOM killer has killed 2 processes" in notice
    assert "Its variables are gone" in notice


def test_the_kill_count_is_taken_from_the_cells_start_and_the_same_limit(tmp_path):
    """A last sample that already counted the kill (taken between the kill and the death) still
    leaves the notice its kill; the count now is the recorded limit's, not another budget's."""
    path = str(tmp_path / "record")
    record = LastCell(path)
    source = "cgroup /pod, memory.limit_in_bytes"
    record.sample(100 << 20, GIB, 90 << 20, 4, source)
    record.cell_started(0, 2, "z[:] = 1")
    record.sample(1000 << 20, GIB, 990 << 20, 5, source)  # the kill counted already
    del record
    assert "OOM killer has killed 1 process." in LastCell(path).notice({source: 5, "the machine": 0})
    record = LastCell(path)
    record.sample(100 << 20, GIB, 90 << 20, 5, source)
    record.cell_started(0, 3, "z[:] = 1")
    del record
    notice = LastCell(path).notice({"another cgroup": 9})  # no count for this limit: nothing said
    assert "cell [3]" in notice and "OOM killer" not in notice


def test_a_finished_cell_or_a_clean_shutdown_leaves_nothing_to_tell(tmp_path):
    path = str(tmp_path / "record")
    record = LastCell(path)
    record.cell_started(1, 3, "print(1)")
    record.cell_ended(1)
    assert LastCell(path).notice() is None
    record = LastCell(path)
    record.cell_started(0, 4, "import time; time.sleep(100)")
    record.close()
    assert not os.path.exists(path)


def test_first_line():
    assert first_line("\n  \n  # hi\nx") == "# hi"
    assert first_line("") == ""


# -- giving memory back --

def _fails_holding(big, make_closure: bool = False):
    held = big  # noqa: F841 (a local the traceback keeps)
    if make_closure:
        kept = "still here"
        _fails_holding.closure = lambda: kept
    raise MemoryError


def test_clear_frames_drops_what_the_traceback_held_and_nothing_else():
    namespace = {"keep": 41}
    try:
        exec("_fails_holding(big, make_closure=True)", {**namespace, "_fails_holding": _fails_holding,
                                                        "big": [object()] * 10}, namespace)
    except MemoryError as e:
        exc = e
    frame = exc.__traceback__.tb_next.tb_next.tb_frame
    assert frame.f_locals["held"]  # what a traceback formatter sees
    big_list = frame.f_locals["held"]
    before = sys.getrefcount(big_list)
    recovery.clear_frames(exc)
    assert exc.__traceback__ is None
    assert sys.getrefcount(big_list) < before  # the frame no longer holds it (3.11: nor its f_locals)
    assert namespace == {"keep": 41}  # a module-level frame's namespace is the user's: untouched
    assert _fails_holding.closure() == "still here"  # closure cells stay


def test_the_last_traceback_is_dropped_and_memory_trimmed():
    """(give_back's collection is not run here: in the test process it would collect other tests'
    garbage, a zmq context whose term() waits.)"""
    try:
        _fails_holding([1])
    except MemoryError as e:
        sys.last_type, sys.last_value, sys.last_traceback = type(e), e, e.__traceback__
    recovery.forget(sys.last_value)
    assert sys.last_traceback is None and sys.last_value.__traceback__ is None
    assert recovery.trim() is _GLIBC  # malloc_trim: glibc only


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):
        return False


_GLIBC = _glibc()


MALLOC_INFO = b"""<malloc version="1">
<heap nr="0"><sizes></sizes><total type="fast" count="0" size="0"/><total type="rest" count="1" size="1000"/>
<system type="current" size="5000"/><system type="max" size="5000"/><aspace type="total" size="5000"/>
<aspace type="mprotect" size="5000"/></heap>
<heap nr="1"><sizes></sizes><total type="fast" count="1" size="32"/><total type="rest" count="2" size="10000"/>
<system type="current" size="20000"/><system type="max" size="90000"/><aspace type="total" size="20000"/>
<aspace type="mprotect" size="70000"/><aspace type="subheaps" size="1"/></heap>
<total type="fast" count="1" size="32"/>
<total type="rest" count="3" size="11000"/>
<total type="mmap" count="2" size="401408"/>
<system type="current" size="25000"/>
<system type="max" size="95000"/>
<aspace type="total" size="25000"/>
<aspace type="mprotect" size="75000"/>
</malloc>
"""


def test_malloc_info_free_chunks_and_heap_above_its_top():
    assert mallocstate.parse(MALLOC_INFO) == 32 + 11000 + (75000 - 25000)


def test_malloc_info_is_read_from_glibc(monkeypatch):
    monkeypatch.setattr(mallocstate, "_cached", (0.0, None))  # (the first reading waits past start-up)
    assert isinstance(mallocstate.reusable(), int) is _GLIBC


class _RoomyBound:
    """Stands in for AddressBound: armed, counting user threads already, `room` left (lifts change
    nothing)."""

    armed = True
    counting_threads = True
    stopping_cell = False
    room = 1 << 40

    def headroom(self):
        return self.room

    @contextlib.contextmanager
    def lifted(self, room=None):
        yield

    def note_user_thread(self, thread):
        pass


def test_a_started_thread_stays_a_method_of_its_thread_for_debuggers():
    """debugpy finds the Thread it is starting through the start function's `__self__` (and hides the
    kernel's own threads by it); the guard's wrapper must keep it."""
    import threading

    from ipymini.memory import bound

    seen = {}

    def start(function, *args, **kwargs):
        seen["self"] = getattr(function, "__self__", None)
        return original(function, *args, **kwargs)

    name = "_start_joinable_thread" if hasattr(threading, "_start_joinable_thread") else "_start_new_thread"
    original = getattr(threading, name)
    t = threading.Thread(target=lambda: None)
    setattr(threading, name, bound._starting_threads(_RoomyBound(), start))
    try:
        t.start()
    finally:
        setattr(threading, name, original)
    t.join(10)
    assert seen["self"] is t and not t.is_alive()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_whose_start_up_fails_raises_in_start_instead_of_hanging(monkeypatch):
    import threading

    from ipymini.memory import bound

    name = "_start_joinable_thread" if hasattr(threading, "_start_joinable_thread") else "_start_new_thread"
    monkeypatch.setattr(threading, name, bound._starting_threads(_RoomyBound(), getattr(threading, name)))

    class FailsAtStartUp(threading.Thread):
        def _set_ident(self):  # (the first step of its bootstrap, before it says it started)
            raise MemoryError("no room for the thread's start-up")

    t = FailsAtStartUp(target=lambda: None)
    with pytest.raises(MemoryError, match="start-up"):
        t.start()


def _start_name():
    import threading
    return "_start_joinable_thread" if hasattr(threading, "_start_joinable_thread") else "_start_new_thread"


def _begins_late(delay: float, entered=None):
    """A thread start whose thread begins `delay` seconds late (3.13+: on the Thread's own handle, so
    that join() works)."""
    import _thread

    def start(function, *args, **kwargs):
        def late():
            time.sleep(delay)
            function()
            if entered is not None:
                entered.set()
        if "handle" in kwargs:
            return _thread.start_joinable_thread(late, handle=kwargs["handle"], daemon=kwargs.get("daemon", True))
        return _thread.start_new_thread(late, ())
    return start


@pytest.mark.parametrize("why", ["the cell is being stopped", "no room is left"])
def test_a_thread_that_dies_before_its_python_code_runs_does_not_hang_start(monkeypatch, why):
    """A new thread whose first frame's memory is refused dies in C ("Exception ignored in thread
    started by"), never saying it started: Thread.start gives up on it when memory is short and
    raises MemoryError (this hung a kernel: eight raw threads filling the 1 GiB cgroup)."""
    import threading

    from ipymini.memory import bound

    short = _RoomyBound()
    if why == "no room is left":
        short.room = 0

    def dies_at_once(function, *args, **kwargs):
        short.stopping_cell = why == "the cell is being stopped"  # (its other threads died)
        return 12345  # the OS thread began and ended: the function never ran

    monkeypatch.setattr(threading, _start_name(), bound._starting_threads(short, dies_at_once))
    t = threading.Thread(target=lambda: None)
    began = time.monotonic()
    with pytest.raises(MemoryError, match="start-up"):
        t.start()
    assert time.monotonic() - began < 5


def test_a_thread_that_begins_after_start_gave_up_on_it_does_not_run(monkeypatch):
    import threading

    from ipymini.memory import bound

    short = _RoomyBound()
    short.room = 0
    entered = threading.Event()

    monkeypatch.setattr(threading, _start_name(),
                        bound._starting_threads(short, _begins_late(bound.GIVE_UP_AFTER + 1.5, entered)))
    ran = []
    t = threading.Thread(target=lambda: ran.append(1))
    with pytest.raises(MemoryError):
        t.start()
    assert entered.wait(10)
    assert ran == [] and not t.is_alive()


def test_a_slow_thread_is_waited_for_while_memory_is_not_short(monkeypatch):
    import threading

    from ipymini.memory import bound

    monkeypatch.setattr(threading, _start_name(),
                        bound._starting_threads(_RoomyBound(), _begins_late(bound.GIVE_UP_AFTER + 0.5)))
    ran = []
    t = threading.Thread(target=lambda: ran.append(1))
    t.start()
    t.join(10)
    assert ran == [1]


def test_a_cell_being_stopped_for_memory_starts_no_more_threads(monkeypatch):
    """Once the guard stops a cell, its next Thread.start raises MemoryError at once (the stop itself
    may have landed in the kernel's code, and the cell would end `ok`)."""
    import threading

    from ipymini.memory import bound

    stopping = _RoomyBound()
    stopping.stopping_cell = True
    monkeypatch.setattr(threading, _start_name(), bound._starting_threads(stopping, getattr(threading, _start_name())))
    ran = []
    t = threading.Thread(target=lambda: ran.append(1))
    with pytest.raises(MemoryError, match="being stopped"):
        t.start()
    stopping.stopping_cell = False
    t = threading.Thread(target=lambda: ran.append(2))
    t.start()
    t.join(10)
    assert ran == [2]


def _refusing(times: int, seen: list):
    """A thread start that fails `times` times as pthread_create does when the bound refuses the
    thread's stack, then starts it (noting the handle each call was given)."""
    import threading
    real = getattr(threading, _start_name())

    def start(function, *args, **kwargs):
        seen.append(kwargs.get("handle"))
        if len(seen) <= times:
            raise RuntimeError("can't start new thread")
        return real(function, *args, **kwargs)
    return start


def test_a_start_refused_for_its_stack_is_tried_again_with_room(monkeypatch):
    """Other threads can take the room between the look at it and the stack's mapping (eight threads
    filling the cgroup; seen once in CI on 3.15 as `RuntimeError: can't start new thread`): the start
    is tried again with room for the stack, from 3.13 on a new handle (a failed start spends one)."""
    import threading

    from ipymini.memory import bound

    seen, lifts = [], []
    roomy = _RoomyBound()
    roomy.lifted = lambda room=None: (lifts.append(room), contextlib.nullcontext())[1]
    monkeypatch.setattr(threading, _start_name(), bound._starting_threads(roomy, _refusing(1, seen)))
    ran = []
    t = threading.Thread(target=lambda: ran.append(1))
    t.start()
    t.join(10)
    assert ran == [1] and not t.is_alive() and lifts == [bound.THREAD_ROOM]
    assert len(seen) == 2
    if seen[0] is not None:  # 3.13+: the second start had a new handle, the one the Thread joins
        assert seen[1] is not seen[0] and type(seen[1]) is type(seen[0])
        assert seen[1] in (getattr(t, "_os_thread_handle", None), getattr(t, "_handle", None))


def test_a_start_refused_even_with_room_for_its_stack_is_a_memory_error(monkeypatch):
    import threading

    from ipymini.memory import bound

    seen = []
    monkeypatch.setattr(threading, _start_name(), bound._starting_threads(_RoomyBound(), _refusing(2, seen)))
    t = threading.Thread(target=lambda: None)
    with pytest.raises(MemoryError, match="stack") as raised:
        t.start()
    assert isinstance(raised.value.__cause__, RuntimeError) and len(seen) == 2


def test_a_start_refused_without_the_bound_stays_a_runtime_error(monkeypatch):
    """Not the guard's doing (a thread limit, say): Python's own error, unchanged."""
    import threading

    from ipymini.memory import bound

    seen = []
    unarmed = _RoomyBound()
    unarmed.armed = False
    monkeypatch.setattr(threading, _start_name(), bound._starting_threads(unarmed, _refusing(1, seen)))
    t = threading.Thread(target=lambda: None)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        t.start()
    assert len(seen) == 1


def _watching_guard(stopped: list):
    """A guard over this process with a generous IPYMINI_MEMORY_LIMIT, not started (no bound is set on
    the test process); a cell computes all along, and `stopped` collects each stop asked for."""
    from ipymini.memory.watcher import MemoryGuard

    guard = MemoryGuard(limits.Limits([limits.SettingBudget(64 * GIB)], "/proc/self"), None,
                        lambda: True, stopped.append)
    return guard, guard._thread_failed(lambda args: None)


def _dies_of_memory_error(hook, guard, started_before=None, join=True):
    """Run a thread noted as the user's (as the bound's start does) that dies of MemoryError: the hook
    is called in it, as threading.excepthook would be. `started_before` runs after it started and
    before it dies (a new cell beginning, say). Returns the thread (ended, if `join`)."""
    import threading

    go = threading.Event()

    def body():
        go.wait(10)
        try:
            raise MemoryError
        except MemoryError:
            hook(threading.ExceptHookArgs(sys.exc_info() + (threading.current_thread(),)))
    thread = threading.Thread(target=body)
    thread.start()
    guard.bound.note_user_thread(thread)
    if started_before is not None:
        started_before()
    go.set()
    if join:
        thread.join(10)
        assert not thread.is_alive()
    return thread


def test_a_thread_of_an_earlier_cell_dying_of_memory_error_does_not_stop_the_next_cell():
    """Seen in CI (3.14, under load): a thread of a cell stopped for memory died after the next cell
    had begun, and stopped that cell, which used 102 MiB of 1 GiB."""
    stopped = []
    guard, hook = _watching_guard(stopped)
    guard.cell_started(True, 1, "run()")
    time.sleep(0.01)  # (monotonic time moves on between the two cells)
    _dies_of_memory_error(hook, guard, started_before=lambda: guard.cell_started(True, 2, "print(keep)"))
    assert stopped == [] and guard.stops == 0


def test_a_thread_the_running_cell_started_dying_of_memory_error_stops_the_cell():
    """...and stays alive until the cell ends (or shows its MemoryError): a cell joining it would
    otherwise end `ok` before the stop landed (seen on 3.13t)."""
    stopped = []
    guard, hook = _watching_guard(stopped)
    guard.cell_started(True, 1, "run()")
    thread = _dies_of_memory_error(hook, guard, join=False)
    deadline = time.monotonic() + 10
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(stopped) == 1 and guard.stops == 1
    time.sleep(0.2)
    assert thread.is_alive()  # (its join would return only now)
    guard.cell_ended(True)
    thread.join(1)
    assert not thread.is_alive()

