"""The stream buffers (ipymini/output/streams.py) in-process, with a fake IOPub queue: the interleavings
that decide whether a line is ever split are forced here step by step, which a real kernel only hits
by chance under load (tests through the real kernel are in test_output.py)."""

import queue
import time
import threading

import pytest

from ipymini.output import streams


class FakeIOPub:
    """Records what the streams hand to the IOPub queue."""

    def __init__(self):
        self.published: list[tuple[str, str]] = []

    def write_stream(self, name, text, request):
        self.published.append((name, text))

    def partial_waiting(self):
        pass

    def text(self, name="stdout") -> str:
        return "".join(t for n, t in self.published if n == name)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def out(monkeypatch):
    iopub = FakeIOPub()
    clock = Clock()
    monkeypatch.setattr(streams, "_clock", clock)
    monkeypatch.setattr(streams, "fd_capture", None)
    streams.flush_all()
    streams._seen_at_last_tick.clear()
    yield streams.KernelStream("stdout", iopub), iopub, clock
    streams.flush_all()
    streams._seen_at_last_tick.clear()


class Writer:
    """A thread of its own that writes when told to (threads stay alive: an ended thread's id may be
    reused by the next one, which would then count as the same writer)."""

    def __init__(self, stream):
        self.stream = stream
        self.jobs = queue.Queue()
        self.done = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while (text := self.jobs.get()) is not None:
            self.stream.write(text)
            self.done.put(True)

    def write(self, text):
        self.jobs.put(text)
        assert self.done.get(timeout=10)

    def stop(self):
        self.jobs.put(None)
        self.thread.join(10)


