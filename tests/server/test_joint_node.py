"""Joint consensus through real Nodes (peer gRPC, WAL, SQLite): a
ConfChangeV2 entering a joint configuration, the leader's own auto-leave,
and what the member table says at the end, on every member and after a
restart. etcdctl 3.4 proposes only v1 changes; v2 comes from the core's
auto-leave and from tools that speak ConfChangeV2."""
from __future__ import annotations

from engine.proto import raft_pb2 as pb
from tests.server.inproc import InProcCluster, eventually, get, put, run


def _propose_v2(node, cc: pb.ConfChangeV2) -> None:
    node._local_calls.append(lambda: node.rn.propose_conf_change(cc))
    node._wake.set()


def _settled(c: InProcCluster, voters: set[int], learners: set[int]) -> bool:
    for n in c.nodes.values():
        cs = n.rn.raft.conf_state()
        if set(cs.voters) != voters or set(cs.learners) != learners or cs.voters_outgoing or cs.learners_next:
            return False
        if n.applied_index < n.rn.raft.log.committed:
            return False
    return True


def test_demote_and_promote_through_a_joint_config(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            ids = {n.member_id for n in c.nodes.values()}
            other = next(n for n in c.nodes.values() if n is not lead)
            # Demote a follower to learner: a joint config left by the leader itself.
            _propose_v2(lead, pb.ConfChangeV2(transition=pb.ConfChangeTransitionJointImplicit, changes=[
                pb.ConfChangeSingle(type=pb.ConfChangeAddLearnerNode, node_id=other.member_id)]))
            await eventually(lambda: _settled(c, ids - {other.member_id}, {other.member_id}), 10,
                             "the demotion to be entered and left on every member")
            for n in c.nodes.values():
                rec = n.membership.members[other.member_id]
                assert rec.is_learner and rec.peer_urls, rec   # the record stays, as a learner's
                assert set(n.membership.members) == ids
            await put(lead, b"k", b"1")
            assert await get(other, b"k") == b"1"   # a learner still replicates
            # Promote it back (one voter added: the simple protocol, Auto).
            _propose_v2(lead, pb.ConfChangeV2(changes=[
                pb.ConfChangeSingle(type=pb.ConfChangeAddNode, node_id=other.member_id)]))
            await eventually(lambda: _settled(c, ids, set()), 10, "the promotion on every member")
            assert all(not n.membership.members[other.member_id].is_learner for n in c.nodes.values())
            # Restarted, a member replays or loads the same table and config.
            name = next(k for k, n in c.nodes.items() if n is other)
            await c.stop(name)
            node = await c.start(name)
            assert not node.membership.members[other.member_id].is_learner   # the stored table
            await eventually(lambda: _settled(c, ids, set()), 10, "the restarted member to replay the config")
        finally:
            await c.stop_all()
    run(main())


def test_a_member_removed_by_a_joint_change_stops(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            ids = {n.member_id for n in c.nodes.values()}
            gone = next(n for n in c.nodes.values() if n is not lead)
            _propose_v2(lead, pb.ConfChangeV2(transition=pb.ConfChangeTransitionJointImplicit, changes=[
                pb.ConfChangeSingle(type=pb.ConfChangeRemoveNode, node_id=gone.member_id)]))
            rest = [n for n in c.nodes.values() if n is not gone]
            await eventually(lambda: all(set(n.rn.raft.conf_state().voters) == ids - {gone.member_id}
                                         and not n.rn.raft.conf_state().voters_outgoing
                                         and gone.member_id in n.membership.removed for n in rest), 10,
                             "the removal on the others")
            # Removed when the joint config is left: it stops (exit 0 in a process).
            await eventually(lambda: gone.failed.is_set() and gone.removed_from_cluster, 10, "the removed member to stop")
            await put(lead, b"after", b"1")
        finally:
            await c.stop_all()
    run(main())
