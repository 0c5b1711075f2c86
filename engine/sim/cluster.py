"""N Raft cores in one process: each node is a RawNode, the storage its core
reads, a disk (engine/sim/disk.py: what is durable, what is only written),
an apply queue and a hash state machine.

The host loop is the node's own: each Ready's steps come from
engine/server/ready_steps.py, the module engine/server/ready_loop.py runs
with its WAL, transport and apply task; here they run with the simulated
disk, network and apply queue:

    leader (and no snapshot):  send -> persist -> hand to applier -> advance
    anyone else:               [wait applied -> install snapshot] -> persist
                               -> send -> hand to applier -> advance

where persist is: write entries + hard state to the WAL and fsync unless only
the commit index moved (MustSync false: written, not synced), and a
snapshot's install is store, then snap file + WAL marker, fsynced. Committed
entries are applied by the node's apply task AFTER the Ready advanced the
core, concurrently with the next Readies: here they wait in the node's apply
queue until the simulation drains it (SimCluster.apply_pending, at points
the schedule draws, or at once after each Ready when apply_lag is off),
except that a Ready installing a snapshot or holding a conf change waits
until everything handed over is applied, as the node's does.

A crash can be armed to happen inside the next Ready a node handles, at one of
the CRASH_* points below -- one between every two steps, and one inside the
write, between the write and its fsync; everything not yet fsynced may then
be lost (SimDisk.crash), and so is the apply queue, while what was already
sent stays in the network.
"""
from __future__ import annotations

import random
from typing import Callable

from engine.proto import raft_pb2 as pb
from engine.raft import Config, ConfChangeError, MemoryStorage, ProposalDroppedError, RawNode, StateType
from engine.raft.confchange import decode, is_conf_change
from engine.raft.errors import RaftError
from engine.server import ready_steps
from engine.sim.checker import InvariantViolation, SafetyChecker
from engine.sim.disk import SimDisk
from engine.sim.network import SimNetwork
from engine.sim.statemachine import HashStateMachine


# Where, inside the handling of one Ready, an armed crash strikes: after
# which step of engine/server/ready_steps.py (in the order a Ready's steps
# come, so the numbers never decrease along a Ready). A point a Ready does
# not reach (no early send for a follower, no snapshot) falls to the next one
# that it does.
CRASH_BEFORE = 0        # Ready taken, nothing done: its messages and state are gone
CRASH_AFTER_SEND = 1    # a leader's messages are out, nothing of the Ready is written
CRASH_AFTER_WAIT = 2    # a snapshot's Ready: everything before it applied, nothing installed
CRASH_AFTER_SNAP = 3    # snapshot installed, its WAL marker fsynced; hard state not yet
CRASH_BEFORE_SYNC = 4   # entries + hard state written, fsync not returned
CRASH_AFTER_SYNC = 5    # durable (if the write is synced), nothing sent (not a leader)
CRASH_AFTER_MSGS = 6    # written and sent, nothing handed to the applier
CRASH_AFTER_HANDOFF = 7  # committed entries handed to the apply queue, not yet applied
CRASH_BEFORE_ADVANCE = 8  # reads answered, advance() not called
CRASH_POINTS = 9
CRASH_NAMES = ("before", "after-send", "after-wait", "after-snap", "before-sync", "after-sync",
               "after-msgs", "after-handoff", "before-advance")
# The point reached once each kind of step is done.
_AFTER = {
    ready_steps.Send: CRASH_AFTER_SEND,       # early; a late send: CRASH_AFTER_MSGS
    ready_steps.WaitApplied: CRASH_AFTER_WAIT,  # for a snapshot; for a conf change: AFTER_HANDOFF
    ready_steps.InstallSnapshot: CRASH_AFTER_SNAP,
    ready_steps.Persist: CRASH_AFTER_SYNC,
    ready_steps.Apply: CRASH_AFTER_HANDOFF,
    ready_steps.AnswerReads: CRASH_BEFORE_ADVANCE,
}


class _Crashed(Exception):
    pass


