"""Scenarios from the Raft paper and from operating etcd, run on the
simulator with FIFO delivery (deterministic)."""
from __future__ import annotations

import pytest

from engine.proto import raft_pb2 as pb
from engine.raft import ProposalDroppedError, StateType
from engine.sim.cluster import SimCluster
from engine.sim.checker import SafetyChecker
from tests.raft.helpers import cluster_from, elect, sent, storage_with, terms, tick_until


class ForcedLeaderChecker(SafetyChecker):
    """For tests that crown a leader by hand instead of holding an election."""

    def on_elected(self, *args) -> None:
        pass

V3 = (1, 2, 3)

# Figure 7: the leader's log and six followers that miss entries (a, b),
# hold extra uncommitted entries (c, d), or both (e, f).
FIG7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIG7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("name", sorted(FIG7_FOLLOWERS))
def test_figure7_follower_converges_to_leader_log(name):
    c = cluster_from({1: storage_with(V3, FIG7_LEADER, 7),
                      2: storage_with(V3, FIG7_FOLLOWERS[name], 7),
                      3: storage_with(V3, [], 7)}, checker=ForcedLeaderChecker())
    lead = c.nodes[1].raft
    lead.become_candidate()  # term 8, as in the figure
    lead.become_leader()
    lead.bcast_append()
    c.process(c.nodes[1])
    c.deliver_all()
    assert terms(c.nodes[2]) == FIG7_LEADER + [8]
    assert c.nodes[2].raft.log.committed == 11
    # Fast backtracking: the divergent follower f needs few probes, not one per entry.
    assert c.nodes[1].raft.prs[2].match == 11


def _deliver_except(c: SimCluster, drop) -> None:
    """Deliver everything in FIFO order, first letting `drop(m)` discard or
    trim messages (it returns False to discard)."""
    while c.net.inflight:
        m = c.net.take_first()
        if drop(m) is not False:
            c.deliver(m)


def _campaign_until_leader(c: SimCluster, nid: int, drop=lambda m: True, tries: int = 3) -> None:
    n = c.nodes[nid]
    for _ in range(tries):
        n.rn.campaign()
        c.process(n)
        _deliver_except(c, drop)
        if n.raft.state is StateType.LEADER:
            return
    raise AssertionError(f"{nid} could not win: {n.raft}")


def test_figure8_entry_of_old_term_is_overwritten_only_while_uncommitted():
    # Without leases, so elections can be staged step by step as in the figure.
    c = SimCluster([1, 2, 3, 4, 5], seed=8, pre_vote=False, check_quorum=False)
    elect(c, 1)
    i = c.nodes[1].raft.log.last_index() + 1  # "index 2" of the figure
    # (a) S1 leads term 2 and replicates an entry at index i to S2 only.
    c.net.partition([{1, 2}, {3, 4, 5}])
    c.propose(1, b"from-S1")
    c.deliver_all()
    t2 = c.nodes[1].raft.term
    # (b) S1 crashes; S5 wins term 3 with S3 and S4; its entry at i stays on S5.
    c.crash(1)
    c.net.partition([{2}, {3, 4, 5}])
    _campaign_until_leader(c, 5, drop=lambda m: m.type != pb.MsgApp)
    assert c.nodes[5].raft.log.term(i) == c.nodes[5].raft.term > t2
    c.crash(5)
    # (c) S1 restarts and wins term 4; it spreads its term-2 entry at i to
    #     S3 and S4 but not yet its own term-4 entry. Index i now sits on a
    #     majority, yet it must not be committed by counting replicas.
    c.restart(1)
    c.net.partition([{1, 2, 3, 4}, {5}])

    def only_old_entries(m):
        if m.type == pb.MsgApp and m.entries:
            keep = [e for e in m.entries if e.term <= t2]
            del m.entries[len(keep):]
        return True
    _campaign_until_leader(c, 1, drop=only_old_entries)
    r1 = c.nodes[1].raft
    holders = [n for n in (1, 2, 3, 4) if c.nodes[n].raft.log.term(i) == t2]
    assert len(holders) >= 3, holders
    assert r1.log.committed < i, "an entry of an old term was committed by counting replicas"
    # (d) S1 crashes again; S5, whose last term is newer, wins and overwrites
    #     index i everywhere. That is safe only because i was never committed.
    c.crash(1)
    c.restart(5)
    c.net.partition([{2, 3, 4, 5}, {1}])
    _campaign_until_leader(c, 5)
    c.tick_all(); c.deliver_all()
    for n in (2, 3, 4, 5):
        assert c.nodes[n].raft.log.term(i) != t2
        assert b"from-S1" not in c.nodes[n].sm.values


