"""The simulator's crash model (engine/sim/disk.py, engine/sim/cluster.py
CRASH_*): a crash inside a Ready loses what was not fsynced, a leader's
messages leave before its fsync, and what the core must survive of it."""
from __future__ import annotations

import random

import pytest

from engine.proto import raft_pb2 as pb
from engine.raft import Config, MemoryStorage, Raft, StateType
from engine.sim.cluster import (
    CRASH_AFTER_SEND,
    CRASH_AFTER_SNAP,
    CRASH_AFTER_SYNC,
    CRASH_BEFORE,
    CRASH_NAMES,
    CRASH_POINTS,
    SimCluster,
)
from engine.sim.disk import SimDisk
from engine.sim.schedule import ScheduleConfig, run_schedule
from tests.raft.helpers import tick_until


def _leader(c: SimCluster, nid: int = 1):
    tick_until(c, lambda: c.leader() is not None and c.leader().raft.log.committed
               == c.leader().raft.log.last_index())
    return c.leader()


def test_disk_keeps_only_a_prefix_of_unsynced_records():
    d = SimDisk(MemoryStorage())
    d.write(pb.HardState(term=1, commit=0), [pb.Entry(index=1, term=1)])
    d.fsync()
    d.write(pb.HardState(term=1, commit=1), [])
    kept = d.crash(random.Random(1))
    assert d.durable.last_index() == 1 and d.durable.hard_state.commit in (0, 1)
    assert d.durable.hard_state.commit == (1 if kept else 0)


@pytest.mark.parametrize("point,survives", [
    (CRASH_BEFORE, False), (CRASH_AFTER_SEND, False), (CRASH_AFTER_SYNC, True)])
def test_leader_crash_inside_a_ready(point, survives):
    c = SimCluster([1], seed=3, learners=[2])
    lead = _leader(c)
    last = lead.raft.log.last_index()
    c.arm_crash(1, point)
    c.propose(1, b"x")
    assert not lead.alive and c.crashes_in_ready == 1
    sent = [m for m in c.net.inflight if m.type == pb.MsgApp and m.from_ == 1]
    # The leader sends before it persists: from CRASH_AFTER_SEND on, x is out;
    # before CRASH_AFTER_SYNC nothing of x was even written, after it x is durable.
    assert bool(sent) == (point >= CRASH_AFTER_SEND)
    # With the deferral, nothing it sent says x is committed.
    assert all(m.commit <= last for m in sent)
    durable_last = lead.disk.durable.last_index()
    assert (durable_last == last + 1) == survives
    c.restart(1)
    assert c.nodes[1].raft.log.last_index() == durable_last


def test_crash_between_snapshot_marker_and_hard_state_restarts():
    # The window the simulator found (seed 5891 of --nodes 1): the snapshot's
    # marker is durable, the hard state that moves commit to it is not. The
    # core takes the snapshot's index as its commit index.
    s = MemoryStorage()
    snap = pb.Snapshot()
    snap.metadata.index, snap.metadata.term = 28, 3
    snap.metadata.conf_state.voters.append(1)
    s.apply_snapshot(snap)
    s.set_hard_state(pb.HardState(term=2, vote=1, commit=24))
    r = Raft(Config(id=2, storage=s))
    assert r.log.committed == 28 and r.term == 2
    s.set_hard_state(pb.HardState(term=3, commit=29))
    with pytest.raises(AssertionError):
        Raft(Config(id=2, storage=s))  # a commit past the log is still corruption


def test_learner_crash_while_installing_a_snapshot_restarts():
    c = SimCluster([1], seed=5, learners=[2])
    lead = _leader(c)
    c.crash(2)
    for i in range(5):
        c.propose(1, b"v%d" % i)
    c.compact(1)
    c.net.inflight = []   # what was sent to 2 while it was down is lost
    c.restart(2)
    for _ in range(50):   # until the leader's snapshot to 2 is on its way
        if any(m.type == pb.MsgSnap for m in c.net.inflight):
            break
        c.tick_all()
        while c.net.inflight and not any(m.type == pb.MsgSnap for m in c.net.inflight):
            c.deliver(c.net.take_first())
    snap = next(m for m in c.net.inflight if m.type == pb.MsgSnap)
    c.net.inflight = [snap]
    c.arm_crash(2, CRASH_AFTER_SNAP)
    c.deliver_all()
    assert not c.nodes[2].alive
    # The marker is durable, the hard state moving commit to it is not.
    d = c.nodes[2].disk.durable
    assert d.snapshot().metadata.index == snap.snapshot.metadata.index > d.hard_state.commit
    c.restart(2)
    tick_until(c, lambda: c.nodes[2].sm.applied == lead.sm.applied, max_ticks=100)
    assert c.nodes[2].sm.digest == lead.sm.digest


