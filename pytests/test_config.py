"""IPython configuration reaches the kernel: profile config files, startup files, extensions, CLI options."""

import os
import textwrap

import pytest
from harness import REPO, KernelHarness, of_type, stream_text, value


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    root = tmp_path_factory.mktemp("ipymini-config")
    ipdir = root / "ipython"
    profile = ipdir / "profile_default"
    (profile / "startup").mkdir(parents=True)
    (profile / "ipython_config.py").write_text("c.InteractiveShellApp.exec_lines = ['from_ipython_config = 1']\n")
    (profile / "ipython_kernel_config.py").write_text(textwrap.dedent("""\
        c.InteractiveShellApp.exec_lines = ['from_kernel_config = 2']
        c.InteractiveShellApp.extensions = ['ipymini_test_ext']
        c.InteractiveShell.display_page = True
    """))
    (profile / "startup" / "00-first.py").write_text("from_startup = ['00']\n")
    (profile / "startup" / "10-second.py").write_text("from_startup.append('10')\n")
    ext = root / "ext"
    ext.mkdir()
    (ext / "ipymini_test_ext.py").write_text(textwrap.dedent("""\
        def load_ipython_extension(ip):
            ip.user_ns['ext_loaded'] = True
            ip.register_magic_function(lambda line: 'ext magic ' + line, 'line', 'extmagic')
    """))
    env = {"IPYTHONDIR": str(ipdir),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(ext), os.environ.get("PYTHONPATH", "")])}
    k = KernelHarness(env=env, extra_args=["--InteractiveShell.ast_node_interactivity=all",
                                           "--HistoryManager.hist_file=:memory:"])
    yield k
    k.stop()


def test_profile_config_files(configured):
    # ipython_kernel_config.py is read after ipython_config.py and wins for the same trait
    assert value(configured, "from_kernel_config") == "2"
    assert value(configured, "'from_ipython_config' in globals()") == "False"
    assert value(configured, "get_ipython().display_page") == "True"


def test_startup_files_run_in_order(configured):
    assert value(configured, "from_startup") == "['00', '10']"


def test_configured_extension_is_loaded(configured):
    assert value(configured, "ext_loaded") == "True"
    [result] = of_type(configured.run_ok("%extmagic hi"), "execute_result")
    assert result["content"]["data"]["text/plain"] == "'ext magic hi'"


def test_command_line_options(configured):
    assert value(configured, "get_ipython().ast_node_interactivity") == "'all'"
    assert value(configured, "str(get_ipython().history_manager.hist_file)") == "':memory:'"
    # ast_node_interactivity=all shows every expression statement
    results = of_type(configured.run_ok("1 + 1\n2 + 2"), "execute_result")
    assert [r["content"]["data"]["text/plain"] for r in results] == ["2", "4"]


def test_display_page_config_shows_pager_output_inline(configured):
    reply, msgs = configured.execute("zip?")
    assert reply["content"]["payload"] == []
    [disp] = of_type(msgs, "display_data")
    assert "zip" in disp["content"]["data"]["text/plain"]


def test_kernel_attribute_and_streams(kernel):
    assert value(kernel, "get_ipython().kernel is not None") == "True"
    # ipykernel's API for user code, not the kernel itself (shell/ipykernel_api.py)
    assert value(kernel, "type(get_ipython().kernel).__name__") == "'IPyKernelAPI'"
    assert value(kernel, "(sys := __import__('sys')).stdout.isatty(), sys.stderr.isatty()") == \
        "(False, False)"
    assert stream_text(kernel.run_ok("import sys; print(sys.stdout.isatty())")) == "False\n"


def test_bad_config_option_does_not_stop_the_kernel(tmp_path):
    k = KernelHarness(extra_args=["--InteractiveShell.no_such_trait=1"])
    try:
        assert stream_text(k.run_ok("print('up')")) == "up\n"
    finally:
        k.stop()
