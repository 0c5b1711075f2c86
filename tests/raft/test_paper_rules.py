"""One test per rule of the Raft paper's §5 (Figure 2), against the pure core."""
from __future__ import annotations

import random

import pytest

from engine.proto import raft_pb2 as pb
from engine.raft import Config, ProposalDroppedError, Raft, RawNode, StateType
from engine.raft.describe import describe_message
from tests.raft.helpers import cluster_from, elect, storage_with


def raft_with(nid=1, voters=(1, 2, 3), log_terms=(), term=0, **kw) -> Raft:
    return Raft(Config(id=nid, storage=storage_with(voters, list(log_terms), term), **kw))


def persisted(r: Raft) -> Raft:
    """What RawNode.advance() does once the host made a Ready durable: step in
    the core's own acknowledgements (self-vote, own appends)."""
    msgs, r.msgs_after_append = r.msgs_after_append, []
    for m in msgs:
        r.step(m)
    return r


def take(r: Raft) -> list[str]:
    out = [describe_message(m) for m in r.msgs]
    r.msgs = []
    return out


# §5.1 Current terms are exchanged whenever servers communicate; a server that
# sees a larger term adopts it and reverts to follower.
def test_higher_term_turns_leader_into_follower():
    r = raft_with(pre_vote=False)
    r.become_candidate(); r.become_leader()
    assert r.state is StateType.LEADER and r.term == 1
    r.step(pb.Message(type=pb.MsgApp, from_=2, to=1, term=5, index=0, log_term=0))
    assert (r.state, r.term, r.lead) == (StateType.FOLLOWER, 5, 2)


# §5.1 A request with a stale term is rejected (answered with our term).
def test_stale_term_append_is_answered_with_current_term():
    r = raft_with(term=3)
    r.step(pb.Message(type=pb.MsgApp, from_=2, to=1, term=2, index=0, log_term=0))
    assert take(r) == ["1->2 MsgAppResp Term:3 Index:0"]
    assert r.term == 3 and r.lead == 0


# §5.2 A follower that hears nothing for an election timeout campaigns; the
# timeout is randomised in [T, 2T).
def test_election_timeout_is_randomised_in_T_2T():
    seen = set()
    for seed in range(200):
        r = raft_with(election_tick=10, rng=random.Random(seed), pre_vote=False)
        ticks = 0
        while r.state is StateType.FOLLOWER:
            r.tick(); ticks += 1
        seen.add(ticks)
    assert min(seen) >= 10 and max(seen) <= 19 and len(seen) >= 8


# §5.2 A candidate increments its term, votes for itself and asks every voter.
def test_candidate_votes_for_itself_and_requests_votes():
    r = raft_with(log_terms=[1, 1], term=1, pre_vote=False)
    r.step(pb.Message(type=pb.MsgHup))
    assert (r.state, r.term, r.vote) == (StateType.CANDIDATE, 2, 1)
    assert take(r) == ["1->2 MsgVote Term:2 Log:1/2", "1->3 MsgVote Term:2 Log:1/2"]


# §5.2 A candidate that wins a majority becomes leader; one that loses a
# majority returns to follower.
@pytest.mark.parametrize("grants,state", [((True,), StateType.LEADER), ((False, False), StateType.FOLLOWER)])
def test_candidate_wins_or_loses_by_majority(grants, state):
    r = raft_with(pre_vote=False)
    r.step(pb.Message(type=pb.MsgHup))
    persisted(r)
    for peer, g in zip((2, 3), grants):
        r.step(pb.Message(type=pb.MsgVoteResp, from_=peer, to=1, term=r.term, reject=not g))
    assert r.state is state


# §5.2 Each server votes for at most one candidate in a term, and the vote is
# in the hard state of the same Ready that carries the grant (so it is
# persisted before the grant leaves).
def test_one_vote_per_term_persisted_with_the_grant():
    rn = RawNode(Config(id=1, storage=storage_with((1, 2, 3), [])))
    rn.step(pb.Message(type=pb.MsgVote, from_=2, to=1, term=1, index=0, log_term=0))
    rd = rn.ready()
    assert rd.hard_state.vote == 2 and rd.must_sync
    assert [describe_message(m) for m in rd.messages] == ["1->2 MsgVoteResp Term:1"]
    rn.advance(rd)
    rn.step(pb.Message(type=pb.MsgVote, from_=3, to=1, term=1, index=0, log_term=0))
    rd = rn.ready()
    assert [describe_message(m) for m in rd.messages] == ["1->3 MsgVoteResp Term:1 Rejected (Hint: 0/0)"]


# §5.4.1 Election restriction: no vote for a candidate whose log is less up to date.
@pytest.mark.parametrize("cand_last_term,cand_last_index,granted", [
    (1, 5, False),   # lower last term, longer log: refused
    (2, 1, False),   # same last term, shorter log: refused
    (2, 2, True),    # equal: granted
    (3, 1, True),    # higher last term: granted
])
def test_vote_only_for_up_to_date_candidate(cand_last_term, cand_last_index, granted):
    r = raft_with(log_terms=[1, 2], term=2)
    r.step(pb.Message(type=pb.MsgVote, from_=2, to=1, term=3, index=cand_last_index,
                      log_term=cand_last_term))
    (m,) = r.msgs
    assert m.type == pb.MsgVoteResp and m.reject == (not granted)


