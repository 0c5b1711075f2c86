"""Launching member processes: raftnode or the real etcd, with etcd's flags.

The one module that starts, stops, signals and adopts local members, for the
console's host mode (raftui/host/process_host.py), the test support
(tests/support) and the benchmarks (bench/):

    ports = free_ports(2)
    argv = [*raftnode_command(), *member_flags("n1", data, client_url, peer_url,
                                               "n1=" + peer_url, token="t")]
    p = spawn(argv, log_path)              # or etcd: [etcd_binary(), *flags, *ETCD_LOG_FLAGS]
    p.pause(); p.resume()                  # SIGSTOP / SIGCONT, returning once it shows
    stop([p], timeout=10.0)                # SIGTERM, then SIGKILL at the deadline
    p = adopt(pid_file, data_dir)          # a member an earlier run left going

raftnode takes etcd's member flags, so one flag list serves both. Standard
library only: the console imports this without the server.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterable, Sequence

HOST = "127.0.0.1"
# etcd's own logging to stderr (its default file logger writes nothing useful there).
ETCD_LOG_FLAGS = ("--logger", "zap", "--log-outputs", "stderr")
# Seconds to wait for a process to vanish after SIGKILL (it cannot refuse).
REAP_AFTER_KILL = 10.0


# -- ports -------------------------------------------------------------------------

_ports_lock = threading.Lock()
_handed_out: set[int] = set()


def free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct ports that were free on `host` a moment ago.

    The OS picks them (bind to 0), every probe held open until all are
    chosen; within this process a port is never handed out twice, which is
    what matters when several members start at once. Between the probe and
    the member binding it another process could take a port: a short window.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        with _ports_lock:
            attempts = 0
            while len(ports) < count:
                attempts += 1
                if attempts > 100 * (count + 1):
                    raise RuntimeError(f"could not find {count} free ports on {host}")
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(s)
                s.bind((host, 0))
                port = s.getsockname()[1]
                if port not in _handed_out:
                    ports.append(port)
            _handed_out.update(ports)
    finally:
        for s in probes:
            s.close()
    return ports


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def listening(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# -- commands ------------------------------------------------------------------------

def raftnode_command(*, installed_script: bool = True) -> list[str] | None:
    """How to run our member: the `raftnode` script on PATH (unless
    installed_script is False: tests run this checkout), else
    `python -m engine`; None if neither exists."""
    if installed_script:
        script = shutil.which("raftnode")
        if script:
            return [script]
    if importlib.util.find_spec("engine.cli.main") is not None:
        return [sys.executable, "-m", "engine"]
    return None


def etcd_binary() -> str | None:
    """The real etcd: $RAFTUI_ETCD, else PATH, else /usr/bin/etcd; None if not executable."""
    explicit = os.environ.get("RAFTUI_ETCD")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("etcd") or "/usr/bin/etcd"
    return found if os.access(found, os.X_OK) else None


def member_flags(name: str, data_dir: os.PathLike | str, client_url: str, peer_url: str,
                 initial_cluster: str, token: str, *, state: str = "new",
                 fault_injection: bool = False) -> list[str]:
    """etcd's flags for one member on one client and one peer URL; raftnode
    takes the same ones (`--enable-fault-injection` is raftnode's own)."""
    flags = [
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", initial_cluster,
        "--initial-cluster-state", state,
        "--initial-cluster-token", token,
    ]
    if fault_injection:
        flags.append("--enable-fault-injection")
    return flags


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment minus ETCD_* / ETCDCTL_*, which would silently override flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    env.update(extra or {})
    return env


# A Python `preexec_fn` makes subprocess run Python in the forked child before
# exec; in a process whose grpc threads are busy that child sometimes dies
# (SIGSEGV/SIGABRT) before it starts (36 of 150 spawns under grpc.aio traffic,
# measured by the Jepsen tests' author). So children start without one
# (subprocess can use vfork/posix_spawn) through this tiny launcher, which
# sets PR_SET_PDEATHSIG itself and exec's the real program: same PID.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)\n"
    "except OSError:\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('launcher: parent already gone')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` so it gets SIGTERM when this process dies (Linux;
    elsewhere argv unchanged). The signal follows the thread that forked:
    start from the main thread."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    prog = argv[0]
    if os.sep not in prog:
        prog = shutil.which(prog) or prog
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), prog, *argv[1:]]


