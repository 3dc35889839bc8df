"""Differential test: a corpus of cells and requests run in ipykernel and in ipymini, compared.

Both kernels run in this venv, each in its own temporary cwd with its own fresh IPYTHONDIR (see
differential.py). Every corpus entry runs in order in both; its execute_reply (content, metadata and
msg_type) and every iopub message parented to it through idle are normalized (ids, dates, uuids,
addresses, cell-file directories, the kernels' private dirs, relative execution counts, timings of
`%time`/`%timeit`) and compared. Every difference that is accepted is listed in ALLOWED_DIFFERENCES
with its reason; anything else fails the entry's own test, printing each differing field on both sides.
"""

from __future__ import annotations

import ast
import re

import pytest

from differential import (STREAM_TEXT, STREAM_TEXT_ANYWHERE, Allowed, Entry, apply_allowed, compare,
                          keys_only, masked, report, run_corpus, sorted_list, start_pair, stop_all,
                          stream_mode, view)

TIMING = ((r"\d+(?:\.\d+)?(?:e[+-]?\d+)?\s*(?:ns|µs|μs|us|ms|s)\b", "<time>"),)  # IPython writes µ as U+03BC
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
SESSION_SEND = """\
ip = get_ipython()
display('before', display_id='sess')
k = ip.kernel
k.session.send(k.iopub_socket, 'update_display_data',
               {'data': {'text/plain': "'after'"}, 'metadata': {}, 'transient': {'display_id': 'sess'}},
               parent=ip.parent_header, ident=b'update_display_data');"""
# kernel.session (issue 25 item 4): what jupyter_client's Session returns and holds, as value shapes
# (types; datetimes with their UTC offset) and the values that do not differ by run
SESSION_SHAPE = """\
import datetime, os
k = get_ipython().kernel; s = k.session
def shape(v):
    if isinstance(v, dict):
        return {key: shape(x) for key, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v]
    if isinstance(v, datetime.datetime):
        return ('datetime', v.utcoffset())
    return type(v).__name__
def sent_shape(m):  # the parent header's fields (its date's type is the request's: entry parent_date_type)
    return shape({**m, 'parent_header': sorted(m['parent_header'])})
def facts(m):
    return [m['msg_id'] == m['header']['msg_id'], m['msg_type'] == m['header']['msg_type'],
            m['header']['session'] == s.session, m['header']['username'] == s.username,
            m['msg_id'].startswith(f'{s.session}_{os.getpid()}_'), m['tracker'].done]
"""
SESSION_SEND_RETURNS = SESSION_SHAPE + """\
on_iopub = s.send(k.iopub_socket, 'display_data', {'data': {'text/plain': 'sent by session'}, 'metadata': {}},
                  parent=get_ipython().parent_header, metadata={'m': 1})
built_only = s.send(None, 'custom_type', {'a': 1})
given = s.msg('display_data', {'data': {'text/plain': 'a prebuilt message'}, 'metadata': {}},
              parent=get_ipython().parent_header)
again = s.send(k.iopub_socket, given, buffers=[b'raw'])
[sent_shape(on_iopub), facts(on_iopub), on_iopub['content'], on_iopub['metadata'],
 on_iopub['parent_header']['msg_type'], shape(built_only), facts(built_only), built_only['parent_header'],
 again is given, sent_shape(again), facts(again)]"""
SESSION_MEMBERS = SESSION_SHAPE + """\
import hmac, hashlib
h = s.msg_header('x'); m = s.msg('x', {'c': 1}, parent=h, metadata={'md': 2})
frames = s.serialize(m, ident=[b'route'])
idents, rest = s.feed_identities(frames)
back = s.deserialize(rest)
problems = []
for bad in (rest, [b''] + rest[1:], [b'0' * 64] + rest[1:], [s.sign(rest[1:3])] + rest[1:3]):
    try:
        s.deserialize(bad)
    except Exception as e:
        problems.append((type(e).__name__, str(e)[:20]))
values = {n: getattr(s, n) for n in ('packer', 'unpacker', 'check_pid', 'debug', 'adapt_version', 'metadata',
          'digest_history_size', 'copy_threshold', 'buffer_threshold', 'item_threshold', 'keyfile', 'none',
          'signature_scheme')}
types = {n: type(getattr(s, n)).__name__ for n in ('session', 'bsession', 'username', 'key', 'pid',
         'digest_history', 'msg_id', 'auth', 'pack', 'unpack')}
[shape(h), shape(m), m['parent_header'] is h, [type(f).__name__ for f in frames], idents, len(rest),
 shape(back), back['content'], back['metadata'], back['parent_header']['msg_id'] == h['msg_id'], problems,
 s.sign(rest[1:5]) == rest[0] == hmac.new(s.key, b''.join(rest[1:5]), hashlib.sha256).hexdigest().encode(),
 s.sign([]) == hmac.new(s.key, b'', hashlib.sha256).hexdigest().encode(),
 s.pack({'a': [1, 'é'], 'd': datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc), 'b': b'x'}),
 s.unpack(b'{"a": [1, "\\\\u00e9"]}'), s.unpack('{"s": "str"}'), s.bsession == s.session.encode(),
 s.pid == os.getpid(), s.username == os.environ.get('USER', 'username'), len(s.key) > 0,
 rest[0] in s.digest_history, values, types]"""