def test_a_full_buffer_keeps_its_unfinished_line_for_its_thread(out):
    stream, iopub, _ = out
    lines = "a\n" * (streams.PUSH_BYTES // 2 - 2)  # a few bytes short of a full buffer
    a, b = Writer(stream), Writer(stream)
    a.write(lines)
    a.write("a-unfinished")  # the buffer is full now, in the middle of a print
    assert iopub.text().endswith("\n"), "a full buffer went out with its unfinished line"
    b.write("b-line\n")  # another thread writes before A's newline
    a.write("\n")
    streams.flush_all()
    a.stop(), b.stop()
    got = iopub.text().splitlines()
    assert "a-unfinished" in got and "b-line" in got
    assert len(got) == streams.PUSH_BYTES // 2


def test_a_line_longer_than_the_buffer_goes_as_it_is(out):
    stream, iopub, _ = out
    stream.write("x" * (streams.PUSH_BYTES + 10))
    assert iopub.text() == "x" * (streams.PUSH_BYTES + 10)


def test_the_timer_holds_an_unfinished_line_while_another_thread_writes(out):
    stream, iopub, clock = out
    a, b = Writer(stream), Writer(stream)
    a.write("a-unfinished")
    for i in range(20):  # thread B keeps writing for 0.2 s; thread A is stopped mid-print
        b.write(f"b-{i}\n")
        clock.now += 0.01
        assert streams.flush_on_timer() is True  # A's line is still held back
    assert "a-unfinished" not in iopub.text()
    assert iopub.text() == "".join(f"b-{i}\n" for i in range(20))
    a.write("\n")
    streams.flush_all()
    assert iopub.text().endswith("a-unfinished\n")
    a.stop(), b.stop()


def test_the_timer_publishes_an_unfinished_line_once_nothing_is_written(out):
    stream, iopub, clock = out
    stream.write("progress...")  # print('progress...', end=''), then a long computation
    waited = 0.0
    while streams.flush_on_timer():
        assert iopub.text() == ""
        clock.now += 0.01
        waited += 0.01
        assert waited < 1
    assert iopub.text() == "progress..."
    assert streams.PARTIAL_LINE_WAIT <= waited + 1e-9 < streams.PARTIAL_LINE_WAIT + 0.03


def test_an_unfinished_line_goes_after_the_longest_wait_even_if_others_keep_writing(out):
    stream, iopub, clock = out
    a, b = Writer(stream), Writer(stream)
    a.write("a-left-unfinished")
    i = 0
    while "a-left-unfinished" not in iopub.text():
        b.write(f"b-{i}\n")
        clock.now += 0.01
        streams.flush_on_timer()
        i += 1
        assert i < 200
    assert streams.PARTIAL_LINE_MAX_WAIT <= i * 0.01 + 1e-9 < streams.PARTIAL_LINE_MAX_WAIT + 0.05
    a.stop(), b.stop()


def test_complete_lines_go_at_the_first_tick(out):
    stream, iopub, _ = out
    stream.write("done\nhalf")
    assert streams.flush_on_timer() is True
    assert iopub.text() == "done\n"


# -- the children's pipe (ipymini/output/childpipe.py) --

def test_child_messages_cross_in_atomic_frames_and_come_out_whole(monkeypatch):
    import os
    import select

    from ipymini.output.childpipe import ChildPipe

    pipe = ChildPipe()
    sizes = []
    real_write = os.write

    def recording_write(fd, data):
        if fd == pipe.write_fd:
            sizes.append(len(data))
        return real_write(fd, data)

    pids = []
    try:
        for n in range(3):  # three children at once, each sending messages larger than a frame
            pid = os.fork()
            if pid == 0:
                try:
                    monkeypatch.setattr(os, "write", recording_write)
                    pipe.after_fork_in_child()
                    for i in range(4):
                        pipe.send({"child": n, "i": i, "text": f"{n}-{i}-" + "x" * 10000})
                    assert sizes and max(sizes) <= select.PIPE_BUF
                finally:
                    os._exit(0 if sizes and max(sizes) <= select.PIPE_BUF else 1)
            pids.append(pid)
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 12 and time.monotonic() < deadline:
            select.select([pipe.read_fd], [], [], 0.5)
            got.extend(pipe.read())
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "a frame was over PIPE_BUF"
        assert sorted((m["child"], m["i"]) for m in got) == [(n, i) for n in range(3) for i in range(4)]
        for m in got:
            assert m["text"] == f"{m['child']}-{m['i']}-" + "x" * 10000
        for n in range(3):  # one child's messages keep their order
            assert [m["i"] for m in got if m["child"] == n] == [0, 1, 2, 3]
    finally:
        pipe.close()


def test_a_flush_waits_for_a_hand_over_of_its_text_by_another_thread(out):
    """The end of a request flushes its text before the reply. When another thread takes over the
    buffer at that moment, it is the one handing the text to the IOPub queue; the flush must not
    return before that text is queued (it did, seeing the buffer already empty: the reply and `idle`
    then overtook the cell's last output, seen on free-threaded 3.13t in the chaos test)."""
    stream, iopub, _ = out
    handing, release = threading.Event(), threading.Event()
    real_write_stream = iopub.write_stream

    def slow_write_stream(name, text, request):
        if threading.current_thread() is other.thread:
            handing.set()
            release.wait(10)
        real_write_stream(name, text, request)

    iopub.write_stream = slow_write_stream
    mine, other = Writer(stream), Writer(stream)
    mine.write("the cell's last line\n")
    other.jobs.put("another thread's text\n")  # takes over; stopped while handing on the cell's line
    assert handing.wait(10)
    flushed = threading.Event()
    flusher = threading.Thread(target=lambda: (streams.flush_all(), flushed.set()), daemon=True)
    flusher.start()
    assert not flushed.wait(0.2), "flush_all returned while the cell's text was not yet queued"
    release.set()
    assert flushed.wait(10)
    assert other.done.get(timeout=10)
    assert iopub.text().startswith("the cell's last line\n")
    mine.stop()
    other.stop()


def test_each_request_has_its_own_budget_kept_by_the_streams(out, monkeypatch):
    """The output budget is the streams' own record per request: a request's text past the limit is
    held back and counted, another request starts with the whole budget, and the record goes with
    the request."""
    import gc

    from ipymini.output import routing
    from ipymini.protocol.messages import Request

    stream, iopub, _ = out
    monkeypatch.setattr(streams, "budget", 10)
    first, second = (Request("shell", [], {"header": {"msg_id": n}}) for n in ("a", "b"))
    token = routing.current_request.set(first)
    try:
        stream.write("0123456789abcdef\n")
        streams.flush_all()
        routing.current_request.set(second)
        stream.write("xyz\n")
        streams.flush_all()
    finally:
        routing.current_request.reset(token)
    assert iopub.text() == "0123456789" + "xyz\n"
    assert streams.omitted(first) == 7 and streams.omitted(second) == 0
    del first
    gc.collect()
    assert len(streams._spent) == 1  # only the second request's record is left