# §5.3 The consistency check: a follower refuses entries whose predecessor it
# does not hold, and replaces a conflicting suffix otherwise.
def test_append_consistency_check_and_conflict_truncation():
    r = raft_with(log_terms=[1, 1, 2], term=3)
    r.step(pb.Message(type=pb.MsgApp, from_=2, to=1, term=3, index=3, log_term=3, commit=0))
    (m,) = r.msgs
    assert m.reject and m.reject_hint == 3 and m.log_term == 2
    r.msgs = []
    r.step(pb.Message(type=pb.MsgApp, from_=2, to=1, term=3, index=2, log_term=1, commit=2,
                      entries=[pb.Entry(index=3, term=3), pb.Entry(index=4, term=3)]))
    assert [e.term for e in r.log.all_entries()] == [1, 1, 3, 3]
    assert r.log.committed == 2
    assert take(r) == ["1->2 MsgAppResp Term:3 Index:4"]


# §5.3 A duplicated, older append never truncates entries a follower holds.
def test_stale_duplicate_append_does_not_truncate():
    r = raft_with(log_terms=[1, 1, 1, 1], term=1)
    r.step(pb.Message(type=pb.MsgApp, from_=2, to=1, term=1, index=1, log_term=1,
                      entries=[pb.Entry(index=2, term=1)]))
    assert r.log.last_index() == 4


# §5.3 / §5.4.2 A new leader appends an empty entry of its term; an entry is
# committed once the leader has it on a majority.
def test_leader_commits_on_majority():
    c = cluster_from({i: storage_with((1, 2, 3), []) for i in (1, 2, 3)}, pre_vote=False)
    elect(c, 1)
    lead = c.nodes[1]
    assert lead.raft.log.last_index() == 1 and lead.raft.log.committed == 1  # the empty entry
    c.crash(3)
    assert c.propose(1, b"x")
    c.deliver_all()
    assert lead.raft.log.committed == 2  # leader + node 2 is a majority of 3
    c.crash(2)
    c.propose(1, b"y")
    c.deliver_all()
    assert lead.raft.log.committed == 2 and lead.raft.log.last_index() == 3


# §5.4.2 (Figure 8): a leader never commits an entry of an earlier term by
# counting replicas, only together with an entry of its own term.
def test_old_term_entry_not_committed_by_counting():
    # Leader 1 in term 3 holds an entry of term 2 at index 2 that 2 and 3 lack.
    stores = {1: storage_with((1, 2, 3), [1, 2], hard_term=3), 2: storage_with((1, 2, 3), [1], 3),
              3: storage_with((1, 2, 3), [1], 3)}
    c = cluster_from(stores, pre_vote=False)
    r = c.nodes[1].raft
    r.become_candidate(); r.become_leader()  # term 4, empty entry at index 3
    persisted(r)
    r.msgs = []
    # Node 2 acknowledges only up to index 2 (the old-term entry): majority
    # holds index 2, but it is of term 2, so nothing is committed.
    r.prs[2].become_replicate()
    r.step(pb.Message(type=pb.MsgAppResp, from_=2, to=1, term=r.term, index=2))
    assert r.log.committed == 0
    r.step(pb.Message(type=pb.MsgAppResp, from_=2, to=1, term=r.term, index=3))
    assert r.log.committed == 3  # with the term-4 entry, index 2 commits too


# §5.2 Followers and candidates don't take proposals: a follower forwards to
# its leader, a node without a leader refuses.
def test_proposal_forwarded_or_refused():
    r = raft_with()
    with pytest.raises(ProposalDroppedError):
        r.step(pb.Message(type=pb.MsgProp, from_=1, entries=[pb.Entry(data=b"x")]))
    r.become_follower(1, 2)
    r.step(pb.Message(type=pb.MsgProp, from_=1, entries=[pb.Entry(data=b"x")]))
    assert take(r) == ['1->2 MsgProp Term:0 Entries:[0/0 EntryNormal "x"]']


# Learners receive the log but never campaign and never count toward a quorum.
def test_learner_never_campaigns_nor_counts():
    st = storage_with((1, 2), [], learners=(3,))
    learner = Raft(Config(id=3, storage=st))
    for _ in range(100):
        learner.tick()
    assert learner.state is StateType.FOLLOWER and learner.term == 0 and not learner.msgs
    lead = Raft(Config(id=1, storage=storage_with((1, 2), [], learners=(3,)), pre_vote=False))
    lead.become_candidate(); lead.become_leader()
    persisted(lead)
    lead.prs[3].become_replicate()
    lead.step(pb.Message(type=pb.MsgAppResp, from_=3, to=1, term=lead.term, index=1))
    assert lead.log.committed == 0, "a learner's ack counted toward commit"
    lead.step(pb.Message(type=pb.MsgAppResp, from_=2, to=1, term=lead.term, index=1))
    assert lead.log.committed == 1


def test_learner_vote_is_not_counted():
    r = Raft(Config(id=1, storage=storage_with((1, 2, 3), [], learners=(4,)), pre_vote=False))
    r.step(pb.Message(type=pb.MsgHup))
    persisted(r)
    r.step(pb.Message(type=pb.MsgVoteResp, from_=4, to=1, term=r.term))
    assert r.state is StateType.CANDIDATE
    r.step(pb.Message(type=pb.MsgVoteResp, from_=2, to=1, term=r.term))
    assert r.state is StateType.LEADER