def test_reelection_after_leader_loss():
    c = SimCluster([1, 2, 3], seed=3)
    tick_until(c, lambda: c.leader() is not None)
    old = c.leader()
    old_term = old.raft.term
    c.crash(old.id)
    tick_until(c, lambda: c.leader() is not None and c.leader().id != old.id)
    new = c.leader()
    assert new.raft.term > old_term
    assert c.propose(new.id, b"after")
    c.deliver_all()
    tick_until(c, lambda: all(n.sm.values[-1:] == [b"after"] for n in c.live()))


def _partitioned_rejoin(pre_vote: bool) -> tuple[int, int, int]:
    c = SimCluster([1, 2, 3], seed=5, pre_vote=pre_vote)
    elect(c, 1)
    term_before = c.nodes[1].raft.term
    c.net.isolate(3, [1, 2])
    for _ in range(100):  # node 3 keeps timing out alone
        c.tick(3)
        c.deliver_all()
    term_of_3 = c.nodes[3].raft.term
    c.net.heal()
    for _ in range(3):
        c.tick_all(); c.deliver_all()
    tick_until(c, lambda: c.leader() is not None)
    return term_before, term_of_3, c.leader().raft.term


def test_prevote_partitioned_node_does_not_disrupt_on_rejoin():
    before, isolated, after = _partitioned_rejoin(pre_vote=True)
    assert isolated == before, "pre-vote must not raise the isolated node's term"
    assert after == before, "the leader was deposed by a rejoining node"


def test_without_prevote_rejoining_node_forces_a_new_term():
    # The contrast that motivates pre-vote (thesis §9.6).
    before, isolated, after = _partitioned_rejoin(pre_vote=False)
    assert isolated > before + 3 and after >= isolated


def test_check_quorum_minority_leader_steps_down_majority_serves():
    c = SimCluster([1, 2, 3, 4, 5], seed=11)
    elect(c, 1)
    c.net.partition([{1, 2}, {3, 4, 5}])
    tick_until(c, lambda: c.nodes[1].raft.state is not StateType.LEADER, max_ticks=40)
    with pytest.raises(ProposalDroppedError):
        c.nodes[1].rn.propose(b"minority")
    tick_until(c, lambda: any(c.nodes[i].raft.state is StateType.LEADER for i in (3, 4, 5)))
    lead = next(c.nodes[i] for i in (3, 4, 5) if c.nodes[i].raft.state is StateType.LEADER)
    assert c.propose(lead.id, b"majority")
    c.deliver_all()
    assert b"majority" in c.nodes[lead.id].sm.values
    c.net.heal()
    tick_until(c, lambda: all(b"majority" in n.sm.values for n in c.live()))


