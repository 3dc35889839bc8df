"""Start Enterprise Gateway (run with the EG venv's python) treating IPYMINI_TEST_SSH_HOSTS as remote.

EG launches a kernel on a `remote_hosts` entry through SSH only when the address is not one of this
machine's (`BaseProcessProxyABC.ip_is_local`); for a local address it skips SSH and starts the
launcher with Popen. The test's sshd listens on 127.0.0.1 (no other address may be used here), so this
wrapper makes EG treat that one address as a remote host: launch, signals and kill then all go through
SSH exactly as for a real remote machine. Nothing else in EG is changed.
"""

import os
import sys

from enterprise_gateway.services.processproxies.processproxy import BaseProcessProxyABC

_remote = set(filter(None, os.environ.get("IPYMINI_TEST_SSH_HOSTS", "").split(",")))
_is_local = BaseProcessProxyABC.ip_is_local
BaseProcessProxyABC.ip_is_local = staticmethod(lambda ip: ip not in _remote and _is_local(ip))

from enterprise_gateway.enterprisegatewayapp import launch_instance  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch_instance())