def cell(id: str, code: str, **options) -> Entry:
    """An execute_request entry; `volatile` goes to the Entry, the rest into the request content."""
    volatile = options.pop("volatile", ())
    return Entry(id, code=code, options=options, volatile=volatile)


def req(id: str, msg_type: str, channel: str = "shell", **content) -> Entry:
    """A non-execute request entry."""
    return Entry(id, msg_type=msg_type, content=content, channel=channel)


CORPUS = [
    # streams and results
    cell("print", "print('hello')"),
    cell("stdout_stderr", "import sys\nprint('out')\nprint('err', file=sys.stderr)\nprint('out again')"),
    cell("write_no_newline", "sys.stdout.write('no newline')"),
    cell("write_no_newline_then_print", "sys.stdout.write('partial'); print(' line')"),
    cell("expr_int", "1 + 1"),
    cell("expr_str", "'text'"),
    cell("expr_list", "[1, 'a', None, 2.5]"),
    cell("expr_unicode", "'héllo 🎉 漢字 ✓'"),
    cell("print_unicode", "print('emoji 🎉 CJK 漢字 ✓ é')"),
    cell("semicolon", "42;"),
    cell("expr_then_underscore", "10 * 3"),
    cell("underscore", "_ + 1"),
    cell("out_in", "(Out[max(Out)], In[-2])"),
    cell("name", "__name__"),
    cell("sys_argv", "sys.argv[1:2], len(sys.argv)"),
    cell("thread_output", "import threading\nt = threading.Thread(target=print, args=('from thread',))\n"
                          "t.start(); t.join()"),
    # where output of threads with no parent of their own goes (issue 25): each later cell releases
    # the thread and waits for it, so the output comes while that cell runs
    cell("thread_streamer_started", "import threading\nfrom IPython.display import display\n"
         "_go, _done = [threading.Event() for _ in range(2)], [threading.Event() for _ in range(2)]\n"
         "def _streamer():\n    print('thread starts', flush=True)\n    for i in range(2):\n"
         "        _go[i].wait(10)\n        print(f'result {i}', flush=True)\n"
         "        h = display(f'display {i}', display_id=True)\n        h.update(f'updated {i}')\n"
         "        _done[i].set()\n_ready = threading.Event()\n"
         "_t = threading.Thread(target=lambda: (_ready.set(), _streamer()), daemon=True)\n"
         "_t.start(); _ready.wait(10)\nimport time; time.sleep(0.2)"),
    cell("thread_streams_into_later_cell_1", "_go[0].set(); _done[0].wait(10);"),
    cell("thread_streams_into_later_cell_2", "_go[1].set(); _done[1].wait(10); _t.join(10)"),
    cell("pool_task_started", "import concurrent.futures as _cf\n_pool = _cf.ThreadPoolExecutor(1)\n"
         "_gate = threading.Event()\n_fut = _pool.submit(lambda: (_gate.wait(10), print('pool task ends')))"),
    cell("pool_task_ends_in_later_cell", "_gate.set(); _fut.result(10);"),
    cell("pool_worker_reused", "_pool.submit(print, 'pool again').result(10); _pool.shutdown()"),
    cell("timer_started", "_tgate, _tdone = threading.Event(), threading.Event()\n"
         "threading.Timer(0.01, lambda: (_tgate.wait(10), print('timer fired'), _tdone.set())).start()"),
    cell("timer_fires_in_later_cell", "_tgate.set(); _tdone.wait(10);"),
    cell("raw_thread_started", "import _thread\n_rgate, _rdone = threading.Event(), threading.Event()\n"
         "_thread.start_new_thread(lambda: (_rgate.wait(10), print('raw thread'), _rdone.set()), ());"),
    cell("raw_thread_prints_in_later_cell", "_rgate.set(); _rdone.wait(10);"),
    cell("native_thread_started", "import ctypes\n_ngate, _ndone = threading.Event(), threading.Event()\n"
         "def _native(arg):\n    _ngate.wait(10); print('from a C thread'); _ndone.set()\n    return None\n"
         "_ncb = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(_native)\n_ntid = ctypes.c_ulong()\n"
         "ctypes.CDLL(None).pthread_create(ctypes.byref(_ntid), None, _ncb, None)"),
    cell("native_thread_prints_in_later_cell", "_ngate.set(); _ndone.wait(10)\n"
         "ctypes.CDLL(None).pthread_join(_ntid, None)"),
    cell("mp_thread_pool", "from multiprocessing.pool import ThreadPool\n_tp = ThreadPool(1)\n"
         "_tp.apply(print, ('thread pool first',))"),
    cell("mp_thread_pool_later_cell", "_tp.apply(print, ('thread pool later',)); _tp.close(); _tp.join()"),
    cell("thread_parents_set", "_ip = get_ipython()\n_home = _ip.get_parent()\n"
         "_g1, _d1, _g2, _d2, _r1, _r2 = (threading.Event() for _ in range(6))\n"
         "def _local():\n    token = _ip.set_thread_parent(_home); _r1.set(); _g1.wait(10)\n"
         "    print('to the home cell'); _ip.reset_thread_parent(token)\n"
         "    print('to the running cell'); _d1.set()\n"
         "def _global():\n    _ip.set_parent(_home); _r2.set(); _g2.wait(10)\n"
         "    print('global to the home cell'); _d2.set()\n"
         "threading.Thread(target=_local).start(); threading.Thread(target=_global).start()\n"
         "_r1.wait(10); _r2.wait(10)"),
    cell("thread_parent_reset_in_later_cell", "_g1.set(); _d1.wait(10);"),
    cell("thread_global_parent_in_later_cell", "_g2.set(); _d2.wait(10); print('the cell itself')"),
    cell("thread_context_is_pythons", "import decimal, contextvars\ndecimal.getcontext().prec = 5\n"
         "_cv = contextvars.ContextVar('_cv', default='unset'); _cv.set('cell')\n_seen = []\n"
         "def _look():\n    _seen.append((decimal.getcontext().prec, _cv.get()))\n"
         "_th = threading.Thread(target=_look); _th.start(); _th.join()\n"
         "with _cf.ThreadPoolExecutor(1) as _ex:\n    _ex.submit(_look).result()\n"
         "decimal.getcontext().prec = 28\n_seen"),
    cell("widget_output_from_thread_started", "import ipywidgets as _w\n_wout = _w.Output()\n"
         "_wgate = threading.Event()\ndef _wthread():\n    _wgate.wait(10)\n"
         "    _wout.append_stdout('into the widget\\n')\n    print('thread print')\n"
         "_wth = threading.Thread(target=_wthread); _wth.start()\n_wout"),
    cell("widget_output_from_thread_joined", "_wgate.set(); _wth.join(10)"),
    cell("warning", "import warnings\nwarnings.warn('careful')"),
    cell("cell_filename", "def g():\n    pass\n\ng.__code__.co_filename"),
    cell("stdout_attributes", "[getattr(sys.stdout, a, None) for a in ('encoding', 'name', 'errors')] + "
                              "[sys.stdout.isatty(), sys.stdout.writable(), type(sys.stdout.fileno()).__name__]"),
    cell("kernel_environment", "import os\n{k: os.environ.get(k) for k in "
                               "('MPLBACKEND', 'TERM', 'CLICOLOR', 'PAGER', 'GIT_PAGER', 'FORCE_COLOR')}"),
    cell("ipykernel_imported", "'ipykernel' in sys.modules"),
    cell("user_ns_is_globals", "get_ipython().user_ns is globals()"),
    cell("main_thread", "import threading\nthreading.current_thread() is threading.main_thread()"),
    cell("sigint_handler", "import signal\nsignal.getsignal(signal.SIGINT) is signal.default_int_handler"),
    cell("running_event_loop", "import asyncio\ntry:\n    asyncio.get_running_loop()\n    print('running loop')\n"
                               "except RuntimeError:\n    print('no running loop')"),
    cell("empty_print", "print(end='')"),
    cell("expr_none", "None"),
    cell("multiline_no_result", "x = 1\ny = x + 1"),
    # display
    cell("display_text", "from IPython.display import display, HTML, Markdown, JSON\ndisplay('plain text')"),
    cell("display_html", "display(HTML('<b>bold</b>'))"),
    cell("display_markdown", "display(Markdown('# title'))"),
    cell("display_json", "display(JSON({'a': [1, 2]}))"),
    cell("display_raw_metadata", "display({'text/plain': 'raw', 'text/html': '<b>raw</b>'}, raw=True, "
                                 "metadata={'text/html': {'isolated': True}})"),
    cell("repr_methods", "class R:\n    def _repr_html_(self):\n        return '<b>r</b>'\n"
                         "    def _repr_markdown_(self):\n        return '**r**', {'m': 1}\n\nR()"),
    cell("repr_raises", "class Bad:\n    def _repr_html_(self):\n        raise ValueError('bad repr')\n\nBad()"),
    cell("display_several", "display(1, 'two', HTML('<i>3</i>'))"),
    cell("display_order", "print('a')\ndisplay('b')\nprint('c', file=sys.stderr)\n'd'"),
    cell("display_id", "h = display('first', display_id=True)\ntype(h).__name__"),
    cell("display_update", "h.update('second')"),
    cell("update_display", "from IPython.display import update_display\n"
                           "display('x', display_id='fixed')\nupdate_display('y', display_id='fixed')"),
    cell("clear_output", "from IPython.display import clear_output\nprint('gone')\nclear_output()\nprint('kept')"),
    cell("clear_output_wait", "clear_output(wait=True)\nprint('after wait')"),
    cell("display_image", "from IPython.display import Image\n"
                          f"Image(data=__import__('base64').b64decode('{PNG_1PX}'), width=10)"),
    cell("display_html_obj", "HTML('<p>p</p>')"),
    cell("display_javascript", "from IPython.display import Javascript\nJavascript('console.log(1)')"),
    cell("cell_magic_html", "%%html\n<u>u</u>"),
    # errors
    cell("error_name", "undefined_name"),
    cell("error_zero_division_in_function", "def f():\n    return 1 / 0\n\nf()"),
    cell("error_syntax", "1 +* 2"),
    cell("error_chained", "try:\n    {}['k']\nexcept KeyError as e:\n    raise ValueError('bad') from e"),
    cell("error_keyboard_interrupt_raised", "raise KeyboardInterrupt"),
    cell("error_system_exit", "raise SystemExit('bye')"),
    cell("error_unicode", "raise ValueError('ünïcode ✓ 漢字')"),
    cell("error_indentation", "if True:\nx = 1"),
    # post-mortem debugging and pdb, with and without stdin (issue 25)
    cell("debug_after_error", "def _fails(n):\n    return n / 0\n_fails(3)"),
    Entry("debug_with_stdin", code="%debug", options={"allow_stdin": True}, stdin=("p n * 14", "q")),
    cell("debug_without_stdin", "%debug"),
    cell("pdb_on", "%pdb on"),
    Entry("pdb_error_with_stdin", code="_fails(7)", options={"allow_stdin": True}, stdin=("p n", "q")),
    cell("pdb_error_without_stdin", "_fails(5)"),
    cell("pdb_off", "%pdb off"),
    cell("getpass_without_stdin", "import getpass\ngetpass.getpass('pw? ')"),
    Entry("set_trace_with_stdin", code="import pdb\n_x = 3\npdb.set_trace()\n_x + 1",
          options={"allow_stdin": True}, stdin=("p _x", "c")),
    cell("set_trace_without_stdin", "import pdb\n_x = 3\npdb.set_trace()\n_x + 1"),
    cell("breakpoint_without_stdin", "_x = 4\nbreakpoint()\n_x + 1"),
    cell("input_without_stdin", "input('prompt? ')"),
    Entry("input", code="name = input('Name? ')\nprint('hi', name)\nname", options={"allow_stdin": True},
          stdin=("Ada",)),
    Entry("getpass", code="import getpass\nlen(getpass.getpass('pw? '))", options={"allow_stdin": True},
          stdin=("secret",)),
    cell("error_no_stop_on_error", "1 / 0", stop_on_error=False),
    # the sleep only gives the second request time to arrive while the first runs
    Entry("error_aborts_queued", code="import time\ntime.sleep(0.1)\n1 / 0", then="print('never')"),
    Entry("no_abort_without_stop_on_error", code="time.sleep(0.1)\n1 / 0", options={"stop_on_error": False},
          then="print('runs')"),
    Entry("ok_then_next", code="time.sleep(0.1)", then="print('next')"),
    cell("error_after_output", "print('before')\nraise RuntimeError('after')"),
    cell("showtraceback_in_except", "try:\n    1 / 0\nexcept Exception:\n    get_ipython().showtraceback()"),
    cell("alive_after_errors", "'still alive'"),
    # magics
    cell("magic_time", "%time sum(range(10))", volatile=TIMING),
    cell("magic_timeit", "%timeit -n1 -r1 pass", volatile=TIMING),
    cell("cell_magic_time", "%%time\nsum(range(5))", volatile=TIMING),
    cell("magic_who", "%who"),
    cell("autoawait", "%autoawait"),
    cell("capture", "%%capture cap\nprint('captured')\ndisplay('hidden')"),
    cell("capture_use", "cap.stdout, len(cap.outputs)"),
    cell("capture_show", "cap.show()"),
    cell("xmode_minimal", "%xmode Minimal"),
    cell("error_in_xmode_minimal", "f()"),
    cell("xmode_context", "%xmode Context"),
    cell("config_interactivity_all", "%config InteractiveShell.ast_node_interactivity = 'all'"),
    cell("two_results", "1\n2"),
    cell("config_interactivity_back", "%config InteractiveShell.ast_node_interactivity = 'last_expr'"),
    cell("config_list", "%config"),
    cell("env_set", "%env DIFF_TEST_VAR=1"),
    cell("env_get", "%env DIFF_TEST_VAR"),
    cell("pwd", "%pwd"),
    cell("writefile", "%%writefile snippet.py\nx_from_file = 42\n"),
    cell("load_payload", "%load snippet.py"),
    cell("run_file", "%run snippet.py\nx_from_file"),
    cell("set_next_input", "get_ipython().set_next_input('next cell')"),
    cell("exit_keep_kernel_payload", "exit(keep_kernel=True)"),  # plain `exit` stops ipykernel
    cell("lsmagic", "%lsmagic"),
    cell("history_magic", "%history -n -l 3"),
    cell("bash_magic", "%%bash\necho from bash"),
    cell("shell_escape", "!echo hi"),
    cell("shell_capture", "files = !echo a b\nfiles"),
    # help and pager
    cell("help_question", "len?"),
    cell("help_double_question", "len??"),
    cell("help_function", "help(len)"),
    # fd output
    Entry("fd_stdout_then_result", code="import os\nos.write(1, b'x\\n'); 5", late_streams={"stdout": "x\n"}),
    Entry("os_system", code="os.system('echo from system')", late_streams={"stdout": "from system\n"}),
    cell("logging_warning", "import logging\nlogging.warning('logged')"),
    Entry("fd_stderr", code="os.write(2, b'fd err\\n');", late_streams={"stderr": "fd err\n"}),
    # execute options
    cell("silent", "print('silent'); 99", silent=True),
    cell("store_history_false", "'not stored'", store_history=False),
    cell("user_expressions", "uex = 3", user_expressions={"ok": "uex * 2", "bad": "1/0"}),
    cell("async_cell", "import asyncio\nawait asyncio.sleep(0)\n'awaited'"),
    # matplotlib
    cell("matplotlib_inline", "%matplotlib inline"),
    cell("matplotlib_figure", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"),
    cell("matplotlib_implicit", "plt.figure(figsize=(2, 2))\nplt.plot([3, 1])"),
    # GUI event loops (issue 26), headless (see differential.py); each failing %gui is followed by a
    # bare %gui, which clears the loop ipykernel keeps after a failure
    cell("gui_asyncio", "%gui asyncio"),
    cell("gui_leave", "%gui"),
    cell("gui_unknown", "%gui foo"),
    cell("gui_wx", "%gui wx"),
    cell("gui_leave_after_wx", "%gui"),
    cell("gui_gtk3", "%gui gtk3"),
    cell("gui_leave_after_gtk3", "%gui"),
    cell("gui_tk_without_display", "%gui tk"),
    cell("gui_leave_after_tk", "%gui"),
    cell("matplotlib_nbagg", "%matplotlib nbagg"),
    cell("matplotlib_notebook", "%matplotlib notebook"),
    cell("matplotlib_webagg", "%matplotlib webagg"),
    cell("matplotlib_ipympl", "%matplotlib ipympl"),
    cell("matplotlib_widget", "%matplotlib widget"),
    cell("matplotlib_list", "%matplotlib --list"),
    cell("matplotlib_tk_without_display", "%matplotlib tk"),
    cell("matplotlib_qt_without_display", "%matplotlib qt"),
    cell("matplotlib_wx", "%matplotlib wx"),
    cell("matplotlib_gtk3", "%matplotlib gtk3"),
    cell("matplotlib_osx", "%matplotlib osx"),
    cell("matplotlib_inline_again", "%matplotlib inline"),
    cell("gui_qt5", "%gui qt5"),  # last: ipykernel leaves QT_API=pyqt5 set after it
    # comms and widgets
    cell("comm_open", "from comm import create_comm\nc = create_comm(target_name='diff_t', data={'a': 1})"),
    req("comm_info_with_comm", "comm_info_request", target_name="diff_t"),
    cell("comm_send_close", "c.send({'b': 2})\nc.close()"),
    cell("widget", "import ipywidgets\nipywidgets.IntSlider(3)"),
    # kernel and shell API used by libraries
    cell("shell_class_name", "get_ipython().__class__.__name__"),
    cell("ipkernelapp_in_config", "'IPKernelApp' in get_ipython().config"),
    cell("session_send_update_display", SESSION_SEND),
    cell("session_send_returns", SESSION_SEND_RETURNS),
    cell("session_members", SESSION_MEMBERS),
    cell("parent_date_type", "[type(get_ipython().kernel.get_parent()['header']['date']).__name__, "
                             "type(get_ipython().parent_header['header']['date']).__name__]"),
    cell("shell_parent_methods", "[callable(getattr(get_ipython(), n, None)) for n in ('get_parent', 'set_parent')]"),
    cell("kernel_class_name", "type(get_ipython().kernel).__name__"),
    cell("kernel_attributes", "[a for a in ('shell', 'session', 'iopub_socket', 'stdin_socket', 'comm_manager', "
                              "'get_parent', 'set_parent', 'raw_input', 'getpass', 'ident', "
                              "'int_id', 'execution_count', 'log', 'io_loop', 'shell_stream', 'control_stream', "
                              "'user_ns', 'iopub_thread') if not hasattr(get_ipython().kernel, a)]"),
    cell("kernel_language_info_and_parent_header",
         "import warnings\nwith warnings.catch_warnings(record=True) as caught:\n"
         "    warnings.simplefilter('always')\n"
         "    header = get_ipython().kernel._parent_header['header']\n"
         "(get_ipython().kernel.language_info, header['msg_type'],\n"
         " header['msg_id'] == get_ipython().kernel.get_parent()['header']['msg_id'],\n"
         " [(w.category.__name__, str(w.message)) for w in caught])"),
    cell("kernel_config", "k = get_ipython().kernel\n"
         "(k.config is get_ipython().config, type(k.config).__name__,\n"
         " k.config['IPKernelApp']['connection_file'] == get_ipython().config.IPKernelApp.connection_file)"),
    cell("shell_attributes", "[a for a in ('kernel', 'parent_header', 'exiter', 'ask_exit', "
                             "'set_next_input', 'enable_gui', 'enable_matplotlib', 'keepkernel_on_exit', "
                             "'_last_traceback', 'payload_manager', 'user_module', 'display_pub', 'displayhook') "
                             "if not hasattr(get_ipython(), a)]"),
    cell("display_pub_attributes", "[a for a in ('session', 'pub_socket', 'parent_header', 'topic', "
                                   "'clear_output', 'publish', 'register_hook', 'unregister_hook') "
                                   "if not hasattr(get_ipython().display_pub, a)]"),
    cell("main_module", "sys.modules['__main__'] is get_ipython().user_module"),
    cell("sys_path", "sys.path"),
    # other shell requests
    req("kernel_info", "kernel_info_request"),
    req("complete_builtin", "complete_request", code="pri", cursor_pos=3),
    req("complete_import", "complete_request", code="import o", cursor_pos=8),
    req("complete_attribute", "complete_request", code="'abc'.up", cursor_pos=8),
    req("complete_namespace", "complete_request", code="uex", cursor_pos=3),
    req("complete_magic", "complete_request", code="%ti", cursor_pos=3),
    req("inspect_len_0", "inspect_request", code="len", cursor_pos=3, detail_level=0),
    req("inspect_len_1", "inspect_request", code="len", cursor_pos=3, detail_level=1),
    req("inspect_user_function", "inspect_request", code="f(", cursor_pos=2, detail_level=0),
    req("inspect_user_function_source", "inspect_request", code="f", cursor_pos=1, detail_level=1),
    req("complete_module_attribute", "complete_request", code="os.pa", cursor_pos=5),
    req("inspect_unknown", "inspect_request", code="nothing_here", cursor_pos=12, detail_level=0),
    req("is_complete_complete", "is_complete_request", code="x = 1"),
    req("is_complete_incomplete", "is_complete_request", code="for i in range(3):"),
    req("is_complete_invalid", "is_complete_request", code="1 +* 2"),
    req("history_tail", "history_request", output=False, raw=True, hist_access_type="tail", n=3),
    req("history_tail_output", "history_request", output=True, raw=False, hist_access_type="tail", n=2),
    req("history_range", "history_request", output=False, raw=True, hist_access_type="range", session=0,
        start=1, stop=3),
    req("history_search", "history_request", output=False, raw=True, hist_access_type="search",
        pattern="print*", n=2, unique=True),
    req("connect", "connect_request"),
    req("comm_info", "comm_info_request"),
    req("control_kernel_info", "kernel_info_request", channel="control"),
    req("control_usage", "usage_request", channel="control"),
    Entry("unknown_subshell", code="1", header={"subshell_id": "nope"}),
    req("control_interrupt_while_idle", "interrupt_request", channel="control"),
    cell("alive_after_interrupt", "'alive'"),
]

IDS = [e.id for e in CORPUS]


NO_STDIN = ("input_without_stdin", "getpass_without_stdin", "debug_without_stdin", "set_trace_without_stdin")


def without_ipymini_magics(text):
    """%lsmagic's listing without the magics only ipymini has."""
    return re.sub(r"  %(?:checkpoint|rollback|%transaction)\b", "", text) if isinstance(text, str) else text


def without_host_cpu(reply):
    """usage_reply's field names, host_cpu_percent left out (psutil's first reading is 0.0, omitted),
    and ipymini's memory_guard."""
    return sorted(k for k in reply if k not in ("host_cpu_percent", "memory_guard")) if isinstance(
        reply, dict) else reply


def without_debugger_field(reply):
    return {k: v for k, v in reply.items() if k != "debugger"} if isinstance(reply, dict) else reply


def kernel_source_masked(iopub):
    """iopub with the kernel's own source lines in pdb listings and tracebacks masked."""
    if not isinstance(iopub, list):
        return iopub
    out = []
    for item in iopub:
        if isinstance(item, dict) and "text" in item and "stream" in item:
            item = {**item, "text": "<pdb listing>" if "StdinNotImplementedError" in item["text"] or
                    "raw_input was called" in item["text"] else item["text"]}
        elif isinstance(item, dict) and "traceback" in item.get("content", {}):
            item = {**item, "content": {**item["content"],
                                        "traceback": without_kernel_frames(item["content"]["traceback"])}}
        out.append(item)
    return out


def fd_ours(value):
    """Masks what depends on capturing fds 1/2 (see the allowed difference)."""
    return "<fd output: allowed>"


def error_name_only_ours(reply):
    """The reply with the error's name and value masked."""
    if not isinstance(reply, dict):
        return reply
    return {k: ("<allowed>" if k in ("ename", "evalue", "traceback") else v) for k, v in reply.items()}


def without_stderr(iopub):
    """iopub without its stderr text (the view's stream items)."""
    return [item for item in iopub if item.get("stream") != "stderr"] if isinstance(iopub, list) else iopub


def without_display_publisher(text):
    return text.replace("    ZMQDisplayPublisher\n", "") if isinstance(text, str) else text


SOCKET_ATTRIBUTES = ("stdin_socket", "io_loop", "shell_stream", "control_stream", "iopub_thread")


def without_socket_attributes(data):
    """The probe's list of attributes missing in a kernel, without the socket-level ones."""
    if not isinstance(data, dict) or not isinstance(data.get("text/plain"), str):
        return data
    missing = ast.literal_eval(data["text/plain"])
    return {**data, "text/plain": repr([a for a in missing if a not in SOCKET_ATTRIBUTES])}


def without_kernel_frames(traceback):
    """A traceback without the frames in the kernel's own code (ipykernel's or ipymini's)."""
    if not isinstance(traceback, list):
        return traceback
    return [line for line in traceback if not re.search(r"/(?:ipykernel|ipymini)/(?:\w+/)*\w+\.py", line)]


def without_jedi_types(completion):
    """A `_jupyter_types_experimental` item without the fields computed under a time budget."""
    return {k: v for k, v in completion.items() if k not in ("type", "signature")}


COMPLETIONS = tuple(e.id for e in CORPUS if e.msg_type == "complete_request")

ALLOWED_DIFFERENCES = [
    Allowed(("gui_wx", "gui_gtk3", "gui_tk_without_display"), ("iopub",), without_stderr,
            "a GUI loop that cannot start (no wx, no PyGObject, no display) says why in the cell; "
            "ipykernel 7.4 accepts it silently, logs the same error in the kernel's own log, and keeps "
            "the broken loop until a bare %gui"),
    Allowed(("*",), ("iopub",), STREAM_TEXT,
            "stream chunking: ipymini coalesces stream writes and ipykernel flushes stdout and stderr on "
            "separate timers, so the view compares the concatenated text per stream between two "
            "non-stream messages, not the messages (differential.view); message order is compared"),
    Allowed(("fd_stdout_then_result", "fd_stderr", "os_system"), ("iopub",), STREAM_TEXT_ANYWHERE,
            "ipykernel forwards fd output from a watcher thread that the 0.2 s flush timer publishes: "
            "whether it lands before the result, after it, or even after idle is a race in ipykernel, "
            "so only the text is compared (collected past idle: Entry.late_streams)"),
    Allowed(("kernel_info", "control_kernel_info"), ("reply", "implementation"), masked,
            "implementation name: 'ipymini' by design"),
    Allowed(("kernel_info", "control_kernel_info"), ("reply", "implementation_version"), masked,
            "implementation version: ipymini's own"),
    Allowed(("kernel_info", "control_kernel_info"), ("reply", "banner"), masked,
            "banner: names the kernel"),
    Allowed(("kernel_class_name",), ("iopub", "*", "content", "data"), masked,
            "the kernel object's class is ipymini's own (only its attributes libraries use must match)"),
    Allowed(COMPLETIONS, ("reply", "metadata", "_jupyter_types_experimental", "*"), without_jedi_types,
            "not a kernel difference but a race: IPython computes completion types and signatures under a "
            "time budget (IPCompleter.jedi_compute_type_timeout), so on a loaded machine either kernel "
            "answers '<unknown>' for some matches"),
    Allowed(COMPLETIONS, ("reply", "matches"), sorted_list,
            "completion order is not meaningful (frontends filter and sort matches): compared as sets"),
    Allowed(COMPLETIONS, ("reply", "metadata", "_jupyter_types_experimental"), sorted_list,
            "same as the matches: the typed completions come in another order"),
    Allowed(("lsmagic",), ("iopub", "*", "content", "data", "text/plain"), without_ipymini_magics,
            "ipymini's own magics (%checkpoint, %rollback, %%transaction) are extras by design"),
    Allowed(("complete_builtin",), ("reply", "matches"), masked,
            "ipykernel 7.4 with jedi 0.20 completes no builtin name (`pri` -> []); ipymini completes `print`"),
    Allowed(("complete_builtin",), ("reply", "cursor_start"), masked, "as the matches above"),
    Allowed(("complete_builtin",), ("reply", "metadata", "_jupyter_types_experimental"), masked,
            "as the matches above"),
    Allowed(("pdb_error_without_stdin",), ("iopub",), kernel_source_masked,
            "with %pdb on and no stdin, pdb shows the kernel's own line that raised "
            "StdinNotImplementedError (ipykernel's kernelbase.py, ipymini's scheduling/stdin.py); the "
            "messages, the cell's frames and the errors must match"),
    Allowed(("pdb_error_without_stdin",), ("reply", "traceback"), without_kernel_frames,
            "as the pdb listing above: the StdinNotImplementedError is raised in each kernel's own code"),
    Allowed(("breakpoint_without_stdin",), ("*",), masked,
            "ipykernel 7.4 ignores breakpoint() (debugpy's breakpointhook, installed when ipykernel "
            "imports debugpy, does nothing without a debugger attached: ipykernel#897, open); ipymini "
            "stops in pdb as `python` does, so without stdin it raises StdinNotImplementedError as "
            "pdb.set_trace() does (test_stdin.py checks breakpoint() with and without stdin)"),
    Allowed(NO_STDIN, ("reply", "traceback"), without_kernel_frames,
            "input() is the kernel's own: its frames differ (ipykernel Kernel.raw_input; ipymini "
            "Bridge input -> StdinBroker.request_input); the cell's frame and the error line must match"),
    Allowed(NO_STDIN, ("iopub", "*", "content", "traceback"), without_kernel_frames,
            "as the reply's traceback above"),
    Allowed(("connect",), ("reply",), keys_only,
            "ports are each kernel's own connection: compare which fields are reported"),
    Allowed(("control_usage",), ("reply",), without_host_cpu,
            "usage numbers (memory, cpu) are the process's own: compare which fields are reported; "
            "host_cpu_percent is left out by both kernels whenever psutil measures 0.0; ipymini adds "
            "memory_guard (the memory guard's limit, where it comes from and the use against it)"),
    Allowed(("kernel_info", "control_kernel_info"), ("reply", "protocol_version"), masked,
            "ipykernel 7.4 says '5.3' (a stale constant in its _version.py) while it implements 5.5 "
            "(subshells, kernel_info on control) and its kernelspec says 5.5; ipymini says 5.6, which "
            "adds the kernel handshake (JEP 66, test_handshake.py) that ipykernel does not have"),
    Allowed(("kernel_info", "control_kernel_info"), ("reply",), without_debugger_field,
            "ipymini still sends the `debugger` field that frontends before JEP 92's supported_features "
            "read; ipykernel 7.4 dropped it"),
    Allowed(("fd_stdout_then_result", "fd_stderr", "os_system", "stdout_attributes"), ("*",), fd_ours,
            "ipykernel 7.4 does not capture fds 1/2 in this setup: what C code and subprocesses write goes "
            "to the kernel process's own stdout (the server log) and sys.stdout.fileno() raises; ipymini "
            "captures them into the cell, before the result (test_ipykernel_parity checks the order)"),
    Allowed(("ipykernel_imported",), ("iopub", "*", "content", "data"), masked,
            "ipymini does not import ipykernel (a stand-in module answers `ipykernel.zmqshell`)"),
    Allowed(("sigint_handler",), ("iopub", "*", "content", "data"), masked,
            "ipymini's own SIGINT handler delivers an interrupt only into user code, never into the "
            "kernel's bookkeeping (interrupts.py); ipykernel installs default_int_handler during a cell"),
    Allowed(("repr_raises",), ("reply",), error_name_only_ours,
            "a formatter that raises fails the cell in both; ipykernel names the error 'NoneType: None' "
            "(it loses the exception), ipymini names the ValueError raised"),
    Allowed(("config_list",), ("iopub", "*", "text"), without_display_publisher,
            "ipykernel's display publisher has a config trait (store_display_history) and so shows in "
            "%config; ipymini's has none"),
    Allowed(("kernel_attributes",), ("iopub", "*", "content", "data"), without_socket_attributes,
            "ipykernel's sockets, tornado streams and IO loop (stdin_socket, shell_stream, "
            "control_stream, io_loop, iopub_thread) have no equivalent: user code never gets a socket of "
            "the kernel's (kernel.iopub_socket is a stand-in that queues on iopub)"),
    Allowed(("history_tail_output",), ("reply", "history"), masked,
            "asked for output, ipymini answers with the outputs of the current session (kept in memory); "
            "ipykernel answers None unless HistoryManager.db_log_output is on"),
    Allowed(("history_range",), ("reply", "history"), masked,
            "ipymini answers with the session's real number whatever access type asked (IPython numbers "
            "the current session 0 in get_range only): the same entries, consistent with tail"),
]


@pytest.fixture(scope="module")
def differential():
    """Both kernels started, the whole corpus run in order, each entry's two views."""
    ref, mini = start_pair()
    try:
        answers = run_corpus((ref, mini), CORPUS)
    finally:
        stop_all((ref, mini))
    views = {}
    for entry in CORPUS:  # in order: view() makes execution counts relative to the previous entry's
        a, b = answers[entry.id]
        mode = stream_mode(entry.id, ALLOWED_DIFFERENCES)
        views[entry.id] = (view(a, ref, entry, mode), view(b, mini, entry, mode))
    return views


def test_allowed_differences_name_corpus_entries():
    """Every allowed difference names entries that exist, and says why."""
    for a in ALLOWED_DIFFERENCES:
        assert a.reason and set(a.entries) <= set(IDS) | {"*"}, a
    assert len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("entry_id", IDS)
def test_same_as_ipykernel(differential, entry_id):
    """ipymini answers this entry as ipykernel does, up to the allowed differences."""
    ref, mini = (apply_allowed(v, entry_id, ALLOWED_DIFFERENCES) for v in differential[entry_id])
    assert "harness_error" not in ref, ref
    diffs = compare(ref, mini)
    if diffs:
        pytest.fail(report(entry_id, diffs), pytrace=False)
