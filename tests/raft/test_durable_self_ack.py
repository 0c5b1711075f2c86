"""The leader's own vote and own entries count toward a quorum only once the
host made them durable: RawNode.advance() steps them back in (etcd-io/raft's
msgsAfterAppend; thesis §3.8). Our host sends a leader's messages before its
own fsync (§10.2.1), so nothing a leader sends may rest on its own unsynced
state — in particular no commit index that only its own copy makes a quorum.
"""
from __future__ import annotations

import pytest

from engine.proto import raft_pb2 as pb
from engine.raft import Config, RawNode, StateType
from tests.raft.helpers import storage_with


def node(voters=(1,), learners=(), **kw) -> RawNode:
    return RawNode(Config(id=1, storage=storage_with(voters, [], learners=learners), **kw))


def persist(rn: RawNode, rd) -> None:
    """The host's step 1 (what engine/server does with the WAL), then advance."""
    s = rn.raft.log.storage
    s.append(rd.entries)
    if rd.hard_state is not None:
        s.set_hard_state(rd.hard_state)
    rn.advance(rd)


def test_single_voter_counts_its_vote_only_after_the_vote_is_durable():
    rn = node()
    rn.campaign()
    rd = rn.ready()
    # Pre-vote was won at once (it changes no durable state); the real vote
    # rides in this Ready's hard state and is not counted yet.
    assert rn.raft.state is StateType.CANDIDATE
    assert (rd.hard_state.term, rd.hard_state.vote, rd.must_sync) == (1, 1, True)
    persist(rn, rd)
    assert rn.raft.state is StateType.LEADER and rn.raft.term == 1


def test_single_voter_commits_its_entry_in_the_ready_after_the_fsync():
    rn = node()
    rn.campaign()
    persist(rn, rn.ready())           # the vote
    rd = rn.ready()                   # the leader's empty entry
    assert [e.index for e in rd.entries] == [1] and not rd.committed_entries
    assert rn.raft.log.committed == 0
    persist(rn, rd)
    rn.propose(b"x")
    rd = rn.ready()
    # The empty entry committed at advance; x is in this Ready, not committed.
    assert [e.data for e in rd.entries] == [b"x"] and rd.must_sync
    assert rd.hard_state.commit == 1
    assert [e.index for e in rd.committed_entries] == [1]
    persist(rn, rd)
    rd = rn.ready()
    # One fsync per proposal still: the commit-only Ready needs none.
    assert not rd.entries and not rd.must_sync
    assert rd.hard_state.commit == 2 and [e.data for e in rd.committed_entries] == [b"x"]
    persist(rn, rd)
    assert not rn.has_ready()


def _leader_with_learner(**kw) -> RawNode:
    rn = node(voters=(1,), learners=(2,), **kw)
    rn.campaign()
    while rn.has_ready():
        persist(rn, rn.ready())
    assert rn.raft.state is StateType.LEADER
    rn.raft.prs[2].become_replicate()
    rn.raft.prs[2].match = rn.raft.log.last_index()
    rn.raft.prs[2].next = rn.raft.log.last_index() + 1
    return rn


def test_leader_sends_no_commit_that_rests_on_its_unsynced_entry():
    # The case: voter 1 + learner 2. The host sends the leader's
    # messages before its fsync; had the leader counted its own copy of x at
    # once, the MsgApp carrying x would also carry commit=x's index, the
    # learner would apply x, and a crash before the fsync would erase it.
    rn = _leader_with_learner()
    rn.propose(b"x")
    rd = rn.ready()
    (x,) = rd.entries
    apps = [m for m in rd.messages if m.type == pb.MsgApp and m.to == 2]
    assert apps and all(m.commit < x.index for m in apps)
    persist(rn, rd)
    rd = rn.ready()
    assert any(m.type == pb.MsgApp and m.to == 2 and m.commit == x.index for m in rd.messages)


def test_without_the_deferral_the_unsynced_commit_leaks():
    # The mutation the simulator must catch (tests/raft/test_mutations.py):
    # the old behaviour, shown here plainly.
    rn = _leader_with_learner(durable_self_ack=False)
    rn.propose(b"x")
    rd = rn.ready()
    (x,) = rd.entries
    assert any(m.type == pb.MsgApp and m.to == 2 and m.commit == x.index for m in rd.messages)


def test_three_voters_leader_copy_counts_only_after_advance():
    rn = node(voters=(1, 2, 3), pre_vote=False)
    rn.campaign()
    persist(rn, rn.ready())
    rn.step(pb.Message(type=pb.MsgVoteResp, from_=2, to=1, term=1))
    assert rn.raft.state is StateType.LEADER
    rd = rn.ready()                   # the empty entry at 1, not yet durable here
    rn.step(pb.Message(type=pb.MsgAppResp, from_=2, to=1, term=1, index=1))
    # 2 holds index 1 durably, the leader not yet: one voter of three.
    assert rn.raft.log.committed == 0
    persist(rn, rd)
    assert rn.raft.log.committed == 1


def test_stale_self_ack_after_stepping_down_is_ignored():
    rn = node(voters=(1, 2, 3), pre_vote=False)
    rn.campaign()
    persist(rn, rn.ready())
    rn.step(pb.Message(type=pb.MsgVoteResp, from_=2, to=1, term=1))
    rd = rn.ready()                   # self-ack of index 1, term 1, pending
    # A higher term arrives before the host advances.
    rn.step(pb.Message(type=pb.MsgApp, from_=3, to=1, term=2, index=0, log_term=0))
    persist(rn, rd)
    r = rn.raft
    assert r.state is StateType.FOLLOWER and r.term == 2 and r.log.committed == 0


def test_restarted_single_voter_reads_only_after_its_term_commits():
    # A commit-only hard state is written without fsync, so a single voter
    # restarts with commit=1 although it committed (and answered) 1..3. Its
    # read index must not be that stale commit index: it waits until the
    # empty entry of its new term commits, which commits 2 and 3 too.
    s = storage_with((1,), [1, 1, 1])
    s.set_hard_state(pb.HardState(term=1, vote=1, commit=1))
    rn = RawNode(Config(id=1, storage=s))
    rn.campaign()
    persist(rn, rn.ready())
    assert rn.raft.state is StateType.LEADER
    rn.read_index(b"r1")
    assert not rn.raft.read_states
    reads = []
    while rn.has_ready():
        rd = rn.ready()
        reads += rd.read_states
        persist(rn, rd)
    assert [(r.index, r.request_ctx) for r in reads] == [(4, b"r1")]


def test_a_peer_cannot_send_our_own_acknowledgement():
    rn = node()
    rn.campaign()
    persist(rn, rn.ready())
    rd = rn.ready()                   # the empty entry, not yet durable
    with pytest.raises(ValueError):
        rn.step(pb.Message(type=pb.MsgAppResp, from_=1, to=1, term=1, index=1))
    assert rn.raft.log.committed == 0
    persist(rn, rd)
    assert rn.raft.log.committed == 1
