"""RawNode: the Raft core as its host sees it — Ready out, advance() in.

The host's loop, in this order, for each Ready:
  1. persist `entries`, `hard_state` and `snapshot` (one fsync for all);
  2. send `messages` (several of them — votes, append acknowledgements —
     promise things that are only true once step 1 is durable);
  3. apply `committed_entries` (EntryConfChange and EntryConfChangeV2 ones
     through apply_conf_change, see below) and answer `read_states` once
     applied reaches their index;
  4. call advance(ready).

advance() also steps back in the core's acknowledgements of its own durable
state (its self-vote, its own appended entries): that is how a leader's own
copy comes to count toward commitment — only after step 1 (etcd-io/raft's
RawNode.stepsOnAdvance). So a host must call advance() only once everything
of the Ready is durable, and a one-voter cluster commits a proposal in the
Ready after the one that persisted it.

Membership (engine/raft/confchange.py). propose_conf_change takes a v1
ConfChange (what etcdctl 3.4 sends: one change, simple protocol) or a
ConfChangeV2 (several changes at once through a joint configuration, or an
empty one to leave it). For a committed entry the host decodes the data
(ConfChange for EntryConfChange, ConfChangeV2 for EntryConfChangeV2 — whose
data may be empty: the leader's own auto-leave) and calls
apply_conf_change(cc); the ConfState it returns is the membership to keep
with the next snapshot. An entry the host refuses for its own reasons is
applied as ConfChange() (node 0: changes nothing; never an empty
ConfChangeV2, which means "leave the joint config"). apply_conf_change
raises ConfChangeError, changing nothing, for a change the config cannot
take; a leader never proposes one (conf_change_refusal tells why it would
not), so this only comes from a foreign leader: log it and skip it.
"""
from __future__ import annotations

import dataclasses

from engine.proto import raft_pb2 as pb
from engine.raft.confchange import as_v2
from engine.raft.raft import NONE, Config, Raft, StateType
from engine.raft.read_only import ReadState
from engine.raft.status import PeerStatus, Status


@dataclasses.dataclass(frozen=True)
class SoftState:
    """Volatile state worth telling the host about when it changes."""
    lead: int
    state: StateType


@dataclasses.dataclass
class Ready:
    soft_state: SoftState | None
    hard_state: pb.HardState | None
    read_states: list[ReadState]
    entries: list[pb.Entry]
    snapshot: pb.Snapshot | None
    committed_entries: list[pb.Entry]
    messages: list[pb.Message]
    # Whether step 1 needs an fsync: new entries, or a changed term or vote.
    # A changed commit index alone may be lost in a crash and relearned.
    must_sync: bool

    def contains_updates(self) -> bool:
        return bool(self.soft_state or self.hard_state or self.read_states or self.entries
                    or self.snapshot is not None or self.committed_entries or self.messages)


def _hs_equal(a: pb.HardState, b: pb.HardState) -> bool:
    return a.term == b.term and a.vote == b.vote and a.commit == b.commit


