"""The order of one Ready's steps (engine/server/ready_steps.py), shared by
the node's Ready loop and the simulator: what it decides, that it stays
pure (the simulator imports it), and that both hosts run every kind of step.
"""
from __future__ import annotations

import ast
import dataclasses
import pathlib

from engine.proto import raft_pb2 as pb
from engine.raft import Ready, StateType
from engine.raft.read_only import ReadState
from engine.server import ready_steps as rs
from engine.sim.cluster import SimCluster
from tests.raft.helpers import tick_until

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _ready(**kw) -> Ready:
    base = dict(soft_state=None, hard_state=None, read_states=[], entries=[], snapshot=None,
                committed_entries=[], messages=[], must_sync=False)
    base.update(kw)
    return Ready(**base)


def _kinds(steps) -> list[str]:
    return [type(s).__name__ + (f"({s.why})" if isinstance(s, rs.WaitApplied) else "")
            + ("(early)" if isinstance(s, rs.Send) and s.early else "") for s in steps]


ENT = pb.Entry(term=2, index=5, data=b"x")
MSG = pb.Message(type=pb.MsgApp, from_=1, to=2)
HS = pb.HardState(term=2, vote=1, commit=4)


def test_a_leader_sends_before_it_persists_and_advances_last():
    steps = rs.plan(_ready(entries=[ENT], hard_state=HS, messages=[MSG], must_sync=True), leader=True)
    assert _kinds(steps) == ["Send(early)", "Persist", "Advance"]
    assert steps[1].sync


def test_anyone_else_sends_only_after_the_write():
    steps = rs.plan(_ready(entries=[ENT], hard_state=HS, messages=[MSG], must_sync=True), leader=False)
    assert _kinds(steps) == ["Persist", "Send", "Advance"]


def test_a_commit_only_hard_state_is_written_without_fsync():
    steps = rs.plan(_ready(hard_state=HS, committed_entries=[ENT]), leader=False)
    assert _kinds(steps) == ["Persist", "Apply", "Advance"]
    assert not steps[0].sync


def test_a_snapshot_waits_for_the_applier_and_its_ready_is_synced():
    snap = pb.Snapshot()
    snap.metadata.index, snap.metadata.term = 9, 2
    # Even with a leader's role and only the commit index moving.
    steps = rs.plan(_ready(snapshot=snap, hard_state=HS, messages=[MSG]), leader=True)
    assert _kinds(steps) == ["WaitApplied(snapshot)", "InstallSnapshot", "Persist", "Send", "Advance"]
    assert steps[2].sync


def test_a_conf_change_is_applied_before_the_core_advances():
    cc = pb.Entry(type=pb.EntryConfChangeV2, term=2, index=6)
    steps = rs.plan(_ready(committed_entries=[ENT, cc], read_states=[ReadState(6, b"r")]), leader=False)
    assert _kinds(steps) == ["Apply", "WaitApplied(conf-change)", "AnswerReads", "Advance"]


def test_the_steps_module_is_pure():
    """The simulator imports it: no asyncio, grpc, sqlite, files or clocks;
    only the standard library's dataclasses and the core's types."""
    tree = ast.parse((ROOT / "engine/server/ready_steps.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add(node.module)
    assert found <= {"__future__", "dataclasses", "engine.proto", "engine.raft",
                     "engine.raft.confchange", "engine.raft.read_only"}, found


def test_both_hosts_run_every_kind_of_step():
    """The node (ready_loop.py) and the simulator (sim/cluster.py) each
    handle every step class; a new kind of step must be taught to both."""
    kinds = {n for n, v in vars(rs).items()
             if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == rs.__name__}
    assert kinds == {"Send", "WaitApplied", "InstallSnapshot", "Persist", "Apply", "AnswerReads", "Advance"}
    for host in ("engine/server/ready_loop.py", "engine/sim/cluster.py"):
        text = (ROOT / host).read_text()
        assert "ready_steps.plan(" in text, host
        missing = [k for k in kinds if f"ready_steps.{k}" not in text]
        assert not missing, (host, missing)


def test_the_simulator_applies_after_the_core_advanced():
    """As the node's apply task: committed entries wait in the apply queue
    while the core, which handed them over, has moved on."""
    c = SimCluster([1, 2, 3], seed=1, apply_lag=True)
    tick_until(c, lambda: c.leader() is not None)
    lead = c.leader()
    for n in c.live():
        c.apply_pending(n.id)
    c.propose(lead.id, b"lagging")
    c.deliver_all()
    assert lead.raft.log.applied > lead.sm.applied      # handed over, advanced, not applied
    assert lead.apply_queue
    c.apply_pending(lead.id)
    assert lead.sm.applied == lead.raft.log.applied and not lead.apply_queue


def test_a_snapshot_installs_only_once_everything_before_it_is_applied():
    # Follower 3 is cut off while entries commit, the leader compacts, then
    # 3 comes back with its apply queue still holding entries it committed
    # before: the snapshot's Ready applies them first (WaitApplied), then
    # installs (SimCluster._install_snapshot asserts the queue is empty).
    c = SimCluster([1, 2, 3], seed=2, apply_lag=True)
    tick_until(c, lambda: c.leader() is not None)
    lead = c.leader()
    c.propose(lead.id, b"a")
    c.deliver_all()
    other = next(n for n in c.live() if n.id != lead.id)
    assert other.apply_queue, "the follower has committed entries not yet applied"
    c.net.partition([{other.id}, {n.id for n in c.live() if n.id != other.id}])
    for i in range(5):
        c.propose(lead.id, b"b%d" % i)
        c.deliver_all()
    c.apply_pending(lead.id)
    assert c.compact(lead.id)
    c.net.heal()
    tick_until(c, lambda: other.raft.log.snapshot().metadata.index == lead.sm.applied, max_ticks=50)
    assert other.sm.applied == lead.sm.applied and other.raft.state is StateType.FOLLOWER