# -- processes -----------------------------------------------------------------------

def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat (R, S, T, Z ...), None if no such process."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)  # the kernel acts within microseconds; this only bounds the wait


class MemberProcess:
    """A member's process: our child (with its Popen) or adopted by PID."""

    def __init__(self, pid: int, popen: subprocess.Popen | None = None) -> None:
        self.pid = pid
        self.popen = popen

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return proc_state(self.pid) not in (None, "Z", "X")

    def paused(self) -> bool:
        """Stopped by SIGSTOP (state T)."""
        return proc_state(self.pid) in ("T", "t")

    def reap(self, timeout: float) -> bool:
        """Wait until the process is gone; True if it is."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.02)  # an adopted (non-child) process: no wait() possible
        return not self.alive()

    def signal(self, sig: int) -> bool:
        """Send sig; False if the process is gone."""
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def kill(self) -> None:
        """kill -9, and reap."""
        self.signal(signal.SIGKILL)
        self.reap(REAP_AFTER_KILL)

    def pause(self) -> None:
        """SIGSTOP; returns once the stop shows (signals arrive asynchronously)."""
        self.signal(signal.SIGSTOP)
        _wait_for(lambda: self.paused() or not self.alive(), 1.0)

    def resume(self) -> None:
        """SIGCONT; returns once the process runs again."""
        self.signal(signal.SIGCONT)
        _wait_for(lambda: not self.paused(), 1.0)


def spawn(argv: Sequence[str], log_path: os.PathLike | str, *, env: dict[str, str] | None = None,
          cwd: os.PathLike | str | None = None, detach: bool = False, die_with_parent: bool = False,
          pid_file: os.PathLike | str | None = None) -> MemberProcess:
    """Start argv with stdout and stderr appended to log_path, stdin closed.

    detach: in its own session, so the starter's terminal (^C, quitting the
    console) does not take it down. die_with_parent: SIGTERM when the
    starter dies (tests). env defaults to clean_env(). pid_file: where to
    write its PID (for adopt()). Raises OSError if argv cannot run.
    """
    if die_with_parent:
        argv = with_parent_death_signal(argv)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env=clean_env() if env is None else env, cwd=cwd,
                                 start_new_session=detach)
    if pid_file is not None:
        pathlib.Path(pid_file).write_text(f"{popen.pid}\n")
    return MemberProcess(popen.pid, popen)


def stop(procs: Iterable[MemberProcess], timeout: float = 10.0) -> list[MemberProcess]:
    """SIGTERM every process (SIGCONT too: a paused one must run to see it),
    then reap them against one deadline, SIGKILL for any still there.
    Returns those still alive even after SIGKILL (normally none)."""
    told = [p for p in procs if p.alive() and p.signal(signal.SIGTERM)]
    for p in told:
        p.signal(signal.SIGCONT)
    deadline = time.monotonic() + timeout
    for p in told:
        if not p.reap(max(0.0, deadline - time.monotonic())):
            p.kill()
    return [p for p in told if p.alive()]


def adopt(pid_file: os.PathLike | str, data_dir: os.PathLike | str) -> MemberProcess | None:
    """The member an earlier run left going: the PID in pid_file, if that
    process is alive and runs on data_dir (else the PID was reused)."""
    try:
        pid = int(pathlib.Path(pid_file).read_text())
    except (OSError, ValueError):
        return None
    return MemberProcess(pid) if _runs_on(pid, data_dir) else None


def find_by_data_dir(data_dir: os.PathLike | str) -> MemberProcess | None:
    """A live process of this user running with --data-dir data_dir (a member
    started by hand, or one whose PID file is gone); None if there is none."""
    me = os.getpid()
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and _runs_on(int(entry.name), data_dir):
            return MemberProcess(int(entry.name))
    return None


def _runs_on(pid: int, data_dir: os.PathLike | str) -> bool:
    """pid is alive and its command line has --data-dir data_dir (either spelling)."""
    if proc_state(pid) in (None, "Z", "X"):
        return False
    try:
        args = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    path = str(data_dir).encode()
    return any((a == b"--data-dir" or a == b"-data-dir") and b == path for a, b in zip(args, args[1:])) \
        or b"--data-dir=" + path in args or b"-data-dir=" + path in args
