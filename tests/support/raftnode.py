"""Run our own `raftnode` (``python -m engine``) clusters for integration tests.

The same shape as tests/support/etcd.py, for the member under test:

    cluster = start_raftnode_cluster(tmp_dir, size=3)
    try:
        leader = cluster.wait_leader(timeout=10)
        etcdctl(cluster.endpoints, "put", "k", "v", check=True)
        cluster.kill(leader)            # SIGKILL
        cluster.wait_leader(timeout=10)
        cluster.restart(leader)         # same flags, same data dir
    finally:
        cluster.stop()

Every member runs on free 127.0.0.1 ports with its data dir and log under the
given directory, with etcd's flags (``--enable-fault-injection`` unless told
otherwise, so the Fault service is on the client port). Start-up waits, with a
deadline, until every member listens on its client port and one member is
leader. Leadership is read from Maintenance.Status on every endpoint (short
gRPC deadlines); while a member does not serve the etcd API yet, the helper
falls back to the "leader is <id> in term <t>" lines of the member logs.

Members are stopped by PID (SIGTERM, SIGKILL after a deadline); clusters
still running at interpreter exit are stopped by an atexit hook, and each
member gets SIGTERM if the test process dies (Linux PR_SET_PDEATHSIG; start
clusters from the main thread, since the signal follows the thread that
forked).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import signal
import time
import uuid
from typing import Sequence

from engine.cli import launch

from . import ports
from .member import ProcessCluster, ProcessMember

HOST = ports.HOST
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# "2024-01-01 00:00:00,000 n1 INFO engine.server: leader: leader is 1a2b in term 3 (was ..)"
_LEADER_LINE = re.compile(rb"leader: (?:leader is ([0-9a-f]+) in term (\d+)|no leader \(term (\d+)\))")


class RaftnodeError(RuntimeError):
    """A raftnode cluster could not be started, or did not get a leader in time."""


def raftnode_command() -> list[str]:
    """argv prefix that runs a member of this checkout: [python, -m, engine]
    (never an installed `raftnode` script)."""
    return launch.raftnode_command(installed_script=False)


def _member_id(peer_url: str, token: str) -> int | None:
    try:
        from engine.server.config import member_id
    except ImportError:  # pragma: no cover -- the engine is in this repository
        return None
    return member_id([peer_url], token)


@dataclasses.dataclass
class RaftnodeMember(ProcessMember):
    args: list[str] = dataclasses.field(default_factory=list)   # the full argv, reused by restart
    member_id: int | None = None
    paused: bool = False

    def listening(self, timeout: float = 0.5) -> bool:
        """True when something accepts TCP connections on the client port."""
        return launch.listening(self.client_port, HOST, timeout)

    def logged_leader(self) -> tuple[int, int] | None:
        """(leader id, term) from the last leader line of this member's log; None if no leader."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return None
        last = None
        for last in _LEADER_LINE.finditer(data):
            pass
        if last is None or last.group(1) is None:
            return None
        return int(last.group(1), 16), int(last.group(2))


