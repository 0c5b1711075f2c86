"""Starting server processes from tests that die with the test run.

A Python `preexec_fn` makes subprocess fork and run Python in the child
before exec; in a test process whose grpc threads are busy that child
sometimes dies (SIGSEGV/SIGABRT) before it starts: 36 of 150 spawns during
grpc.aio traffic, measured by the Jepsen tests' author. So children start
without one (subprocess can then use vfork/posix_spawn) through a tiny
launcher that sets PR_SET_PDEATHSIG itself and exec's the real program: same
PID, so helpers still stop it by PID, and it gets SIGTERM if the test
process dies.
"""
from __future__ import annotations

import os
import sys

_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)\n"
    "except OSError:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('launcher: parent already gone')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """argv that runs `argv` (argv[0] a path) so it is SIGTERM'd when we die."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    prog = argv[0]
    if os.sep not in prog:
        import shutil
        prog = shutil.which(prog) or prog
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), prog, *argv[1:]]
