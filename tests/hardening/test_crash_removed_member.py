"""A removed member stops itself, as etcd's does (found by test_crash_cycles).

etcd: a member that applies the ConfChange removing it stops its server and
the process exits; a member that missed that entry (it was down, or cut off)
learns it from its peers, which answer its peer streams "removed" (HTTP 410,
rafthttp's errMemberRemoved): it logs "the member has been permanently
removed from the cluster" and exits. Either way it never lingers, answering
clients from a store that no longer follows the cluster ("unhealthy cluster"
to every membership call, stale serializable reads) and campaigning.

Found by the crash-cycle soak: raftnode's removed member kept running in
both cases, answering "etcdserver: unhealthy cluster" to a MemberRemove of
itself for 40 s while its peers refused its streams ("member ... was removed
from the cluster"). Both pass since the fix (requests-SERVER.md #3).
"""
from __future__ import annotations

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc

from tests.support import raftnode as support_raftnode

from .conftest import restart_member, wait_for

EXIT_WITHIN = 10.0


def _add_voter(c, promote: bool = True) -> tuple[int, int]:
    """Add a 4th member (learner, started, promoted unless `promote` is
    False); returns (its index, its id)."""
    with grpc.insecure_channel(c.endpoints[0]) as ch:
        cl = rpc_pb2_grpc.ClusterStub(ch)
        m = c.plan_member("x1")

        def add():
            try:
                return cl.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[m.peer_url], isLearner=True), timeout=5)
            except grpc.RpcError as e:
                assert e.details() == "etcdserver: unhealthy cluster", e   # the first 5 s after start
                return None
        resp = wait_for(add, 20, "a learner add", interval=0.25)
        initial = ",".join(f"{mm.name}={u}" for mm in resp.members for u in mm.peerURLs if mm.name)
        c.start_planned(m, initial_cluster=f"{initial},{m.name}={m.peer_url}")
        if not promote:
            wait_for(lambda: _serves(m.endpoint), 20, "the learner to serve")
            return len(c.members) - 1, resp.member.ID

        def promote():
            try:
                return cl.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=resp.member.ID), timeout=5)
            except grpc.RpcError as e:
                assert "in sync with leader" in (e.details() or ""), e
                return None
        wait_for(promote, 30, "the learner's promotion", interval=0.25)

        # Callers kill it as a voter: the new member itself must have
        # applied its promotion (a learner is test_a_learner_removed_...).
        def voter_here():
            try:
                with grpc.insecure_channel(m.endpoint) as mc:
                    return not rpc_pb2_grpc.MaintenanceStub(mc).Status(rpc_pb2.StatusRequest(), timeout=2).isLearner
            except grpc.RpcError:
                return False
        wait_for(voter_here, 20, "the new member to apply its promotion", interval=0.1)
        return len(c.members) - 1, resp.member.ID


def _serves(endpoint: str) -> bool:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=2)
            return True
    except grpc.RpcError:
        return False


def _remove(c, asked: int, mid: int) -> None:
    with grpc.insecure_channel(c.endpoints[asked]) as ch:
        rpc_pb2_grpc.ClusterStub(ch).MemberRemove(rpc_pb2.MemberRemoveRequest(ID=mid), timeout=10)


def test_a_member_that_applies_its_own_removal_exits(hard_cluster_factory):
    c = hard_cluster_factory(3)
    idx, mid = _add_voter(c)
    _remove(c, 0, mid)
    m = c.members[idx]
    wait_for(lambda: not m.running(), EXIT_WITHIN, f"the removed member {m.name} to exit")


@pytest.mark.soak   # CI time: the learner variant below and test_server_removed cover the default run
def test_a_member_removed_while_down_exits_when_restarted(hard_cluster_factory):
    c = hard_cluster_factory(3)
    idx, mid = _add_voter(c)
    c.kill(idx)
    _remove(c, 0, mid)   # a member that is down is not part of the active quorum: allowed
    _restart_removed(c, idx)
    m = c.members[idx]
    wait_for(lambda: not m.running(), EXIT_WITHIN, f"the removed member {m.name} to exit after its restart")


def _restart_removed(c, idx: int) -> None:
    """Start a removed member again; it may learn its removal (and exit)
    before it even listens: its first stream's greeting is refused."""
    try:
        restart_member(c, idx)
    except support_raftnode.RaftnodeError:
        pass


def test_a_learner_removed_while_down_exits_when_restarted(hard_cluster_factory):
    """No leader writes to a removed learner and a learner never campaigns:
    restarted, it has no raft message to send. It learns it from the first
    frame of its plain-TCP streams (refused "removed member") or from its
    probes (Peer.Probe, the way when streams are gRPC: tests/hardening/
    test_server_removed.py); it used to stay up for good (1 CI rehearsal in 4)."""
    c = hard_cluster_factory(3)
    idx, mid = _add_voter(c, promote=False)
    c.kill(idx)
    _remove(c, 0, mid)
    _restart_removed(c, idx)
    m = c.members[idx]
    wait_for(lambda: not m.running(), EXIT_WITHIN, f"the removed learner {m.name} to exit after its restart")
    assert m.proc.poll() == 0, m.log_tail()
    assert "the member has been permanently removed from the cluster" in m.log_tail(100000)