@dataclasses.dataclass(eq=False)
class RaftnodeCluster(ProcessCluster):
    members: list[RaftnodeMember]
    extra_args: tuple[str, ...] = ()
    fault_injection: bool = True

    # ------------------------------------------------------------------ queries

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def index_of(self, member_id: int) -> int | None:
        for i, m in enumerate(self.members):
            if m.member_id == member_id:
                return i
        return None

    def status(self, i: int, timeout: float = 0.5):
        """Maintenance.Status of member i (an rpc_pb2.StatusResponse), or None if it does not answer."""
        import grpc

        from engine.proto import rpc_pb2, rpc_pb2_grpc

        m = self.members[i]
        if not m.running() or m.paused:
            return None
        try:
            with grpc.insecure_channel(m.endpoint) as ch:
                stub = rpc_pb2_grpc.MaintenanceStub(ch)
                return stub.Status(rpc_pb2.StatusRequest(), timeout=timeout)
        except grpc.RpcError:
            return None

    def _grpc_leader(self) -> tuple[int | None, bool]:
        """(index of the member whose Status says it is the leader, whether any member served Status).

        Several members may claim leadership for a moment (an isolated old
        leader before check-quorum demotes it): the highest term wins.
        """
        answered = False
        best: tuple[int, int] | None = None   # (term, index)
        for i in range(len(self.members)):
            st = self.status(i)
            if st is None:
                continue
            answered = True
            if st.leader and st.leader == st.header.member_id:
                idx = self.index_of(st.leader)
                term = st.raftTerm or st.header.raft_term
                if idx is not None and (best is None or term > best[0]):
                    best = (term, idx)
        return (best[1] if best else None), answered

    def _logged_leader(self) -> int | None:
        """The leader that a majority of live members logged last, at the highest term seen."""
        votes: dict[tuple[int, int], int] = {}
        live = [m for m in self.members if m.running() and not m.paused]
        for m in live:
            seen = m.logged_leader()
            if seen is not None:
                votes[seen] = votes.get(seen, 0) + 1
        if not votes:
            return None
        (lead, _term), count = max(votes.items(), key=lambda kv: (kv[0][1], kv[1]))
        idx = self.index_of(lead)
        if idx is None or count < len(self.members) // 2 + 1:
            return None
        m = self.members[idx]
        return idx if m.running() and not m.paused else None

    def leader_index(self) -> int | None:
        """Index of the current leader, or None when no member (or only the logs) can say."""
        idx, answered = self._grpc_leader()
        if idx is not None or answered:
            return idx
        return self._logged_leader()

    def wait_leader(self, timeout: float = 15.0, *, exclude: Sequence[int] = ()) -> int:
        """Poll until some member (not in `exclude`) is leader; return its index."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            idx = self.leader_index()
            if idx is not None and idx not in exclude:
                return idx
            if time.monotonic() >= deadline:
                tails = "\n".join(f"--- {m.name}:\n{m.log_tail(1500)}" for m in self.members)
                raise RaftnodeError(f"no leader after {timeout}s (excluding {list(exclude)})\n{tails}")
            time.sleep(0.05)  # poll interval, not synchronisation

    def wait_listening(self, timeout: float = 30.0, which: Sequence[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(range(len(self.members)) if which is None else which)
        while True:
            self._check_alive()
            pending = [i for i in pending if not self.members[i].listening()]
            if not pending:
                return
            if time.monotonic() >= deadline:
                tails = "\n".join(f"--- {self.members[i].name}:\n{self.members[i].log_tail()}" for i in pending)
                raise RaftnodeError(f"members {pending} not listening after {timeout}s\n{tails}")
            time.sleep(0.05)  # poll interval, not synchronisation

    def _check_alive(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.returncode is None and m.proc.poll() is not None:
                if m.proc.returncode not in (-signal.SIGKILL, -signal.SIGTERM):
                    raise RaftnodeError(f"raftnode {m.name} (pid {m.pid}) exited with "
                                        f"{m.proc.returncode}:\n{m.log_tail()}")

    # ------------------------------------------------------------------ processes

    def _spawn(self, m: RaftnodeMember) -> None:
        env = launch.clean_env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        m.paused = False
        m.proc = launch.spawn(m.args, m.log_path, env=env, cwd=REPO_ROOT, die_with_parent=True).popen

    def kill(self, i: int) -> None:
        """kill -9 member i (by PID) and reap it."""
        m = self.members[i]
        if not m.running():
            return
        m.process.kill()
        m.paused = False

    def restart(self, i: int, *, wait: bool = True, timeout: float = 30.0) -> None:
        """Start member i again with the same flags and data dir (after kill or stop)."""
        m = self.members[i]
        if m.running():
            raise RaftnodeError(f"{m.name} is still running (pid {m.pid})")
        self._spawn(m)
        self.track()
        if wait:
            self.wait_listening(timeout, which=[i])

    def pause(self, i: int) -> None:
        """SIGSTOP member i: the process stays but answers nothing."""
        m = self.members[i]
        if m.running():
            m.process.signal(signal.SIGSTOP)
            m.paused = True

    def resume(self, i: int) -> None:
        """SIGCONT after pause."""
        m = self.members[i]
        if m.running():
            m.process.signal(signal.SIGCONT)
        m.paused = False

    def add_member(self, name: str, *, wait: bool = True, timeout: float = 30.0,
                   extra_args: Sequence[str] = ()) -> RaftnodeMember:
        """Pick ports for a new member and start it joining (--initial-cluster-state existing).

        For `member add`, which needs the peer URL first, use plan_member(),
        run `member add NAME --peer-urls=<m.peer_url>`, then start_planned(m).
        """
        m = self.plan_member(name)
        return self.start_planned(m, wait=wait, timeout=timeout, extra_args=extra_args)

    def plan_member(self, name: str) -> RaftnodeMember:
        """Pick ports and paths for a member that `member add` will announce (not started)."""
        cport, pport = ports.free_ports(2)
        m = RaftnodeMember(name=name, client_port=cport, peer_port=pport,
                           data_dir=self.data_dir / f"{name}.data", log_path=self.data_dir / f"{name}.log")
        m.member_id = None  # a member added at runtime gets a random id from the cluster
        return m

    def start_planned(self, m: RaftnodeMember, *, initial_cluster: str | None = None, wait: bool = True,
                      timeout: float = 30.0, extra_args: Sequence[str] = ()) -> RaftnodeMember:
        """Start a planned member with --initial-cluster-state existing; it joins the members list.

        `initial_cluster` defaults to the running members plus this one; pass
        what `member add` printed (ETCD_INITIAL_CLUSTER) to be faithful.
        """
        initial = initial_cluster or ",".join([*(f"{x.name}={x.peer_url}" for x in self.members if x.running()),
                                               f"{m.name}={m.peer_url}"])
        m.args = _member_args(m, initial, "existing", self.token, self.fault_injection,
                              [*self.extra_args, *extra_args])
        self.members.append(m)
        self._spawn(m)
        self.track()
        if wait:
            self.wait_listening(timeout, which=[len(self.members) - 1])
        return m

    def stop_member(self, i: int, timeout: float = 10.0) -> None:
        """SIGTERM member i (SIGCONT first if paused), SIGKILL after `timeout`."""
        super().stop_member(i, timeout)
        self.members[i].paused = False


def _member_args(m: RaftnodeMember, initial_cluster: str, state: str, token: str,
                 fault_injection: bool, extra_args: Sequence[str]) -> list[str]:
    return [*raftnode_command(),
            *launch.member_flags(m.name, m.data_dir, m.client_url, m.peer_url, initial_cluster, token,
                                 state=state, fault_injection=fault_injection),
            *extra_args]


def start_raftnode_cluster(
    data_dir: os.PathLike | str,
    size: int = 3,
    *,
    extra_args: Sequence[str] = (),
    fault_injection: bool = True,
    timeout: float = 30.0,
) -> RaftnodeCluster:
    """Start a fresh `size`-member raftnode cluster under `data_dir`; wait for a leader.

    On any failure every process started so far is stopped before raising.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    root = pathlib.Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    allocated = ports.free_ports(2 * size)
    token = f"raftui-test-{uuid.uuid4().hex[:12]}"
    members = []
    for i in range(size):
        name = f"n{i + 1}"
        members.append(RaftnodeMember(
            name=name, client_port=allocated[2 * i], peer_port=allocated[2 * i + 1],
            data_dir=root / f"{name}.data", log_path=root / f"{name}.log"))
    cluster = RaftnodeCluster(members=members, data_dir=root, token=token,
                              extra_args=tuple(extra_args), fault_injection=fault_injection)
    for m in members:
        m.member_id = _member_id(m.peer_url, token)
        m.args = _member_args(m, cluster.initial_cluster, "new", token, fault_injection, extra_args)
    cluster.track()
    try:
        for m in members:
            cluster._spawn(m)
        deadline = time.monotonic() + timeout
        cluster.wait_listening(timeout)
        cluster.wait_leader(max(1.0, deadline - time.monotonic()))
    except BaseException:
        cluster.stop()
        raise
    return cluster
