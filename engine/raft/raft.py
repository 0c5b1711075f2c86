"""The Raft state machine (Ongaro's thesis; the structure of etcd-io/raft).

Pure and deterministic: no clock (time is `tick()`), no I/O (messages to send
pile up in `self.msgs`; entries to persist sit in the unstable log), and all
randomness comes from the `random.Random` in the Config. RawNode wraps this
into Ready/advance for a host.

A role is a pair of swapped methods: `_step` (how messages are handled) and
`_tick` (what time does). `step()` does the term comparison common to every
role once, then dispatches.
"""
from __future__ import annotations

import dataclasses
import enum
import random

from engine.proto import raft_pb2 as pb
from engine.raft import confchange, quorum
from engine.raft.confchange import ConfChangeError, JointConfig
from engine.raft.errors import (
    CompactedError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
)
from engine.raft.log import RaftLog
from engine.raft.progress import Progress, ProgressState
from engine.raft.quorum import VoteResult
from engine.raft.read_only import ReadOnly, ReadState
from engine.raft.storage import MemoryStorage

NONE = 0  # "no node": no leader known, no vote cast

# Contexts of vote requests. A transfer-driven campaign must win even against
# followers that still hear from the old leader (they would otherwise ignore it).
CAMPAIGN_PRE_ELECTION = b"CampaignPreElection"
CAMPAIGN_ELECTION = b"CampaignElection"
CAMPAIGN_TRANSFER = b"CampaignTransfer"


class StateType(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclasses.dataclass
class Config:
    id: int
    storage: MemoryStorage
    # An election is started after [election_tick, 2*election_tick) ticks
    # without hearing from a leader; a leader heartbeats every heartbeat_tick.
    election_tick: int = 10
    heartbeat_tick: int = 1
    # Last index the host applied before this start (0: the snapshot's index).
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    # Flow control by bytes (etcd-io/raft MaxInflightBytes): at most this
    # much entry payload in flight to one follower (0 = no byte limit, only
    # max_inflight_msgs messages).
    max_inflight_bytes: int = 0
    # etcd-io/raft MaxUncommittedEntriesSize: a leader refuses proposals
    # (ProposalDroppedError) while the payload of its appended but not yet
    # applied entries would exceed this (0 = no limit). One proposal is always
    # taken when nothing is uncommitted, however big, so progress is possible.
    max_uncommitted_entries_size: int = 0
    # Cap of committed entries handed out in one Ready (bytes, 0 = no cap).
    max_committed_size_per_ready: int = 0
    # §6.2: a leader that has not heard from a quorum in an election timeout
    # steps down; followers then also ignore vote requests while they still
    # hear from a leader (leader lease), so a partitioned node can't depose it.
    check_quorum: bool = True
    # §9.6: a node first asks whether it could win before raising its term,
    # so a node coming back from a partition does not disrupt the cluster.
    pre_vote: bool = True
    # The leader's own vote and its own appended entries count toward a
    # quorum only once the host reports them durable (advance() after the
    # Ready that carried them), as in etcd-io/raft since 2022 (raft.go,
    # `msgsAfterAppend`). Thesis §3.8: "each server persists new log entries
    # before they are counted towards the entries' commitment". Our host
    # sends a leader's messages before its own fsync (thesis §10.2.1), so
    # counting at once lets a single voter commit (and tell a learner) an
    # entry a crash then erases. False restores that old, unsafe behaviour:
    # it exists only for the mutation test that shows the simulator finds it.
    durable_self_ack: bool = True
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(0))

    def validate(self) -> None:
        if self.id == NONE:
            raise ValueError("cannot use 0 as a node id")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election tick must be greater than heartbeat tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max inflight messages must be greater than 0")
        if self.max_inflight_bytes < 0 or self.max_uncommitted_entries_size < 0:
            raise ValueError("byte limits must be >= 0 (0: no limit)")


def payload_size(ents) -> int:
    """Bytes of entry data: what flow control and the uncommitted limit
    count (etcd-io/raft payloadsSize; the envelope is not counted)."""
    return sum(len(e.data) for e in ents)


def _vote_resp_type(t: int) -> int:
    if t == pb.MsgVote:
        return pb.MsgVoteResp
    if t == pb.MsgPreVote:
        return pb.MsgPreVoteResp
    raise AssertionError(f"not a vote message: {t}")