def _lagging_cluster(divergent: bool, n_entries: int = 10_000):
    c = SimCluster([1, 2, 3], seed=2, checker=ForcedLeaderChecker())
    elect(c, 1)
    if divergent:
        # Node 3 leads a term alone and piles up 2,000 uncommitted entries.
        c.net.isolate(3, [1, 2])
        r3 = c.nodes[3].raft
        r3.become_candidate(); r3.become_leader()
        for i in range(20):
            c.nodes[3].rn.propose_many([b"stale%d" % (i * 100 + k) for k in range(100)])
        c.process(c.nodes[3])
        c.net.inflight.clear()
        r3.become_follower(r3.term, 0)
    else:
        c.crash(3)
    for i in range(n_entries // 500):
        c.nodes[1].rn.propose_many([b"v%d" % (i * 500 + k) for k in range(500)])
        c.process(c.nodes[1])
        c.deliver_all()
    return c


@pytest.mark.parametrize("divergent", [False, True])
def test_follower_10000_behind_is_found_in_few_round_trips(divergent):
    c = _lagging_cluster(divergent)
    if divergent:
        c.net.heal()
    else:
        c.restart(3)
    lead = c.nodes[1]
    assert lead.raft.log.last_index() > 10_000
    rejects = []
    orig = c.deliver

    def deliver(m):
        if m.type == pb.MsgAppResp and m.reject and m.from_ == 3:
            rejects.append(m.index)
        orig(m)
    c.deliver = deliver
    tick_until(c, lambda: c.nodes[3].raft.log.committed == lead.raft.log.committed, max_ticks=50)
    assert len(rejects) <= 3, f"{len(rejects)} probe round trips: {rejects[:10]}"
    assert c.nodes[3].sm.digest == lead.sm.digest


def test_follower_behind_a_compacted_log_gets_a_snapshot():
    c = _lagging_cluster(divergent=False, n_entries=2_000)
    lead = c.nodes[1]
    assert c.compact(1)  # the leader drops its whole log
    c.restart(3)
    tick_until(c, lambda: c.nodes[3].sm.applied == lead.sm.applied, max_ticks=50)
    assert sent(c, pb.MsgSnap) >= 1
    assert c.nodes[3].sm.digest == lead.sm.digest
    assert c.nodes[3].storage.snapshot().metadata.index >= 2_000


def test_leader_transfer_catches_up_target_then_hands_over():
    c = SimCluster([1, 2, 3], seed=4)
    elect(c, 1)
    c.crash(3)
    for i in range(5):
        c.propose(1, b"t%d" % i)
    c.deliver_all()
    c.restart(3)
    term = c.nodes[1].raft.term
    c.nodes[1].rn.transfer_leader(3)
    c.process(c.nodes[1])
    c.deliver_all()
    assert c.nodes[3].raft.state is StateType.LEADER
    assert c.nodes[3].raft.term == term + 1
    assert c.nodes[1].raft.state is StateType.FOLLOWER


def test_read_index_from_follower_returns_leader_commit():
    c = SimCluster([1, 2, 3], seed=6)
    elect(c, 1)
    for i in range(3):
        c.propose(1, b"r%d" % i)
    c.deliver_all()
    want = c.nodes[1].raft.log.committed
    f = c.nodes[2]
    f.rn.read_index(b"ctx-1")
    c.process(f)
    c.deliver_all()
    assert f.read_results == [(b"ctx-1", want)]


def test_read_index_needs_a_quorum_heartbeat_round():
    c = SimCluster([1, 2, 3], seed=7)
    elect(c, 1)
    c.net.isolate(1, [2, 3])  # the leader can no longer confirm its leadership
    lead = c.nodes[1]
    lead.rn.read_index(b"ctx")
    c.process(lead)
    c.deliver_all()
    assert lead.read_results == []


def test_add_learner_promote_and_remove_members():
    c = SimCluster([1, 2, 3], seed=9)
    elect(c, 1)
    c.add_empty_node(4)
    assert c.propose_conf_change(1, pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=4))
    tick_until(c, lambda: c.nodes[4].sm.applied == c.nodes[1].sm.applied)
    assert c.nodes[1].raft.learners == (4,) and c.nodes[4].raft.is_learner
    assert c.propose_conf_change(1, pb.ConfChange(type=pb.ConfChangeAddNode, node_id=4))
    tick_until(c, lambda: c.nodes[1].raft.voters == (1, 2, 3, 4))
    # Removing the leader: it steps down and the rest elect a leader of their own.
    assert c.propose_conf_change(1, pb.ConfChange(type=pb.ConfChangeRemoveNode, node_id=1))
    tick_until(c, lambda: c.leader() is not None and c.leader().id != 1)
    assert c.leader().raft.voters == (2, 3, 4)


def test_second_conf_change_waits_for_the_first():
    c = SimCluster([1, 2, 3], seed=10)
    elect(c, 1)
    c.add_empty_node(4); c.add_empty_node(5)
    c.propose_conf_change(1, pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=4))
    c.propose_conf_change(1, pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=5))
    tick_until(c, lambda: c.nodes[2].sm.applied == c.nodes[1].raft.log.last_index())
    # The second was turned into a no-op: one change at a time.
    assert c.nodes[1].raft.learners == (4,)