def test_two_voters_removing_the_leader_hand_over():
    # {1, 2}, leader 1 removes itself and keeps taking proposals until the
    # removal applies. 2 may not know the removal is committed, so it still
    # needs 1's vote, which 1 would refuse (its log is longer): the removed
    # leader hands over with MsgTimeoutNow instead of just stepping down.
    c = SimCluster([1, 2], seed=7)
    n1 = c.nodes[1]
    n1.rn.campaign()
    c.process(n1)
    c.deliver_all()
    assert n1.raft.state is StateType.LEADER
    c.propose_conf_change(1, pb.ConfChange(type=pb.ConfChangeRemoveNode, node_id=1))
    c.propose(1, b"after")
    tick_until(c, lambda: c.nodes[2].raft.state is StateType.LEADER, max_ticks=100)
    assert c.nodes[2].raft.voters == (2,)
    assert c.propose(2, b"later")
    c.deliver_all()
    assert b"later" in c.nodes[2].sm.values


@pytest.mark.parametrize("nodes,learners", [(1, 0), (2, 0), (1, 1), (1, 2), (2, 1)])
def test_small_clusters_run(nodes, learners):
    # `python -m engine.sim --nodes 1,2` used to crash in the scheduler.
    for seed in range(20):
        run_schedule(seed, ScheduleConfig(nodes=nodes, learners=learners, steps=300))


def test_removed_leader_handing_over_does_not_answer_reads_alone():
    # Found by the simulator (seed 9052, --nodes 1 --learners 1): the removed
    # leader leads a config whose one voter is 2; "one voter" is not "me".
    c = SimCluster([1, 2], seed=7)
    n1 = c.nodes[1]
    n1.rn.campaign()
    c.process(n1)
    c.deliver_all()
    c.net.isolate(2, [1])
    n1.rn.apply_conf_change(pb.ConfChange(type=pb.ConfChangeRemoveNode, node_id=1))
    assert n1.raft.state is StateType.LEADER and n1.raft.voters == (2,)
    n1.rn.read_index(b"r")
    c.process(n1)
    c.deliver_all()
    assert n1.read_results == []


def test_one_way_cut_follower_hears_leader_but_cannot_answer():
    # 2 hears leader 1 but cannot answer: the leader's check-quorum still has
    # 3, and 2 (still hearing heartbeats) does not disrupt anyone.
    c = SimCluster([1, 2, 3], seed=11)
    lead = _leader(c)
    assert lead.id == c.leader().id
    c.net.cut_one_way(2, lead.id)
    for _ in range(60):
        c.tick_all()
        c.deliver_all()
    assert c.leader() is lead and lead.raft.term == c.nodes[2].raft.term
    assert c.propose(lead.id, b"x")
    c.deliver_all()
    assert all(b"x" in n.sm.values for n in c.live())


def test_slow_link_holds_messages_for_ticks():
    c = SimCluster([1, 2, 3], seed=11)
    lead = _leader(c)
    other = next(i for i in (1, 2, 3) if i != lead.id)
    c.net.slow(lead.id, other, 3)
    c.propose(lead.id, b"slow")
    assert not any(m.to == other for m in c.net.inflight)
    held = [m for _, _, m in c.net.delayed if m.to == other]
    assert held
    c.net.tick(); c.net.tick()
    assert not any(m.to == other for m in c.net.inflight)
    c.net.tick()
    assert [m for m in c.net.inflight if m.to == other] == held


def test_paused_leader_resumes_into_a_newer_term():
    # A stopped leader (SIGSTOP, a long GC) is replaced; when it runs again it
    # still believes it leads, with a pile of old messages in its buffers.
    c = SimCluster([1, 2, 3], seed=11)
    lead = _leader(c)
    old_term = lead.raft.term
    c.pause(lead.id, 200)
    assert not c.propose(lead.id, b"frozen")
    tick_until(c, lambda: any(n.raft.state is StateType.LEADER and n.raft.term > old_term
                              for n in c.live() if n is not lead), max_ticks=150)
    assert lead.raft.state is StateType.LEADER  # it did not run: it cannot know yet
    lead.rn.read_index(b"stale?")  # (a request that reached it just before the stop)
    new = max(c.live(), key=lambda n: n.raft.term)
    assert c.propose(new.id, b"new")
    c.deliver_all()
    tick_until(c, lambda: lead.id not in c.paused, max_ticks=200)
    c.deliver_all()
    assert lead.raft.state is StateType.FOLLOWER and lead.raft.term == new.raft.term
    # Its read was never answered from its stale leadership.
    assert all(ctx != b"stale?" for ctx, _ in lead.read_results)
    tick_until(c, lambda: lead.sm.applied == new.sm.applied)
    assert b"new" in lead.sm.values


@pytest.mark.parametrize("point", range(CRASH_POINTS))
@pytest.mark.parametrize("role", ["leader", "follower"])
def test_an_armed_crash_fires_within_the_next_ready(point, role):
    """Every crash point fires inside the next Ready the node handles,
    whichever steps that Ready has: a point past the Ready's last step
    fires before advance. (Found by review: once the Ready's steps came
    from ready_steps.plan, before-advance only fired in a Ready that
    answered reads, and stayed armed for Readies on end.)"""
    c = SimCluster([1, 2, 3], seed=1)
    lead = _leader(c)
    node = lead if role == "leader" else next(n for n in c.live() if n.id != lead.id)
    c.arm_crash(node.id, point)
    c.propose(lead.id, b"x")
    c.deliver_all()
    assert not node.alive and node.id not in c.armed, CRASH_NAMES[point]