class RawNode:
    def __init__(self, cfg: Config) -> None:
        self.raft = Raft(cfg)
        self._prev_soft = SoftState(self.raft.lead, self.raft.state)
        self._prev_hard = self.raft.hard_state()
        # The core's self-addressed acknowledgements handed out with the last
        # Ready, stepped in by advance() once the host made it durable.
        self._steps_on_advance: list[pb.Message] = []

    # -- bootstrapping ----------------------------------------------------------

    def bootstrap(self, peers: list[tuple[int, bytes]],
                  learners: list[tuple[int, bytes]] = ()) -> None:
        """Start a new cluster: every founding member appends the same
        ConfChangeAddNode entries (term 1, indexes 1..n), then one
        ConfChangeAddLearnerNode per founding learner, and treats them as
        committed, so a member added later learns the founding membership from
        the log like any other change."""
        r = self.raft
        if r.log.last_index() != 0:
            raise AssertionError("can only bootstrap an empty storage")
        if not peers:
            raise ValueError("must provide at least one peer to bootstrap")
        r.become_follower(1, NONE)
        ccs = [pb.ConfChange(type=pb.ConfChangeAddNode, node_id=pid, context=ctx)
               for pid, ctx in sorted(peers)]
        ccs += [pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=pid, context=ctx)
                for pid, ctx in sorted(learners)]
        ents = [pb.Entry(type=pb.EntryConfChange, term=1, index=i + 1, data=cc.SerializeToString())
                for i, cc in enumerate(ccs)]
        r.log.append(ents)
        r.log.committed = len(ents)
        for cc in ccs:
            r.apply_conf_change(pb.ConfChange(type=cc.type, node_id=cc.node_id))

    # -- input ------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(pb.Message(type=pb.MsgHup))

    def propose(self, data: bytes) -> None:
        """Raises ProposalDroppedError when it cannot be proposed here now."""
        self.raft.step(pb.Message(type=pb.MsgProp, from_=self.raft.id,
                                  entries=[pb.Entry(data=data)]))

    def propose_many(self, datas) -> None:
        """Many proposals in one MsgProp: one append, one broadcast."""
        self.raft.step(pb.Message(type=pb.MsgProp, from_=self.raft.id,
                                  entries=[pb.Entry(data=d) for d in datas]))

    def propose_conf_change(self, cc: pb.ConfChange | pb.ConfChangeV2) -> None:
        """Propose a membership change: a v1 ConfChange goes in an
        EntryConfChange, a ConfChangeV2 in an EntryConfChangeV2. A leader
        that refuses it (conf_change_refusal) appends a no-op instead, as
        etcd-io/raft does; ask conf_change_refusal first for a definite
        answer."""
        t = pb.EntryConfChangeV2 if isinstance(cc, pb.ConfChangeV2) else pb.EntryConfChange
        self.raft.step(pb.Message(type=pb.MsgProp, from_=self.raft.id, entries=[
            pb.Entry(type=t, data=cc.SerializeToString())]))

    def conf_change_refusal(self, cc: pb.ConfChange | pb.ConfChangeV2) -> str | None:
        """On a leader: why it would refuse `cc` now (a change is pending,
        the config is joint, ...), or None. On a follower: None (its leader
        decides)."""
        if self.raft.state is not StateType.LEADER:
            return None
        return self.raft.conf_change_refusal(cc)

    def apply_conf_change(self, cc: pb.ConfChange | pb.ConfChangeV2) -> pb.ConfState:
        """Apply a committed ConfChange or ConfChangeV2; raises
        ConfChangeError (nothing changed) for one this config cannot take."""
        return self.raft.apply_conf_change(cc)

    def step(self, m: pb.Message) -> None:
        """A message from a peer. Local-only types are refused: they would let
        a peer make us campaign or step down."""
        if m.type in (pb.MsgHup, pb.MsgBeat, pb.MsgUnreachable, pb.MsgSnapStatus,
                      pb.MsgCheckQuorum):
            raise ValueError(f"cannot step raft local message {m.type}")
        if m.from_ == self.raft.id:
            # Our own acknowledgements come only from advance(): one from the
            # wire would count our log as durable when it may not be.
            raise ValueError(f"a peer's message claims to come from us ({self.raft.id})")
        if m.from_ not in self.raft.prs and m.type in (
                pb.MsgAppResp, pb.MsgHeartbeatResp, pb.MsgVoteResp, pb.MsgPreVoteResp):
            return  # a response from a node that is no longer a member
        self.raft.step(m)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; its ReadState carries ctx."""
        self.raft.step(pb.Message(type=pb.MsgReadIndex, entries=[pb.Entry(data=ctx)]))

    def transfer_leader(self, transferee: int) -> None:
        self.raft.step(pb.Message(type=pb.MsgTransferLeader, from_=transferee))

    def report_unreachable(self, node: int) -> None:
        self.raft.step(pb.Message(type=pb.MsgUnreachable, from_=node))

    def report_snapshot(self, node: int, ok: bool) -> None:
        self.raft.step(pb.Message(type=pb.MsgSnapStatus, from_=node, reject=not ok))

    # -- output -----------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        ps = self._prev_soft
        if r.lead != ps.lead or r.state is not ps.state:
            return True
        ph = self._prev_hard
        if (r.term, r.vote, r.log.committed) != (ph.term, ph.vote, ph.commit):
            return True
        return bool(r.log.unstable.snapshot is not None or r.msgs or r.log.unstable.entries
                    or r.msgs_after_append or r.read_states or r.log.has_next_committed_entries())

    def ready(self) -> Ready:
        r = self.raft
        soft = SoftState(r.lead, r.state)
        hs = r.hard_state()
        entries = r.log.unstable_entries()
        hard_changed = not _hs_equal(hs, self._prev_hard)
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hs if hard_changed else None,
            read_states=r.read_states,
            entries=entries,
            snapshot=r.log.unstable.snapshot,
            committed_entries=r.log.next_committed_entries(),
            messages=r.msgs,
            must_sync=bool(entries) or hs.term != self._prev_hard.term or hs.vote != self._prev_hard.vote,
        )
        r.msgs = []
        r.read_states = []
        # Everything these acknowledge is in this Ready (or an earlier one):
        # they become true when the host advances past it. Extend, not
        # replace: a host that takes two Readies before advancing (none of
        # ours does) would otherwise lose acks.
        self._steps_on_advance.extend(r.msgs_after_append)
        r.msgs_after_append = []
        return rd

    def advance(self, rd: Ready) -> None:
        r = self.raft
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
            r.reduce_uncommitted_size(rd.committed_entries)
        if rd.entries:
            e = rd.entries[-1]
            r.log.stable_to(e.index, e.term)
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.metadata.index)
            if r.log.applied < rd.snapshot.metadata.index:
                r.log.applied = rd.snapshot.metadata.index
        # Our own vote and entries are durable now: count them. A stale one
        # (we moved to a later term meanwhile) is dropped by step()'s term check.
        steps, self._steps_on_advance = self._steps_on_advance, []
        for m in steps:
            r.step(m)
        # A joint config entered with auto-leave is left once applied here.
        r.maybe_auto_leave()

    # -- introspection ----------------------------------------------------------

    def status(self) -> Status:
        r = self.raft
        peers = {}
        if r.state is StateType.LEADER:
            for i, pr in sorted(r.prs.items()):
                peers[i] = PeerStatus(match=pr.match, next=pr.next, state=pr.state.value,
                                      inflight=pr.inflights.count(), recent_active=pr.recent_active,
                                      is_learner=pr.is_learner)
        return Status(
            id=r.id, state=r.state.value, term=r.term, vote=r.vote, lead=r.lead,
            commit=r.log.committed, applied=r.log.applied, last_index=r.log.last_index(),
            first_index=r.log.first_index(), snapshot_index=r.log.snapshot().metadata.index,
            voters=tuple(sorted(r.config.incoming)), learners=r.learners,
            voters_outgoing=tuple(sorted(r.config.outgoing)),
            learners_next=tuple(sorted(r.config.learners_next)), auto_leave=r.config.auto_leave,
            lead_transferee=r.lead_transferee, is_learner=r.is_learner, progress=peers,
        )
