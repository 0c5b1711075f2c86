"""Joint consensus (thesis §4.3): the joint quorum as properties (a joint
majority is exactly a majority of C_new and one of C_old), the
configuration changes with etcd-io/raft's refusals, and the core's use of
both (commit, votes, ReadIndex, check-quorum, auto-leave, demotion, v1)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.proto import raft_pb2 as pb
from engine.raft import ConfChangeError, StateType
from engine.raft import quorum
from engine.raft.confchange import JointConfig, apply_change, parse_changes, simple
from engine.raft.quorum import VoteResult
from engine.sim.cluster import SimCluster

# -- the joint quorum, as properties ----------------------------------------------------

ids = st.frozensets(st.integers(1, 9), max_size=7)


def _majority_holds(voters, holders) -> bool:
    return not voters or len(voters & holders) >= len(voters) // 2 + 1


@settings(max_examples=150, deadline=None)
@given(incoming=ids.filter(bool), outgoing=ids, match=st.dictionaries(st.integers(1, 9), st.integers(0, 20)))
def test_joint_committed_index_is_what_both_majorities_hold(incoming, outgoing, match):
    got = quorum.joint_committed_index(incoming, outgoing, lambda v: match.get(v, 0))
    holders = lambda i: {v for v in incoming | outgoing if match.get(v, 0) >= i}  # noqa: E731
    # Held by a majority of each side...
    assert _majority_holds(incoming, holders(got)) and _majority_holds(outgoing, holders(got))
    # ...and the largest such index.
    assert not (_majority_holds(incoming, holders(got + 1)) and _majority_holds(outgoing, holders(got + 1)))
    if not outgoing:
        assert got == quorum.committed_index(incoming, lambda v: match.get(v, 0))


@settings(max_examples=150, deadline=None)
@given(incoming=ids.filter(bool), outgoing=ids,
       votes=st.dictionaries(st.integers(1, 9), st.booleans()))
def test_joint_vote_is_won_iff_both_majorities_granted(incoming, outgoing, votes):
    got = quorum.joint_vote_result(incoming, outgoing, votes)
    yes = {v for v, ok in votes.items() if ok}
    maybe = yes | {v for v in incoming | outgoing if v not in votes}
    won = _majority_holds(incoming, yes) and _majority_holds(outgoing, yes)
    can_win = _majority_holds(incoming, maybe) and _majority_holds(outgoing, maybe)
    assert (got is VoteResult.WON) == won
    assert (got is VoteResult.LOST) == (not can_win)


def test_the_new_majority_alone_is_not_enough():
    # {1,2,3} -> {3,4,5}: 3, 4, 5 are a majority of C_new but only 3 of C_old.
    match = {1: 0, 2: 0, 3: 7, 4: 7, 5: 7}.get
    assert quorum.committed_index({3, 4, 5}, match) == 7
    assert quorum.joint_committed_index({3, 4, 5}, {1, 2, 3}, match) == 0
    assert quorum.joint_vote_result({3, 4, 5}, {1, 2, 3}, {3: True, 4: True, 5: True}) is VoteResult.PENDING
    assert quorum.joint_vote_result({3, 4, 5}, {1, 2, 3}, {1: False, 2: False}) is VoteResult.LOST


# -- the changes (etcd-io/raft confchange/testdata, checked here by hand) -----------------

def _cfg(voters, outgoing=(), learners=(), learners_next=(), auto=False) -> JointConfig:
    return JointConfig(frozenset(voters), frozenset(outgoing), frozenset(learners),
                       frozenset(learners_next), auto)


@pytest.mark.parametrize("start, change, want", [
    (_cfg({1}), "v2 v3", "voters=(1 2 3)&&(1) autoleave"),
    (_cfg({1, 2, 3}), "r1 v4 explicit", "voters=(2 3 4)&&(1 2 3)"),
    (_cfg({1, 2, 3}), "l1 implicit", "voters=(2 3)&&(1 2 3) learners_next=(1) autoleave"),
    (_cfg({1, 2, 3}, learners={4}), "v4 r1", "voters=(2 3 4)&&(1 2 3) autoleave"),
    (_cfg({1}), "explicit", "voters=(1)&&(1)"),
    (_cfg({1, 2}), "l1", "voters=(2) learners=(1)"),                  # a simple demotion
    (_cfg({1, 2}, learners={3}), "v3", "voters=(1 2 3)"),              # a simple promotion
    (_cfg({2, 3, 4}, outgoing={1, 2, 3}, learners_next={1}, auto=True), "leave-joint",
     "voters=(2 3 4) learners=(1)"),
    (_cfg({2, 3, 4}, outgoing={1, 2, 3}), "leave-joint", "voters=(2 3 4)"),
])
def test_changes(start, change, want):
    cfg, _ = apply_change(start, parse_changes(change))
    assert str(cfg) == want


@pytest.mark.parametrize("start, change, error", [
    (_cfg({1, 2}, outgoing={1}), "v3 v4", "config is already joint"),
    (_cfg({1, 2}), "leave-joint", "can't leave a non-joint config"),
    (_cfg(set()), "explicit", "can't make a zero-voter config joint"),
    (_cfg({1}), "r1", "removed all voters"),
    (_cfg({1, 2}, outgoing={1}), "l2", "can't apply simple config change in joint config"),
])
def test_refusals(start, change, error):
    with pytest.raises(ConfChangeError, match=error):
        apply_change(start, parse_changes(change))


def test_simple_change_of_two_voters_is_refused():
    # A v2 with Auto and two changes goes joint; the simple path itself
    # refuses two voter changes (two majorities may not overlap).
    with pytest.raises(ConfChangeError, match="more than one voter changed"):
        simple(_cfg({1, 2, 3}), parse_changes("r1 v4").changes)


def test_v1_change_is_a_simple_change_and_node_zero_changes_nothing():
    cfg = _cfg({1, 2, 3})
    got, _ = apply_change(cfg, pb.ConfChange(type=pb.ConfChangeRemoveNode, node_id=3))
    assert str(got) == "voters=(1 2)"
    assert apply_change(cfg, pb.ConfChange())[0] == cfg
    # Context never makes an empty change mean anything else.
    assert str(apply_change(_cfg({2}, outgoing={1}), pb.ConfChangeV2(context=b"x"))[0]) == "voters=(2)"


def test_conf_state_round_trip():
    cfg = _cfg({2, 3}, outgoing={1, 2, 3}, learners={4}, learners_next={1}, auto=True)
    assert JointConfig.from_conf_state(cfg.conf_state()) == cfg
    with pytest.raises(ConfChangeError):
        JointConfig.from_conf_state(pb.ConfState(voters=[1], learners=[1]))


# -- the core ---------------------------------------------------------------------------

def _leader_of(c: SimCluster, nid: int = 1):
    c.nodes[nid].rn.campaign()
    c.process(c.nodes[nid])
    c.deliver_all()
    assert c.nodes[nid].raft.state is StateType.LEADER
    return c.nodes[nid]


def _settle(c: SimCluster, rounds: int = 5) -> None:
    for _ in range(rounds):
        c.tick_all()
        c.deliver_all()


def _propose_v2(c: SimCluster, nid: int, text: str) -> None:
    n = c.nodes[nid]
    n.rn.propose_conf_change(parse_changes(text))
    c.process(n)


def test_enter_and_auto_leave_through_the_cluster():
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    c.add_empty_node(4)
    _propose_v2(c, 1, "r3 v4")
    c.deliver_all()
    # Applied everywhere: the joint config, then at once the leader's leave.
    _settle(c)
    for n in c.live():
        if n.id == 3:
            continue  # removed: it never hears of the leave
        assert str(n.raft.config) == "voters=(1 2 4)", n.id
    ents = lead.raft.log.all_entries()
    assert [e.type for e in ents[-2:]] == [pb.EntryConfChangeV2, pb.EntryConfChangeV2]
    assert ents[-1].data == b""  # the auto-leave
    st = lead.rn.status()
    assert st.voters == (1, 2, 4) and not st.joint


def test_explicit_joint_stays_until_left_and_refuses_other_changes():
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    c.add_empty_node(4)
    _propose_v2(c, 1, "r3 v4 explicit")
    _settle(c)
    st = lead.rn.status()
    assert st.voters == (1, 2, 4) and st.voters_outgoing == (1, 2, 3) and not st.auto_leave
    cs = lead.raft.conf_state()
    assert list(cs.voters_outgoing) == [1, 2, 3]
    assert lead.rn.conf_change_refusal(pb.ConfChange(type=pb.ConfChangeAddNode, node_id=5)) == \
        "must transition out of joint config first"
    # Proposed anyway: a no-op takes its place (etcd-io/raft).
    last = lead.raft.log.last_index()
    lead.rn.propose_conf_change(pb.ConfChange(type=pb.ConfChangeAddNode, node_id=5))
    assert lead.raft.log.all_entries()[-1].type == pb.EntryNormal
    assert lead.raft.log.last_index() == last + 1
    _settle(c)
    assert lead.rn.conf_change_refusal(pb.ConfChangeV2()) is None
    _propose_v2(c, 1, "leave-joint")
    _settle(c)
    assert str(lead.raft.config) == "voters=(1 2 4)"
    assert lead.rn.conf_change_refusal(pb.ConfChangeV2()) == \
        "not in joint state; refusing empty conf change"


def test_joint_commit_needs_the_old_majority_too():
    # {1,2,3} -> {1,4,5} explicit. With 2 and 3 cut off, 1, 4, 5 are a
    # majority of C_new but not of C_old: nothing commits until 2 answers.
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    for i in (4, 5):
        c.add_empty_node(i)
    _propose_v2(c, 1, "r2 r3 v4 v5 explicit")
    _settle(c)
    assert lead.raft.config.joint
    c.net.isolate(2, list(c.nodes))
    c.net.isolate(3, list(c.nodes))
    c.propose(1, b"x")
    _settle(c, 2)
    x = lead.raft.log.last_index()
    assert lead.raft.log.committed < x
    c.net.heal()
    _settle(c)
    assert lead.raft.log.committed >= x


def test_joint_election_needs_both_majorities():
    c = SimCluster([1, 2, 3], pre_vote=False)
    lead = _leader_of(c)
    for i in (4, 5):
        c.add_empty_node(i)
    _propose_v2(c, 1, "r2 r3 v4 v5 explicit")
    _settle(c)
    n4 = c.nodes[4]
    assert n4.raft.config.joint
    # 4 campaigns; only 5 (C_new) and 1 would answer... cut 1, 2, 3 off: C_old has no majority.
    for i in (1, 2, 3):
        c.net.isolate(i, list(c.nodes))
    for _ in range(40):
        c.tick(4)
        c.tick(5)
        c.deliver_all()
    assert n4.raft.state is not StateType.LEADER and c.nodes[5].raft.state is not StateType.LEADER
    assert n4.raft.term > lead.raft.term  # it did campaign, with 5's vote: not enough
    # With 2 and 3 back (C_old has a majority without 1) someone else wins.
    c.net.heal()
    c.net.isolate(1, list(c.nodes))
    for _ in range(60):
        c.tick_all()
        c.deliver_all()
        if c.leader() is not None and c.leader().id != 1:
            break
    assert c.leader().id in (2, 3, 4, 5)


def test_demote_voter_through_learners_next():
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    _propose_v2(c, 1, "l3 explicit")
    _settle(c)
    assert str(lead.raft.config) == "voters=(1 2)&&(1 2 3) learners_next=(3)"
    assert not lead.raft.prs[3].is_learner  # still a voter of C_old
    match = lead.raft.prs[3].match
    _propose_v2(c, 1, "leave-joint")
    _settle(c)
    assert str(lead.raft.config) == "voters=(1 2) learners=(3)"
    assert lead.raft.prs[3].is_learner and lead.raft.prs[3].match >= match  # progress kept
    assert c.nodes[3].raft.is_learner


def test_removed_leader_hands_over_after_leaving_joint():
    c = SimCluster([1, 2, 3])
    _leader_of(c)
    c.add_empty_node(4)
    _propose_v2(c, 1, "r1 v4")
    _settle(c, 30)
    leaders = [n.id for n in c.leaders()]
    assert leaders and 1 not in leaders
    new = c.leader()
    assert str(new.raft.config) == "voters=(2 3 4)"


def test_refusal_while_a_change_is_pending_and_v1_unchanged():
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    c.add_empty_node(4)
    lead.rn.propose_conf_change(pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=4))
    assert lead.rn.conf_change_refusal(pb.ConfChangeV2()).startswith("possible unapplied conf change")
    c.process(lead)
    _settle(c)
    assert str(lead.raft.config) == "voters=(1 2 3) learners=(4)"
    assert lead.raft.conf_state() == pb.ConfState(voters=[1, 2, 3], learners=[4])


def test_apply_of_an_impossible_change_raises_and_changes_nothing():
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    before = lead.raft.config
    with pytest.raises(ConfChangeError):
        lead.rn.apply_conf_change(pb.ConfChangeV2())  # leave, not joint
    assert lead.raft.config == before


def test_proposal_of_undecodable_conf_change_becomes_a_no_op():
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    lead.raft.step(pb.Message(type=pb.MsgProp, from_=2, entries=[
        pb.Entry(type=pb.EntryConfChangeV2, data=b"\xff\xff")]))
    assert lead.raft.log.all_entries()[-1].type == pb.EntryNormal
    assert c.nodes[2].rn.conf_change_refusal(pb.ConfChangeV2()) is None  # a follower: its leader decides


def _joint_145(c: SimCluster):
    """{1,2,3} -> {1,4,5} explicit, applied everywhere; 1 leads."""
    lead = _leader_of(c)
    for i in (4, 5):
        c.add_empty_node(i)
    _propose_v2(c, 1, "r2 r3 v4 v5 explicit")
    _settle(c)
    assert str(lead.raft.config) == "voters=(1 4 5)&&(1 2 3)"
    return lead


def test_read_index_needs_the_old_majority_too():
    c = SimCluster([1, 2, 3])
    lead = _joint_145(c)
    c.net.isolate(2, list(c.nodes))
    c.net.isolate(3, list(c.nodes))
    lead.rn.read_index(b"r1")
    c.process(lead)
    _settle(c, 2)
    assert lead.read_results == []  # 4 and 5 answered, but only 1 of C_old
    c.net.heal()
    _settle(c, 2)
    assert [ctx for ctx, _ in lead.read_results] == [b"r1"]


def test_check_quorum_counts_both_configs():
    c = SimCluster([1, 2, 3])
    lead = _joint_145(c)
    c.net.isolate(2, list(c.nodes))
    c.net.isolate(3, list(c.nodes))
    for _ in range(3 * 10):
        c.tick(1)
        c.tick(4)
        c.tick(5)
        c.deliver_all()
    # C_new is all there; C_old is not: the leader steps down.
    assert lead.raft.state is not StateType.LEADER


def test_demoted_leader_leads_the_joint_config_then_hands_over():
    c = SimCluster([1, 2, 3])
    lead = _leader_of(c)
    _propose_v2(c, 1, "l1")  # one change, Auto: a simple demotion
    _settle(c, 30)
    assert str(lead.raft.config) == "voters=(2 3) learners=(1)"
    assert lead.raft.is_learner and lead.raft.state is not StateType.LEADER
    assert c.leader() is not None and c.leader().id in (2, 3)
    c2 = SimCluster([1, 2, 3])
    lead = _leader_of(c2)
    _propose_v2(c2, 1, "l1 explicit")
    _settle(c2)
    assert lead.raft.state is StateType.LEADER  # a voter of C_old, in learners_next
    assert str(lead.raft.config) == "voters=(2 3)&&(1 2 3) learners_next=(1)"
    _propose_v2(c2, 1, "leave-joint")
    _settle(c2, 30)
    assert lead.raft.is_learner and c2.leader().id in (2, 3)
