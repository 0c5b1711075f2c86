"""N Raft cores in one process: each node is a RawNode, the storage it has
persisted (what survives a crash) and a hash state machine. The host loop of
engine/server is mirrored here exactly: persist -> send -> apply -> advance.
"""
from __future__ import annotations

import random
from typing import Callable

from engine.proto import raft_pb2 as pb
from engine.raft import Config, MemoryStorage, ProposalDroppedError, RawNode, StateType
from engine.raft.errors import RaftError
from engine.sim.checker import InvariantViolation, SafetyChecker
from engine.sim.network import SimNetwork
from engine.sim.statemachine import HashStateMachine


class SimNode:
    def __init__(self, nid: int, storage: MemoryStorage, cfg_kw: dict, rng: random.Random) -> None:
        self.id = nid
        self.storage = storage
        self.alive = True
        self.sm = HashStateMachine()
        snap = storage.snapshot()
        if snap.metadata.index:
            self.sm.restore(snap.data)
        self.rn = RawNode(Config(id=nid, storage=storage, rng=rng, **cfg_kw))
        self.read_results: list[tuple[bytes, int]] = []
        # Membership as the simulator derives it on its own, by applying the
        # conf changes of the log in order (and snapshots' conf states). The
        # core's view must always equal it; quorum checks use this one.
        cs = snap.metadata.conf_state
        self.voters: set[int] = set(cs.voters)
        self.learners: set[int] = set(cs.learners)

    def apply_membership(self, cc: pb.ConfChange) -> None:
        nid = cc.node_id
        if cc.type == pb.ConfChangeAddNode:
            self.learners.discard(nid)
            self.voters.add(nid)
        elif cc.type == pb.ConfChangeAddLearnerNode:
            if nid not in self.voters:
                self.learners.add(nid)
        elif cc.type == pb.ConfChangeRemoveNode:
            self.voters.discard(nid)
            self.learners.discard(nid)

    def check_membership(self) -> None:
        r = self.rn.raft
        if r.voters != tuple(sorted(self.voters)) or r.learners != tuple(sorted(self.learners)):
            raise InvariantViolation(
                f"membership: node {self.id} core has voters {r.voters} learners {r.learners}, "
                f"the log says voters {sorted(self.voters)} learners {sorted(self.learners)}")

    @property
    def raft(self):
        return self.rn.raft