class SimNode:
    def __init__(self, nid: int, storage: MemoryStorage, cfg_kw: dict, rng: random.Random,
                 disk: SimDisk | None = None) -> None:
        self.id = nid
        self.storage = storage
        # The disk outlives the process: a restart reads it back.
        self.disk = disk if disk is not None else SimDisk(storage.clone())
        self.alive = True
        self.sm = HashStateMachine()
        snap = storage.snapshot()
        if snap.metadata.index:
            self.sm.restore(snap.data)
        self.rn = RawNode(Config(id=nid, storage=storage, rng=rng, **cfg_kw))
        self.read_results: list[tuple[bytes, int]] = []
        # Committed entries handed to the apply task, not applied yet
        # (engine/server/applying.py: applied in order, after the Ready that
        # handed them advanced the core).
        self.apply_queue: list[list[pb.Entry]] = []
        # Membership as the simulator derives it on its own, by applying the
        # conf changes of the log in order (and snapshots' conf states). The
        # core's view must always equal it; quorum checks use this one.
        # While joint, `voters` is C_new and `outgoing` C_old.
        self.set_membership(snap.metadata.conf_state)

    def set_membership(self, cs: pb.ConfState) -> None:
        self.voters: set[int] = set(cs.voters)
        self.outgoing: set[int] = set(cs.voters_outgoing)
        self.learners: set[int] = set(cs.learners)
        self.learners_next: set[int] = set(cs.learners_next)
        self.auto_leave = cs.auto_leave

    def apply_membership(self, cc: pb.ConfChange | pb.ConfChangeV2) -> None:
        """Thesis §4.3 as the simulator reads it, written apart from the
        core's engine/raft/confchange.py so that each checks the other."""
        if isinstance(cc, pb.ConfChange):
            changes, transition = [cc], pb.ConfChangeTransitionAuto
        else:
            changes, transition = list(cc.changes), cc.transition
        if not changes and transition == pb.ConfChangeTransitionAuto:
            # Leave: C_old goes; its demoted voters are learners now.
            self.learners |= self.learners_next
            self.learners_next, self.outgoing, self.auto_leave = set(), set(), False
            return
        if transition != pb.ConfChangeTransitionAuto or len(changes) > 1:
            self.outgoing = set(self.voters)
            self.auto_leave = transition != pb.ConfChangeTransitionJointExplicit
        for ch in changes:
            nid = ch.node_id
            if nid == 0:
                continue
            if ch.type == pb.ConfChangeAddNode:
                self.learners.discard(nid)
                self.learners_next.discard(nid)
                self.voters.add(nid)
            elif ch.type == pb.ConfChangeAddLearnerNode and nid not in self.learners:
                self.voters.discard(nid)
                self.learners_next.discard(nid)
                if nid in self.outgoing:  # a voter of C_old until the leave
                    self.learners_next.add(nid)
                else:
                    self.learners.add(nid)
            elif ch.type == pb.ConfChangeRemoveNode:
                self.voters.discard(nid)
                self.learners.discard(nid)
                self.learners_next.discard(nid)

    def quorum_sets(self) -> list[list[int]]:
        """The voter sets of which a decision needs a majority each."""
        return [sorted(self.voters)] + ([sorted(self.outgoing)] if self.outgoing else [])

    def check_membership(self) -> None:
        cfg = self.rn.raft.config
        mine = (self.voters, self.outgoing, self.learners, self.learners_next, self.auto_leave)
        core = (set(cfg.incoming), set(cfg.outgoing), set(cfg.learners), set(cfg.learners_next),
                cfg.auto_leave)
        r = self.rn.raft
        if set(r.prs) != cfg.tracked() or {i for i, p in r.prs.items() if p.is_learner} != cfg.learners:
            raise InvariantViolation(
                f"progress: node {self.id} tracks {sorted(r.prs)} (learners "
                f"{sorted(i for i, p in r.prs.items() if p.is_learner)}) under config {cfg}")
        if mine != core:
            raise InvariantViolation(
                f"membership: node {self.id} core has {cfg}, the log says voters "
                f"{sorted(self.voters)}&&{sorted(self.outgoing)} learners {sorted(self.learners)} "
                f"learners_next {sorted(self.learners_next)} auto_leave {self.auto_leave}")

    @property
    def raft(self):
        return self.rn.raft


