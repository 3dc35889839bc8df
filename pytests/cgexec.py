"""`python cgexec.py CGROUP_DIR -- PROGRAM ARGS...`: enter the memory cgroup, then become PROGRAM.

The memory guard's tests start kernels through it (harness/cgroup.py), so the kernel and what it starts
are in the test's cgroup and the test process is not."""

import os
import sys

cgroup, separator, *argv = sys.argv[1:]
assert separator == "--" and argv, __doc__
with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
os.execv(argv[0], argv)