class SimCluster:
    def __init__(self, ids: list[int], seed: int = 0, *, pre_vote: bool = True,
                 check_quorum: bool = True, election_tick: int = 10, heartbeat_tick: int = 1,
                 max_size_per_msg: int = 1 << 20, max_inflight: int = 256,
                 checker: SafetyChecker | None = None, bootstrap: bool = True,
                 log: Callable[[str], None] | None = None) -> None:
        self.rng = random.Random(seed)
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)))
        self.checker = checker or SafetyChecker()
        self.cfg_kw = dict(pre_vote=pre_vote, check_quorum=check_quorum,
                           election_tick=election_tick, heartbeat_tick=heartbeat_tick,
                           max_size_per_msg=max_size_per_msg, max_inflight_msgs=max_inflight)
        self.nodes: dict[int, SimNode] = {}
        self.log = log
        self.votes_granted: dict[tuple[int, int], set[int]] = {}  # (candidate, term) -> voters
        for i in ids:
            self.nodes[i] = self._new_node(i, MemoryStorage())
            if bootstrap:
                self.nodes[i].rn.bootstrap([(j, b"") for j in ids])
        for n in list(self.nodes.values()):
            self.process(n)

    def _new_node(self, nid: int, storage: MemoryStorage) -> SimNode:
        return SimNode(nid, storage, self.cfg_kw, random.Random(self.rng.getrandbits(64)))

    # -- membership of the simulation (not of Raft) -----------------------------

    def add_empty_node(self, nid: int) -> SimNode:
        """A process for a member about to be added: empty storage, no config."""
        n = self._new_node(nid, MemoryStorage())
        self.nodes[nid] = n
        return n

    def crash(self, nid: int) -> None:
        """kill -9: everything not in storage is gone, in-flight messages to it too."""
        self.nodes[nid].alive = False
        lost = [m for m in self.net.inflight if m.to == nid]
        self.net.inflight = [m for m in self.net.inflight if m.to != nid]
        for m in lost:
            if m.type == pb.MsgSnap:
                self._report_snapshot(m, ok=False)

    def restart(self, nid: int) -> None:
        old = self.nodes[nid]
        n = self._new_node(nid, old.storage)
        self.nodes[nid] = n
        self.checker.on_restore(nid, n.sm.applied, n.sm.digest) if n.sm.applied else None
        self.process(n)

    # -- the host loop ------------------------------------------------------------

    def process(self, n: SimNode) -> None:
        """Handle every Ready of node n, as engine/server does."""
        ck = self.checker
        r = n.raft
        while n.alive and n.rn.has_ready():
            old_commit = n.storage.hard_state.commit
            rd = n.rn.ready()
            # 1. persist
            if rd.snapshot is not None:
                n.storage.apply_snapshot(rd.snapshot)
                n.sm.restore(rd.snapshot.data)
                ck.on_restore(n.id, n.sm.applied, n.sm.digest)
                cs = rd.snapshot.metadata.conf_state
                n.voters, n.learners = set(cs.voters), set(cs.learners)
                n.check_membership()
            n.storage.append(rd.entries)
            if rd.hard_state is not None:
                n.storage.set_hard_state(rd.hard_state)
            if rd.soft_state is not None and rd.soft_state.state is StateType.LEADER:
                ck.on_leader(n.id, r.term)
                ck.on_elected(n.id, r.term, sorted(n.voters), sorted(n.learners), r.election_votes,
                              self.votes_granted.get((n.id, r.term), set()))
            if rd.hard_state is not None and rd.hard_state.commit > old_commit:
                ck.on_commit(n.id, r.log, old_commit, rd.hard_state.commit)
                if r.state is StateType.LEADER and rd.hard_state.term == r.term:
                    ck.on_leader_commit(n.id, sorted(n.voters), rd.hard_state.commit, self._stable_term)
            # 2. send
            for m in rd.messages:
                if self.log:
                    from engine.raft.describe import describe_message
                    self.log(describe_message(m))
                self.net.send(m)
            # 3. apply
            for e in rd.committed_entries:
                if e.index <= n.sm.applied:
                    continue  # the snapshot we restored already covers it
                if e.type == pb.EntryConfChange:
                    cc = pb.ConfChange()
                    cc.ParseFromString(e.data)
                    n.rn.apply_conf_change(cc)
                    n.apply_membership(cc)
                    payload = b"cc:" + e.data
                else:
                    payload = e.data
                n.sm.apply(e.index, payload)
                ck.on_apply(n.id, e.index, payload, n.sm.digest)
            if any(e.type == pb.EntryConfChange for e in rd.committed_entries):
                n.check_membership()
            for rs in rd.read_states:
                n.read_results.append((rs.request_ctx, rs.index))
            # 4. advance
            n.rn.advance(rd)

    def _stable_term(self, nid: int, index: int) -> int | None:
        n = self.nodes.get(nid)
        if n is None:
            return None
        s = n.storage
        if index <= s.snapshot().metadata.index:
            return self.checker.committed_term.get(index)  # inside a snapshot: durable
        try:
            return s.term(index)
        except RaftError:
            return None

    # -- driving ------------------------------------------------------------------

    def deliver(self, m: pb.Message) -> None:
        n = self.nodes.get(m.to)
        if n is None or not n.alive or self.net.is_cut(m.from_, m.to):
            self.net.dropped += 1
            if m.type == pb.MsgSnap:
                self._report_snapshot(m, ok=False)
            return
        self.net.delivered += 1
        if m.type == pb.MsgVoteResp and not m.reject:
            self.votes_granted.setdefault((m.to, m.term), set()).add(m.from_)
        try:
            n.rn.step(m)
        except ProposalDroppedError:
            pass
        self.process(n)
        if m.type == pb.MsgSnap:
            self._report_snapshot(m, ok=True)

    def _report_snapshot(self, m: pb.Message, ok: bool) -> None:
        s = self.nodes.get(m.from_)
        if s is not None and s.alive:
            s.rn.report_snapshot(m.to, ok)
            self.process(s)

    def tick(self, nid: int) -> None:
        n = self.nodes[nid]
        if n.alive:
            n.rn.tick()
            self.process(n)

    def tick_all(self) -> None:
        for nid in sorted(self.nodes):
            self.tick(nid)

    def propose(self, nid: int, data: bytes) -> bool:
        n = self.nodes[nid]
        if not n.alive:
            return False
        try:
            n.rn.propose(data)
        except ProposalDroppedError:
            return False
        finally:
            self.process(n)
        return True

    def propose_conf_change(self, nid: int, cc: pb.ConfChange) -> bool:
        n = self.nodes[nid]
        if not n.alive:
            return False
        try:
            n.rn.propose_conf_change(cc)
        except ProposalDroppedError:
            return False
        finally:
            self.process(n)
        return True

    def compact(self, nid: int, keep: int = 0) -> bool:
        """Snapshot node's applied state and drop its log before it."""
        n = self.nodes[nid]
        if not n.alive:
            return False
        idx = n.sm.applied
        if idx <= n.storage.snapshot().metadata.index:
            return False
        n.storage.create_snapshot(idx, n.raft.conf_state(), n.sm.snapshot())
        if idx - keep > n.storage.first_index():
            n.storage.compact(idx - keep)
        return True

    def deliver_all(self, max_msgs: int = 100_000) -> int:
        """Deliver in FIFO order until the network is quiet (etcd's
        network.send in its unit tests). Returns how many were delivered."""
        count = 0
        while self.net.inflight and count < max_msgs:
            self.deliver(self.net.take_first())
            count += 1
        return count

    # -- views ----------------------------------------------------------------------

    def live(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.alive]

    def leaders(self) -> list[SimNode]:
        return [n for n in self.live() if n.raft.state is StateType.LEADER]

    def leader(self) -> SimNode | None:
        """The leader of the highest term among live nodes, if any."""
        ls = self.leaders()
        return max(ls, key=lambda n: n.raft.term) if ls else None

    def members(self) -> set[int]:
        """Voters and learners as the most advanced live node sees them."""
        best = max(self.live(), key=lambda n: (n.raft.log.applied, n.raft.term), default=None)
        if best is None:
            return set()
        return set(best.raft.voters) | set(best.raft.learners)