class SimCluster:
    def __init__(self, ids: list[int], seed: int = 0, *, pre_vote: bool = True,
                 check_quorum: bool = True, election_tick: int = 10, heartbeat_tick: int = 1,
                 max_size_per_msg: int = 1 << 20, max_inflight: int = 256,
                 checker: SafetyChecker | None = None, bootstrap: bool = True,
                 log: Callable[[str], None] | None = None, learners: list[int] = (),
                 durable_self_ack: bool = True, max_inflight_bytes: int = 0,
                 max_uncommitted_size: int = 0, apply_lag: bool = False) -> None:
        self.rng = random.Random(seed)
        self.net = SimNetwork(random.Random(self.rng.getrandbits(64)))
        self.checker = checker or SafetyChecker()
        self.cfg_kw = dict(pre_vote=pre_vote, check_quorum=check_quorum,
                           election_tick=election_tick, heartbeat_tick=heartbeat_tick,
                           max_size_per_msg=max_size_per_msg, max_inflight_msgs=max_inflight,
                           durable_self_ack=durable_self_ack,
                           max_inflight_bytes=max_inflight_bytes,
                           max_uncommitted_entries_size=max_uncommitted_size)
        self.nodes: dict[int, SimNode] = {}
        self.log = log
        # True: committed entries wait in each node's apply queue until
        # apply_pending() (the schedule drains them at random points: an
        # apply task lagging behind the Ready loop). False: applied right
        # after each Ready's advance (the apply task runs as soon as the
        # loop lets it).
        self.apply_lag = apply_lag
        self.votes_granted: dict[tuple[int, int], set[int]] = {}  # (candidate, term) -> voters
        # node -> CRASH_* point: that node dies inside the next Ready it handles.
        self.armed: dict[int, int] = {}
        self.crashes_in_ready = 0
        # Stalled processes (SIGSTOP, a long GC or swap): node -> the tick of
        # the shared clock at which it runs again. It neither ticks nor
        # receives (SimNetwork holds its messages) nor takes requests.
        self.paused: dict[int, int] = {}
        # Called with (node, Ready) as each Ready is taken (interaction scripts).
        self.on_ready: Callable[[int, object], None] | None = None
        # Called with (node, entry) once a node applied a conf change entry
        # (the schedule's targeted faults).
        self.on_conf_change: Callable[[SimNode, pb.Entry], None] | None = None
        for i in [*ids, *learners]:
            self.nodes[i] = self._new_node(i, MemoryStorage())
            if bootstrap:
                self.nodes[i].rn.bootstrap([(j, b"") for j in ids], [(j, b"") for j in learners])
                # Bootstrapping configures the core at once, before its
                # founding entries are applied (again, changing nothing):
                # so does the simulator's own view of the membership.
                self.nodes[i].set_membership(pb.ConfState(voters=ids, learners=list(learners)))
        for n in list(self.nodes.values()):
            self.process(n)

    def _new_node(self, nid: int, storage: MemoryStorage, disk: SimDisk | None = None) -> SimNode:
        n = SimNode(nid, storage, self.cfg_kw, random.Random(self.rng.getrandbits(64)), disk)
        n.disk.on_durable = lambda ents, prev, nid=nid: self._escaped(nid, ents, prev)
        return n

    # -- membership of the simulation (not of Raft) -----------------------------

    def add_empty_node(self, nid: int) -> SimNode:
        """A process for a member about to be added: empty storage, no config."""
        n = self._new_node(nid, MemoryStorage())
        self.nodes[nid] = n
        return n

    def arm_crash(self, nid: int, point: int) -> None:
        """Crash node nid inside the next Ready it handles, at `point`."""
        self.armed[nid] = point

    def pause(self, nid: int, ticks: int) -> None:
        """Stop node nid's process for `ticks` ticks of the shared clock."""
        self.paused[nid] = self.net.now + ticks
        self.net.pause(nid)

    def resume(self, nid: int) -> None:
        if self.paused.pop(nid, None) is not None:
            self.net.resume(nid)

    def crash(self, nid: int) -> None:
        """A power cut: what is not fsynced may be lost (SimDisk.crash), and
        so are the messages in flight to the node; its own already sent stay."""
        n = self.nodes[nid]
        n.alive = False
        n.apply_queue.clear()   # the apply task's memory
        self.paused.pop(nid, None)
        self.armed.pop(nid, None)
        n.disk.crash(self.rng)
        lost = self.net.drop_to(nid)
        for m in lost:
            if m.type == pb.MsgSnap:
                self._report_snapshot(m, ok=False)

    def restart(self, nid: int) -> None:
        """Start again from the disk alone, as the node's open_raft_log does."""
        old = self.nodes[nid]
        try:
            n = self._new_node(nid, old.disk.durable.clone(), old.disk)
        except (AssertionError, RaftError) as e:
            raise InvariantViolation(f"restart: member {nid} cannot start from its disk: {e}") from e
        self.nodes[nid] = n
        self.checker.on_restore(nid, n.sm.applied, n.sm.digest) if n.sm.applied else None
        self.process(n)

    # -- the host loop ------------------------------------------------------------

    def process(self, n: SimNode) -> None:
        """Handle every Ready of node n, as engine/server does."""
        try:
            self._process(n)
        except _Crashed:
            self.crashes_in_ready += 1
            self.crash(n.id)

    def _at(self, n: SimNode, point: int) -> None:
        armed = self.armed.get(n.id)
        if armed is not None and point >= armed:
            if self.log:
                self.log(f"crash {n.id} inside a Ready at point {point}")
            if self.on_ready is not None:
                self.on_ready(n.id, f"crash at {CRASH_NAMES[point]}")
            raise _Crashed()

    def _send(self, msgs) -> None:
        for m in msgs:
            if self.log:
                from engine.raft.describe import describe_message
                self.log(describe_message(m))
            if m.type == pb.MsgApp and m.entries:
                # Entries that leave a node can end up in any log: check them.
                self.checker.on_entries(m.from_, m.entries, m.log_term)
            self.net.send(m)

    def _process(self, n: SimNode) -> None:
        ck = self.checker
        r = n.raft
        while n.alive and n.rn.has_ready():
            old_commit = n.storage.hard_state.commit
            rd = n.rn.ready()
            if self.on_ready is not None:
                self.on_ready(n.id, rd)
            self._at(n, CRASH_BEFORE)
            if rd.soft_state is not None and rd.soft_state.state is StateType.LEADER:
                ck.on_leader(n.id, r.term)
                ck.on_elected(n.id, r.term, n.quorum_sets(), sorted(n.learners), r.election_votes,
                              self.votes_granted.get((n.id, r.term), set()))
            if rd.hard_state is not None and rd.hard_state.commit > old_commit:
                ck.on_commit(n.id, r.log, old_commit, rd.hard_state.commit)
                if r.state is StateType.LEADER and rd.hard_state.term == r.term:
                    # Checked before anything of this Ready is written or
                    # sent: the commit index may leave with the leader's
                    # early messages, so a quorum must hold it durably now.
                    ck.on_leader_commit(n.id, n.quorum_sets(), rd.hard_state.commit, self._stable_term)
            # The node's own steps (engine/server/ready_steps.py), with the
            # simulated disk, network and apply queue.
            for step in ready_steps.plan(rd, r.state is StateType.LEADER):
                kind = type(step)
                point = _AFTER.get(kind)
                if kind is ready_steps.Send:
                    self._send(step.messages)
                    if not step.early:
                        point = CRASH_AFTER_MSGS
                elif kind is ready_steps.Persist:
                    n.disk.write(step.hard_state, step.entries)
                    self._at(n, CRASH_BEFORE_SYNC)
                    if step.sync:
                        n.disk.fsync()
                    n.storage.append(step.entries)
                    if step.hard_state is not None:
                        n.storage.set_hard_state(step.hard_state)
                elif kind is ready_steps.InstallSnapshot:
                    self._install_snapshot(n, step.snapshot)
                elif kind is ready_steps.Apply:
                    n.apply_queue.append(step.entries)
                elif kind is ready_steps.WaitApplied:
                    self._apply_queued(n)
                    if step.why != "snapshot":
                        point = CRASH_AFTER_HANDOFF
                elif kind is ready_steps.AnswerReads:
                    for rs in step.read_states:
                        n.read_results.append((rs.request_ctx, rs.index))
                elif kind is ready_steps.Advance:
                    # Every Ready ends here: a crash armed at any point
                    # fires within this Ready, whichever steps it had.
                    self._at(n, CRASH_BEFORE_ADVANCE)
                    n.rn.advance(rd)
                else:
                    raise AssertionError(f"unknown Ready step {step!r}")
                if point is not None:
                    self._at(n, point)
            if not self.apply_lag:
                self._apply_queued(n)

    def _install_snapshot(self, n: SimNode, snap: pb.Snapshot) -> None:
        """The node's _install_snapshot: the store replaced by the snapshot,
        then snap file + WAL marker (fsynced), then what the core reads."""
        if n.apply_queue:
            raise AssertionError(f"node {n.id} installs a snapshot with entries still to apply")
        n.sm.restore(snap.data)
        self.checker.on_restore(n.id, n.sm.applied, n.sm.digest)
        n.disk.save_snapshot(snap)
        n.storage.apply_snapshot(snap)
        n.set_membership(snap.metadata.conf_state)
        n.check_membership()

    def apply_pending(self, nid: int, batches: int | None = None) -> int:
        """Node nid's apply task runs: it applies the oldest `batches`
        batches of its queue (None: all). Returns how many it applied."""
        n = self.nodes[nid]
        if not n.alive or nid in self.paused:
            return 0
        return self._apply_queued(n, batches)

    def _apply_queued(self, n: SimNode, batches: int | None = None) -> int:
        """The node's apply task (engine/server/applying.py): committed
        entries in order, conf changes through the core and the membership."""
        ck = self.checker
        done = 0
        while n.apply_queue and (batches is None or done < batches):
            ents = n.apply_queue.pop(0)
            done += 1
            for e in ents:
                if e.index <= n.sm.applied:
                    continue  # the snapshot we restored already covers it
                if is_conf_change(e):
                    cc = decode(e)
                    try:
                        n.rn.apply_conf_change(cc)
                    except ConfChangeError as err:
                        # A leader proposed what the config cannot take.
                        raise InvariantViolation(
                            f"conf change: node {n.id} cannot apply {e.term}/{e.index}: {err}") from err
                    n.apply_membership(cc)
                    payload = b"cc%d:" % e.type + e.data
                    if self.on_conf_change is not None:
                        self.on_conf_change(n, e)
                else:
                    payload = e.data
                n.sm.apply(e.index, payload)
                ck.on_apply(n.id, e.index, payload, n.sm.digest)
            if any(is_conf_change(e) for e in ents):
                n.check_membership()
        return done

    def _escaped(self, nid: int, ents, prev_term) -> None:
        self.checker.on_entries(nid, ents, prev_term)

    def _stable_term(self, nid: int, index: int) -> int | None:
        n = self.nodes.get(nid)
        if n is None:
            return None
        # What the node's disk holds durably (not the storage its core reads,
        # which also has what is written but not yet fsynced).
        s = n.disk.durable
        if index <= s.snapshot().metadata.index:
            return self.checker.committed_term.get(index)  # inside a snapshot: durable
        return n.disk.term(index)

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

    def drop_cut(self) -> int:
        """Drop now the in-flight messages a cut link would drop at delivery
        (so that what can still arrive is not queued behind them)."""
        keep, lost = [], []
        for m in self.net.inflight:
            (lost if self.net.is_cut(m.from_, m.to) else keep).append(m)
        self.net.inflight = keep
        self.net.dropped += len(lost)
        for m in lost:
            if m.type == pb.MsgSnap:
                self._report_snapshot(m, ok=False)
        return len(lost)

    def _report_snapshot(self, m: pb.Message, ok: bool) -> None:
        s = self.nodes.get(m.from_)
        if s is not None and s.alive:
            s.rn.report_snapshot(m.to, ok)
            self.process(s)

    def tick(self, nid: int) -> None:
        n = self.nodes[nid]
        if n.alive and nid not in self.paused:
            n.rn.tick()
            self.process(n)

    def tick_all(self) -> None:
        """One tick of the shared clock: the network's too (slow links)."""
        self.net.tick()
        for nid, until in sorted(self.paused.items()):
            if until <= self.net.now:
                self.resume(nid)
        for nid in sorted(self.nodes):
            self.tick(nid)

    def propose(self, nid: int, data: bytes) -> bool:
        n = self.nodes[nid]
        if not n.alive or nid in self.paused:
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
        if not n.alive or nid in self.paused:
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
        if not n.alive or nid in self.paused:
            return False
        idx = n.sm.applied
        if idx <= n.storage.snapshot().metadata.index:
            return False
        cs, data = n.raft.conf_state(), n.sm.snapshot()
        n.storage.create_snapshot(idx, cs, data)
        if idx - keep > n.storage.first_index():
            n.storage.compact(idx - keep)
        n.disk.compact(idx, cs, data, keep)
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
