"""Small builders for Raft core tests."""
from __future__ import annotations

from engine.proto import raft_pb2 as pb
from engine.raft import MemoryStorage, StateType
from engine.sim.cluster import SimCluster


def storage_with(voters, terms: list[int], hard_term: int = 0, learners=()) -> MemoryStorage:
    """A storage whose log holds one entry per element of `terms` (index 1..n)
    and whose configuration is `voters` (as if from a snapshot at index 0)."""
    s = MemoryStorage()
    snap = pb.Snapshot()
    snap.metadata.conf_state.voters.extend(voters)
    snap.metadata.conf_state.learners.extend(learners)
    s.apply_snapshot(snap)
    s.append([pb.Entry(index=i + 1, term=t, data=f"e{i + 1}".encode()) for i, t in enumerate(terms)])
    s.set_hard_state(pb.HardState(term=max([hard_term, *terms, 0])))
    return s


def cluster_from(storages: dict[int, MemoryStorage], **kw) -> SimCluster:
    c = SimCluster([], bootstrap=False, **kw)
    for nid, st in storages.items():
        c.nodes[nid] = c._new_node(nid, st)
    return c


def settle(c: SimCluster, rounds: int = 1) -> None:
    for _ in range(rounds):
        c.deliver_all()


def elect(c: SimCluster, nid: int) -> None:
    """Make nid campaign now and deliver everything."""
    n = c.nodes[nid]
    n.rn.campaign()
    c.process(n)
    c.deliver_all()
    assert n.raft.state is StateType.LEADER, f"{nid} did not win: {n.raft}"


def tick_until(c: SimCluster, cond, max_ticks: int = 200) -> int:
    for i in range(max_ticks):
        if cond():
            return i
        c.tick_all()
        c.deliver_all()
    raise AssertionError(f"condition not reached in {max_ticks} ticks")


def terms(n) -> list[int]:
    return [e.term for e in n.raft.log.all_entries()]


def sent(c: SimCluster, typ: int) -> int:
    return c.net.sent_by_type.get(typ, 0)