class Raft:
    def __init__(self, cfg: Config) -> None:
        cfg.validate()
        self.id = cfg.id
        self.log = RaftLog(cfg.storage, cfg.max_committed_size_per_ready or (1 << 62))
        self.max_msg_size = cfg.max_size_per_msg
        self.max_inflight = cfg.max_inflight_msgs
        self.max_inflight_bytes = cfg.max_inflight_bytes
        self.max_uncommitted_size = cfg.max_uncommitted_entries_size
        # Payload bytes this leader appended that are not yet handed out for
        # applying (etcd-io/raft uncommittedSize). Only a leader counts.
        self.uncommitted_size = 0
        self.election_timeout = cfg.election_tick
        self.heartbeat_timeout = cfg.heartbeat_tick
        self.check_quorum = cfg.check_quorum
        self.pre_vote = cfg.pre_vote
        self.durable_self_ack = cfg.durable_self_ack
        self.rng = cfg.rng

        # Persistent state (§5.2 Figure 2): written to the WAL before any
        # message that depends on it leaves this node.
        self.term = 0
        self.vote = NONE

        self.state = StateType.FOLLOWER
        self.lead = NONE
        self.is_learner = False
        # The membership, simple or joint (engine/raft/confchange.py).
        self.config = JointConfig()
        # Progress of every member, self included; learners are flagged.
        # Invariant: set(prs) == config.tracked(), and pr.is_learner exactly
        # for config.learners (a voter being demoted stays a voter of C_old,
        # in learners_next, until the joint config is left).
        self.prs: dict[int, Progress] = {}
        # Derived from config, sorted: every voter of C_new or C_old (whose
        # vote may count in some majority: vote requests go to all of them),
        # and the learners.
        self.voters: tuple[int, ...] = ()
        self.learners: tuple[int, ...] = ()
        self.votes: dict[int, bool] = {}
        self.election_votes: dict[int, bool] = {}

        self.msgs: list[pb.Message] = []
        # Our own acknowledgements (MsgVoteResp for our self-vote, MsgAppResp
        # for our own appends), addressed to ourselves. They are true only
        # once the unstable state they rest on (term, vote, entries) is
        # durable, so RawNode steps them back in at advance(), after the
        # host persisted the Ready (etcd-io/raft: msgsAfterAppend, stepped
        # from RawNode.stepsOnAdvance).
        self.msgs_after_append: list[pb.Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        # ReadIndex requests that came before this leader committed an entry
        # of its own term: its commit index may still be stale (§6.4 step 1).
        self.pending_read_index_messages: list[pb.Message] = []

        self.lead_transferee = NONE
        # Index of the latest conf change proposed by this leader; no new one
        # is accepted until it is applied (one change at a time, §4.1), which
        # also makes the config a change is checked against at proposal the
        # one it will be applied to.
        self.pending_conf_index = 0

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0

        hs, cs = cfg.storage.initial_state()
        self.apply_conf_state(cs)
        if hs.term or hs.vote or hs.commit:
            self._load_state(hs)
        if cfg.applied > 0:
            self.log.applied_to(cfg.applied)
        self.become_follower(self.term, NONE)

    # -- helpers --------------------------------------------------------------

    def __repr__(self) -> str:
        return (f"Raft(id={self.id}, {self.state.value}, term={self.term}, vote={self.vote}, "
                f"lead={self.lead}, commit={self.log.committed}, applied={self.log.applied}, "
                f"last={self.log.last_index()})")

    def hard_state(self) -> pb.HardState:
        return pb.HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    def _load_state(self, hs: pb.HardState) -> None:
        # A commit index below the snapshot is a crash inside the install of
        # a leader's snapshot: the host fsyncs the snapshot's marker, then the
        # hard state that moves commit to it; a power cut between the two
        # leaves the older hard state. Everything in a snapshot is committed,
        # so the snapshot's index is the commit index (etcd drops such a
        # marker instead, wal.ValidSnapshotEntries; our host has already
        # swapped its store to the snapshot by then, so the marker must stay).
        # Found by the simulator's crash points (engine/sim/cluster.py
        # CRASH_AFTER_SNAP). A commit past the log is still corruption.
        if hs.commit > self.log.last_index():
            raise AssertionError(
                f"{self.id} state.commit {hs.commit} is out of range "
                f"[{self.log.committed}, {self.log.last_index()}]")
        self.log.committed = max(hs.commit, self.log.committed)
        self.term = hs.term
        self.vote = hs.vote

    def promotable(self) -> bool:
        """Only a voter that has no unapplied snapshot may campaign."""
        pr = self.prs.get(self.id)
        return pr is not None and not pr.is_learner and self.log.unstable.snapshot is None

    def _peers(self):
        return (i for i in sorted(self.prs) if i != self.id)

    def send(self, m: pb.Message) -> None:
        m.from_ = self.id
        if m.type in (pb.MsgVote, pb.MsgVoteResp, pb.MsgPreVote, pb.MsgPreVoteResp):
            # Vote messages carry the term they are about (for pre-votes a
            # future term), never implicitly the sender's.
            if m.term == 0:
                raise AssertionError(f"term should be set when sending {m.type}")
        elif m.type in (pb.MsgProp, pb.MsgReadIndex):
            # Forwarded proposals and read requests are termless, so a
            # leader of any term can take them.
            pass
        else:
            m.term = self.term
        if m.to == self.id:
            if m.type not in (pb.MsgAppResp, pb.MsgVoteResp):
                raise AssertionError(f"message should not be self-addressed: {m.type}")
            self.msgs_after_append.append(m)
            return
        self.msgs.append(m)

    def _reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(self.election_timeout)

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    # -- roles ----------------------------------------------------------------

    def _new_progress(self, next_index: int, learner: bool) -> Progress:
        return Progress(next_index, self.max_inflight, learner, self.max_inflight_bytes)

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.votes = {}
        last = self.log.last_index()
        for id_, pr in list(self.prs.items()):
            np = self._new_progress(last + 1, pr.is_learner)
            if id_ == self.id:
                np.match = last
            self.prs[id_] = np
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.read_only = ReadOnly()

    def become_follower(self, term: int, lead: int) -> None:
        self._step = self._step_follower
        self._tick = self._tick_election
        self._reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise AssertionError("invalid transition [leader -> pre-candidate]")
        # A pre-candidate changes neither term nor vote: losing a pre-vote
        # leaves no trace, which is the point of pre-vote.
        self._step = self._step_candidate
        self._tick = self._tick_election
        self.votes = {}
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.state is StateType.LEADER:
            raise AssertionError("invalid transition [leader -> candidate]")
        self._step = self._step_candidate
        self._tick = self._tick_election
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_leader(self) -> None:
        if self.state is StateType.FOLLOWER:
            raise AssertionError("invalid transition [follower -> leader]")
        # Kept for the status line ("elected by ...") and the simulator's check
        # that only voters were counted.
        self.election_votes = dict(self.votes)
        self._step = self._step_leader
        self._tick = self._tick_heartbeat
        self._reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        # Followers start in probe state; our own progress is replicate.
        self.prs[self.id].become_replicate()
        # Conservatively forbid a conf change until everything of earlier
        # terms is applied: there may be an uncommitted one in the log.
        self.pending_conf_index = self.log.last_index()
        # §5.4.2 / §8: an empty entry of the new term commits everything
        # before it and lets ReadIndex learn the true commit index.
        if not self.append_entry([pb.Entry()]):
            raise AssertionError("empty entry was dropped")

    # -- time -----------------------------------------------------------------

    def tick(self) -> None:
        self._tick()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.past_election_timeout():
            self.election_elapsed = 0
            self.step(pb.Message(type=pb.MsgHup, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(pb.Message(type=pb.MsgCheckQuorum, from_=self.id))
            # A transfer that did not finish within an election timeout is abandoned.
            if self.state is StateType.LEADER and self.lead_transferee != NONE:
                self.abort_leader_transfer()
                if self.id not in self.voters:
                    self._hand_over_leadership()  # removed: try again
        if self.state is not StateType.LEADER:
            return
        self.maybe_auto_leave()
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(pb.Message(type=pb.MsgBeat, from_=self.id))

    # -- elections ------------------------------------------------------------

    def hup(self, transfer: bool = False) -> None:
        if self.state is StateType.LEADER:
            return
        if not self.promotable():
            return
        if self._has_unapplied_conf_change():
            # Our config may be about to change; campaigning on the old one
            # could count the wrong voters.
            return
        if transfer:
            # A transfer is not recovery from a partition: skip pre-vote.
            self.campaign(CAMPAIGN_TRANSFER)
        elif self.pre_vote:
            self.campaign(CAMPAIGN_PRE_ELECTION)
        else:
            self.campaign(CAMPAIGN_ELECTION)

    def _has_unapplied_conf_change(self) -> bool:
        lo, hi = self.log.applied + 1, self.log.committed + 1
        if lo >= hi:
            return False
        try:
            ents = self.log.slice(lo, hi)
        except CompactedError:
            return False
        return any(confchange.is_conf_change(e) for e in ents)

    def campaign(self, kind: bytes) -> None:
        if kind == CAMPAIGN_PRE_ELECTION:
            self.become_pre_candidate()
            vote_msg, term = pb.MsgPreVote, self.term + 1
        else:
            self.become_candidate()
            vote_msg, term = pb.MsgVote, self.term
        if vote_msg == pb.MsgVote and self.durable_self_ack:
            # Our vote for ourselves counts once the hard state carrying it
            # (new term, vote=us) is durable: RawNode steps this response
            # back in at advance(). Counted at once, a single voter would
            # lead term T with T not yet on disk; a crash then lets it lead
            # T a second time and write different entries at the same
            # indexes (etcd-io/raft raft.go campaign(); thesis §3.8).
            self.send(pb.Message(type=pb.MsgVoteResp, to=self.id, term=term))
        elif self.poll(self.id, _vote_resp_type(vote_msg), True) is VoteResult.WON:
            # A pre-vote changes no persistent state (thesis §9.6), so our
            # own is counted at once even when acks are deferred (etcd-io/raft
            # defers it too, for uniformity; that costs a single voter one
            # more Ready per election for nothing). A single voter wins here.
            if kind == CAMPAIGN_PRE_ELECTION:
                self.campaign(CAMPAIGN_ELECTION)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if kind == CAMPAIGN_TRANSFER else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for v in self.voters:
            if v == self.id:
                continue
            self.send(pb.Message(type=vote_msg, to=v, term=term, index=last_index,
                                 log_term=last_term, context=ctx))

    def poll(self, id_: int, t: int, granted: bool) -> VoteResult:
        if id_ in self.voters and id_ not in self.votes:
            self.votes[id_] = granted
        # In a joint config a candidate needs a majority of C_old and of C_new.
        return quorum.joint_vote_result(self.config.incoming, self.config.outgoing, self.votes)

    # -- the one entry point for messages --------------------------------------

    def step(self, m: pb.Message) -> None:
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (pb.MsgVote, pb.MsgPreVote):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (self.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.election_timeout)
                if not force and in_lease:
                    # We heard from a live leader within the minimum election
                    # timeout: don't let a disruptive node depose it (§4.2.3).
                    return
            if m.type == pb.MsgPreVote:
                pass  # never change our term for a pre-vote
            elif m.type == pb.MsgPreVoteResp and not m.reject:
                # The future term we asked about; it becomes ours only when
                # a quorum says yes and we campaign for real.
                pass
            elif m.type in (pb.MsgApp, pb.MsgHeartbeat, pb.MsgSnap):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (pb.MsgHeartbeat, pb.MsgApp):
                # A stale leader (e.g. back from a partition) learns our
                # higher term and steps down. Without this, with check-quorum
                # or pre-vote it could never hear of the new term: we ignore
                # its messages and nobody else would tell it.
                self.send(pb.Message(to=m.from_, type=pb.MsgAppResp))
            elif m.type == pb.MsgPreVote:
                # Reject with our term, so a pre-candidate with a stale term
                # learns it and can catch up.
                self.send(pb.Message(to=m.from_, term=self.term, type=pb.MsgPreVoteResp, reject=True))
            return

        t = m.type
        if t == pb.MsgHup:
            self.hup()
        elif t in (pb.MsgVote, pb.MsgPreVote):
            self._handle_vote_request(m)
        else:
            self._step(m)

    def _handle_vote_request(self, m: pb.Message) -> None:
        # A learner, or a member that knows no config yet, answers too, as in
        # etcd-io/raft: the candidate only asks members that are voters in
        # ITS config, and only counts votes of those (poll). This matters for
        # liveness: a promotion can be committed by {2,3} before learner 1
        # hears of it; if 2 then fails, 3 can only win with 1's vote, and 1
        # would wait for a leader to tell it of the promotion forever.
        can_vote = (
            self.vote == m.from_  # repeated request (duplicate or retry)
            or (self.vote == NONE and self.lead == NONE)  # free, and no leader known
            or (m.type == pb.MsgPreVote and m.term > self.term)  # pre-vote for a future term
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # The response carries the term of the request, not ours: for a
            # pre-vote, ours is lower and the candidate would discard it.
            self.send(pb.Message(to=m.from_, term=m.term, type=_vote_resp_type(m.type)))
            if m.type == pb.MsgVote:
                self.election_elapsed = 0
                self.vote = m.from_
        elif self.term:
            self.send(pb.Message(to=m.from_, term=self.term, type=_vote_resp_type(m.type), reject=True))
        # A member that has never seen a term (term 0) has nothing to teach
        # the candidate; it stays silent rather than reject with term 0.

    # -- leader ---------------------------------------------------------------

    def append_entry(self, ents) -> bool:
        """Append proposals to our log; False (nothing appended) when they
        would take the uncommitted tail past max_uncommitted_entries_size."""
        if not self._increase_uncommitted_size(ents):
            return False
        li = self.log.last_index()
        for i, e in enumerate(ents):
            e.term = self.term
            e.index = li + 1 + i
        li = self.log.append(list(ents))
        if self.durable_self_ack:
            # We count our own copy once the host has made it durable: this
            # acknowledgement is stepped back in at advance(), after the fsync
            # of the Ready carrying these entries (etcd-io/raft appendEntry;
            # thesis §3.8). The host may send our MsgApps before that fsync
            # (§10.2.1) because until then they carry no commit index that
            # relies on our own copy.
            self.send(pb.Message(type=pb.MsgAppResp, to=self.id, index=li))
        else:
            self.prs[self.id].maybe_update(li)
            self.maybe_commit()
        return True

    def _increase_uncommitted_size(self, ents) -> bool:
        s = payload_size(ents)
        if (self.max_uncommitted_size and self.uncommitted_size > 0 and s > 0
                and self.uncommitted_size + s > self.max_uncommitted_size):
            return False
        self.uncommitted_size += s
        return True

    def reduce_uncommitted_size(self, ents) -> None:
        """Entries handed out for applying no longer count (RawNode.advance).
        A follower's count is 0 and stays 0; entries of an earlier leader
        may make the sum go below zero, hence the floor (etcd-io/raft)."""
        if self.uncommitted_size == 0:
            return
        self.uncommitted_size = max(0, self.uncommitted_size - payload_size(ents))

    def maybe_commit(self) -> bool:
        # Joint: an index is committed once a majority of C_new AND one of
        # C_old hold it (§4.3); the smaller of the two majorities' indexes.
        cfg = self.config
        mci = quorum.joint_committed_index(cfg.incoming, cfg.outgoing, lambda v: self.prs[v].match)
        return self.log.maybe_commit(mci, self.term)

    def committed_entry_in_current_term(self) -> bool:
        return self.log.term(self.log.committed) == self.term

    def send_append(self, to: int) -> None:
        self.maybe_send_append(to, True)

    def maybe_send_append(self, to: int, send_if_empty: bool) -> bool:
        """Send `to` the entries from its next index, or a snapshot if those
        were compacted. Returns whether a message was sent."""
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        prev_term = self.log.term(prev_index)
        ents = None
        if prev_term is not None:
            try:
                ents = self.log.entries(pr.next, self.max_msg_size)
            except CompactedError:
                ents = None
        if ents is None:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        m = pb.Message(to=to, type=pb.MsgApp, index=prev_index, log_term=prev_term,
                       entries=ents, commit=self.log.committed)
        if ents:
            if pr.state is ProgressState.REPLICATE:
                # Pipeline: assume it lands and send the next batch at once.
                last = ents[-1].index
                pr.optimistic_update(last)
                pr.inflights.add(last, payload_size(ents))
            elif pr.state is ProgressState.PROBE:
                pr.probe_sent = True
            else:
                raise AssertionError(f"{self.id} is sending append in unhandled state {pr.state}")
        self.send(m)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            # It may be down; don't ship a whole snapshot into the void.
            return False
        try:
            snap = self.log.snapshot()
        except SnapshotTemporarilyUnavailableError:
            return False
        if snap.metadata.index == 0:
            raise AssertionError("need non-empty snapshot")
        pr.become_snapshot(snap.metadata.index)
        self.send(pb.Message(to=to, type=pb.MsgSnap, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower to commit past what it is known to hold: its
        # log may still differ from ours beyond its match index.
        commit = min(self.prs[to].match, self.log.committed)
        self.send(pb.Message(to=to, type=pb.MsgHeartbeat, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for i in self._peers():
            self.send_append(i)

    def bcast_heartbeat(self, ctx: bytes | None = None) -> None:
        if ctx is None:
            ctx = self.read_only.last_pending_request_ctx()
        for i in self._peers():
            self.send_heartbeat(i, ctx)

    def _quorum_active(self) -> bool:
        """Check-quorum: did a majority of voters (of both configs, when
        joint) talk to us in the last election timeout? Resets the marks for
        the next round."""
        active = {v: v == self.id or self.prs[v].recent_active for v in self.voters}
        for id_, pr in self.prs.items():
            if id_ != self.id:
                pr.recent_active = False
        cfg = self.config
        return quorum.joint_vote_result(cfg.incoming, cfg.outgoing, active) is VoteResult.WON

    def _step_leader(self, m: pb.Message) -> None:
        t = m.type
        if t == pb.MsgBeat:
            self.bcast_heartbeat()
            return
        if t == pb.MsgCheckQuorum:
            if not self._quorum_active() and self.id in self.voters:
                # The minority side of a partition: stop taking writes.
                self.become_follower(self.term, NONE)
            # A removed leader handing over (not a voter) keeps at it even
            # when the voters are unreachable: it takes no writes anyway, and
            # stepping down would leave {1,2} -> {2} without anyone able to
            # tell 2 that the change is committed (found by the simulator,
            # seed 601770 of --nodes 1: 2 crashed, 1 stepped down, 2 came
            # back needing the vote 1 refuses).
            return
        if t == pb.MsgProp:
            if not m.entries:
                raise AssertionError("stepped empty MsgProp")
            if self.id not in self.prs:
                raise ProposalDroppedError("removed from the cluster")
            if self.lead_transferee != NONE:
                raise ProposalDroppedError("leadership transfer in progress")
            ents = [pb.Entry(type=e.type, data=e.data) for e in m.entries]
            pending = self.pending_conf_index
            for i, e in enumerate(ents):
                if confchange.is_conf_change(e):
                    if self._refuse_conf_change_entry(e, pending) is not None:
                        # Turn it into a no-op rather than reorder the
                        # proposal stream (etcd-io/raft stepLeader).
                        ents[i] = pb.Entry(type=pb.EntryNormal)
                    else:
                        pending = self.log.last_index() + i + 1
            if not self.append_entry(ents):
                raise ProposalDroppedError("too many uncommitted entries")
            # Only now: a refused batch must not block later conf changes.
            self.pending_conf_index = pending
            self.bcast_append()
            return
        if t == pb.MsgReadIndex:
            self._leader_read_index(m)
            return

        pr = self.prs.get(m.from_)
        if pr is None:
            return  # from a node no longer in the config
        if t == pb.MsgAppResp and m.from_ == self.id:
            self._handle_own_append_ack(m, pr)
        elif t == pb.MsgAppResp:
            self._handle_append_response(m, pr)
        elif t == pb.MsgHeartbeatResp:
            pr.recent_active = True
            pr.probe_sent = False
            # A heartbeat answer frees one slot so a full, stuck window moves.
            if pr.state is ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(m.from_)
            if m.context:
                acks = self.read_only.recv_ack(m.from_, m.context)
                if acks is None:
                    return
                votes = {v: True for v in acks | {self.id}}
                cfg = self.config
                if quorum.joint_vote_result(cfg.incoming, cfg.outgoing, votes) is not VoteResult.WON:
                    return
                for p in self.read_only.advance(m.context):
                    self._respond_read_index(p.req, p.index)
        elif t == pb.MsgSnapStatus:
            if pr.state is not ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            # Either way wait for the follower's MsgAppResp before sending
            # more: the snapshot may still be in flight or need a retry.
            pr.become_probe()
            pr.probe_sent = True
        elif t == pb.MsgUnreachable:
            if pr.state is ProgressState.REPLICATE:
                pr.become_probe()
        elif t == pb.MsgTransferLeader:
            self._handle_transfer_leader(m, pr)

    def _handle_append_response(self, m: pb.Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            # Fast backtracking: the follower told us (hint index, hint term);
            # skip every entry of ours above the last one with term <= hint term.
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.from_)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self._release_pending_read_index_messages()
            self.bcast_append()
        elif old_paused:
            self.send_append(m.from_)
        # Fill the window: the follower can take more than one batch in flight.
        while self.maybe_send_append(m.from_, False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self.send_timeout_now(m.from_)

    def _handle_own_append_ack(self, m: pb.Message, pr: Progress) -> None:
        """Our own entries up to m.index are durable (stepped in by
        RawNode.advance()). Only now may they count toward commitment; with
        one voter this is what commits (etcd-io/raft handles it in
        handleAppendResponse, skipping the parts that would send to itself)."""
        if pr.maybe_update(m.index) and self.maybe_commit():
            self._release_pending_read_index_messages()
            self.bcast_append()

    def _handle_transfer_leader(self, m: pb.Message, pr: Progress) -> None:
        if pr.is_learner:
            return
        transferee = m.from_
        if self.lead_transferee != NONE:
            if self.lead_transferee == transferee:
                return  # already under way
            self.abort_leader_transfer()
        if transferee == self.id:
            return
        # The transfer must finish within one election timeout.
        self.election_elapsed = 0
        self.lead_transferee = transferee
        if pr.match == self.log.last_index():
            self.send_timeout_now(transferee)
        else:
            self.send_append(transferee)

    def send_timeout_now(self, to: int) -> None:
        self.send(pb.Message(to=to, type=pb.MsgTimeoutNow))

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def _leader_read_index(self, m: pb.Message) -> None:
        if not self.committed_entry_in_current_term():
            # §6.4 step 1: until an entry of our term commits, our commit
            # index may be behind what an earlier leader committed — or, for
            # a single voter just restarted, behind what it committed itself
            # (a commit-only hard state is written without fsync). Checked
            # before the single-voter shortcut, unlike etcd-io/raft: there a
            # restarted single node answers with its stale commit index.
            self.pending_read_index_messages.append(m)
            return
        if self.config.is_singleton(self.id):
            # We are the only voter: our commit index is the cluster's. (Not
            # "one voter": a removed leader handing over leads a config whose
            # one voter is someone else, who may have moved on.)
            self._respond_read_index(m, self.log.committed)
            return
        self.read_only.add_request(self.log.committed, m)
        self.bcast_heartbeat(m.entries[0].data)

    def _release_pending_read_index_messages(self) -> None:
        if not self.pending_read_index_messages or not self.committed_entry_in_current_term():
            return
        msgs, self.pending_read_index_messages = self.pending_read_index_messages, []
        for m in msgs:
            self._leader_read_index(m)

    def _respond_read_index(self, req: pb.Message, index: int) -> None:
        ctx = req.entries[0].data
        if req.from_ == NONE or req.from_ == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self.send(pb.Message(type=pb.MsgReadIndexResp, to=req.from_, index=index,
                                 entries=[pb.Entry(data=ctx)]))

    # -- candidate ------------------------------------------------------------

    def _step_candidate(self, m: pb.Message) -> None:
        t = m.type
        my_resp = pb.MsgPreVoteResp if self.state is StateType.PRE_CANDIDATE else pb.MsgVoteResp
        if t in (pb.MsgProp, pb.MsgReadIndex):
            raise ProposalDroppedError("no leader")
        if t == pb.MsgApp:
            self.become_follower(m.term, m.from_)
            self._handle_append_entries(m)
        elif t == pb.MsgHeartbeat:
            self.become_follower(m.term, m.from_)
            self._handle_heartbeat(m)
        elif t == pb.MsgSnap:
            self.become_follower(m.term, m.from_)
            self._handle_snapshot(m)
        elif t == my_resp:
            res = self.poll(m.from_, t, not m.reject)
            if res is VoteResult.WON:
                if self.state is StateType.PRE_CANDIDATE:
                    self.campaign(CAMPAIGN_ELECTION)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif res is VoteResult.LOST:
                # A pre-candidate that loses returns to its own term.
                self.become_follower(self.term, NONE)
        # MsgTimeoutNow to a candidate is ignored: it is already campaigning.

    # -- follower -------------------------------------------------------------

    def _step_follower(self, m: pb.Message) -> None:
        t = m.type
        if t == pb.MsgProp:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader")
            m.to = self.lead
            self.send(m)
        elif t == pb.MsgApp:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append_entries(m)
        elif t == pb.MsgHeartbeat:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_heartbeat(m)
        elif t == pb.MsgSnap:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t == pb.MsgTransferLeader:
            if self.lead == NONE:
                return
            m.to = self.lead
            self.send(m)
        elif t == pb.MsgTimeoutNow:
            # The leader picked us: campaign now, skipping pre-vote and the
            # lease check of the others.
            self.hup(transfer=True)
        elif t == pb.MsgReadIndex:
            if self.lead == NONE:
                raise ProposalDroppedError("no leader for read index")
            m.to = self.lead
            self.send(m)
        elif t == pb.MsgReadIndexResp:
            if len(m.entries) != 1:
                return
            self.read_states.append(ReadState(m.index, m.entries[0].data))

    def _handle_append_entries(self, m: pb.Message) -> None:
        if m.index < self.log.committed:
            # Everything up to our commit index is settled; say so.
            self.send(pb.Message(to=m.from_, type=pb.MsgAppResp, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.send(pb.Message(to=m.from_, type=pb.MsgAppResp, index=last_new))
            return
        # Consistency check failed. Hint where our logs may agree: the last
        # index <= min(m.index, our last) whose term <= m.log_term. The leader
        # then skips every entry it has with a higher term in one step.
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term)
        self.send(pb.Message(to=m.from_, type=pb.MsgAppResp, index=m.index, reject=True,
                             reject_hint=hint_index, log_term=hint_term))

    def _handle_heartbeat(self, m: pb.Message) -> None:
        self.log.commit_to(m.commit)
        self.send(pb.Message(to=m.from_, type=pb.MsgHeartbeatResp, context=m.context))

    def _handle_snapshot(self, m: pb.Message) -> None:
        if self.restore(m.snapshot):
            self.send(pb.Message(to=m.from_, type=pb.MsgAppResp, index=self.log.last_index()))
        else:
            self.send(pb.Message(to=m.from_, type=pb.MsgAppResp, index=self.log.committed))

    def restore(self, snap: pb.Snapshot) -> bool:
        """Install a leader's snapshot; False if it brings nothing new."""
        md = snap.metadata
        if md.index <= self.log.committed:
            return False
        if self.state is not StateType.FOLLOWER:
            # Only a follower receives snapshots; be defensive like etcd.
            self.become_follower(self.term + 1, NONE)
            return False
        cs = md.conf_state
        # The snapshot's config may not include us yet: a member added after
        # the leader's last snapshot gets that snapshot, then the entry that
        # added it. Until then it is in no config and cannot campaign, which
        # is harmless; refusing would leave it stuck (the leader has nothing
        # else to send it).
        if self.log.match_term(md.index, md.term):
            # We already have the entries up to it: just move commit.
            self.log.commit_to(md.index)
            return False
        self.log.restore(snap)
        self.apply_conf_state(cs)
        return True

    # -- membership -------------------------------------------------------------

    def apply_conf_state(self, cs: pb.ConfState) -> None:
        """Set the membership to exactly `cs` (from a snapshot or at start),
        joint or not."""
        self._switch_to_config(JointConfig.from_conf_state(cs), set())

    def apply_conf_change(self, cc: pb.ConfChange | pb.ConfChangeV2) -> pb.ConfState:
        """A committed conf change (v1 or v2) is applied by the host: the
        membership changes now, not when the entry was appended (§4.1
        applies changes on append; we follow etcd-io/raft, which applies
        them when committed and applied, with at most one pending at a
        time). Raises ConfChangeError, changing nothing, for a change this
        config cannot take; a leader never proposes one (see
        conf_change_refusal), so the host logs it and skips it, the same on
        every member."""
        cfg, fresh = confchange.apply_change(self.config, cc)
        self._switch_to_config(cfg, fresh)
        if self.state is StateType.LEADER:
            if self.maybe_commit():
                # The quorum may have changed: tell the voters, so they learn
                # that this change is committed too.
                self.bcast_append()
            if self.id not in self.voters:
                # Removed, or demoted to learner when a joint config was left.
                self._hand_over_leadership()
        return self.conf_state()

    def conf_change_refusal(self, cc: pb.ConfChange | pb.ConfChangeV2) -> str | None:
        """Why this leader would not propose `cc` now (it would append a
        no-op in its place), or None. The checks of etcd-io/raft's stepLeader
        (pending change, already joint, leaving a non-joint config), then the
        change itself against the current config: no conf change is pending,
        so that is the config it will be applied to."""
        return self._conf_change_refusal(cc, self.pending_conf_index)

    def _conf_change_refusal(self, cc, pending: int) -> str | None:
        if pending > self.log.applied:
            return f"possible unapplied conf change at index {pending} (applied to {self.log.applied})"
        v2 = confchange.as_v2(cc)
        wants_leave = not v2.changes
        if self.config.joint and not wants_leave:
            return "must transition out of joint config first"
        if not self.config.joint and wants_leave:
            return "not in joint state; refusing empty conf change"
        try:
            confchange.apply_change(self.config, v2)
        except ConfChangeError as e:
            return str(e)
        return None

    def _refuse_conf_change_entry(self, e: pb.Entry, pending: int) -> str | None:
        try:
            cc = confchange.decode(e)
        except ConfChangeError as err:
            return str(err)
        return self._conf_change_refusal(cc, pending)

    def maybe_auto_leave(self) -> None:
        """A leader in a joint config marked auto_leave proposes leaving it
        (an empty ConfChangeV2) once the change that entered it is applied
        here (etcd-io/raft appliedTo). Called after every advance and every
        heartbeat tick: a refusal (a leadership transfer under way) is
        retried; a new leader does the same once it applied its log."""
        if (self.state is not StateType.LEADER or not self.config.auto_leave
                or self.pending_conf_index > self.log.applied or self.id not in self.prs):
            return
        try:
            self.step(pb.Message(type=pb.MsgProp, from_=self.id, entries=[
                pb.Entry(type=pb.EntryConfChangeV2, data=b"")]))
        except ProposalDroppedError:
            pass

    def _switch_to_config(self, cfg: JointConfig, fresh: set[int]) -> None:
        """Make the progress map follow `cfg`: keep the progress of members
        still tracked (a voter demoted or promoted keeps what it holds), make
        one for new members (and for `fresh` ids, removed and added again in
        one change), drop the rest."""
        last = self.log.last_index()
        new: dict[int, Progress] = {}
        for i in sorted(cfg.tracked()):
            learner = i in cfg.learners
            pr = self.prs.get(i)
            if pr is None or i in fresh:
                pr = self._new_progress(last + 1, learner)
                if i == self.id:
                    pr.match = last
                # A new member counts as active, or check-quorum could depose
                # the leader before it has had a chance to answer.
                pr.recent_active = True
            pr.is_learner = learner
            new[i] = pr
        self.prs = new
        self.config = cfg
        self._config_changed()
        if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
            self.abort_leader_transfer()

    def _hand_over_leadership(self) -> None:
        """We lead a configuration we are no longer a voter of (we were
        removed). Stepping down at once (our old behaviour) can leave the rest
        unable to elect anyone: from {1, 2}, leader 1 removes itself; 2 may not
        have learned that the change is committed, so it still needs 1's vote
        — which 1 refuses when its log is longer (entries proposed after the
        removal). Instead we keep replicating, without counting ourselves,
        and hand leadership to the most caught-up voter with MsgTimeoutNow,
        as a leader transfer does (thesis §3.10, §4.2.2: a removed leader
        manages the cluster until C_new is committed; etcd-io/raft leaves a
        removed leader in place until its host stops it). Retried every
        election timeout until someone takes over."""
        voters = [v for v in self.voters if v in self.prs]
        if not voters:
            self.become_follower(self.term, NONE)
            return
        to = max(voters, key=lambda v: (self.prs[v].match, -v))
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.prs[to].match == self.log.last_index():
            self.send_timeout_now(to)
        else:
            self.send_append(to)

    def _config_changed(self) -> None:
        self.voters = tuple(sorted(self.config.voters()))
        self.learners = tuple(sorted(self.config.learners))
        self.is_learner = self.id in self.config.learners

    def conf_state(self) -> pb.ConfState:
        return self.config.conf_state()
