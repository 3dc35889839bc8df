"""What the tests share: one place for each helper.

- `kernel.py`: `KernelHarness`, the real kernel in a subprocess through jupyter_client (the repository's
  kernelspec): `send` a request on shell or control (to a subshell), `shell_reply` (its reply on either
  channel), `ask`/`control` (send and wait for the reply only), `request`/`execute`/`run_ok` (reply and
  iopub through idle), `iopub_until_idle`, `wait_all` (several concurrent requests), `submit` (an
  execute_request without waiting), `create_subshell`, `drain_iopub`; `value(kernel, expr)`;
  `reply_to(kc, msg_id)` for a client of one's own.
- `messages.py`: `stream_text`, `of_type`, `result_text` over collected messages.
- `processes.py`: `rss_mb`, `wait_gone`, `pid_alive`, leftovers by command line.
- `fixtures.py`: the `kernel` fixture (one kernel per test module; conftest.py provides it).
- `debug.py`: `DebugClient`, DAP requests as debug_request on control, like JupyterLab's debugger.
- `lab.py`: JupyterLab in headless Chromium (the `chromium` fixture, private server dirs, a notebook
  page, running cells, the stop button).
- `gateway.py`: servers in subprocesses, a REST client and a kernel websocket for the gateway tests.
- `notebooks.py`: notebooks run with nbclient and compared; `cgroup.py`: memory cgroups for the memory
  guard's tests (kernels entered through `pytests/cgexec.py`).

Every wait has a timeout; each ZMQ socket or websocket is used by one thread.
"""

from harness.kernel import KERNEL_NAME, REPO, TIMEOUT, KernelHarness, use_repo_kernelspec, value  # noqa: F401
from harness.messages import of_type, result_text, stream_text  # noqa: F401
from harness.processes import rss_mb, wait_gone  # noqa: F401
