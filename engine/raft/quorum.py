"""Majority arithmetic over the voters of a configuration, simple or joint.

Learners never appear here: they neither vote nor count toward commitment.

A joint configuration (thesis §4.3) is two voter sets, C_new (incoming) and
C_old (outgoing): a decision needs a majority of each, so neither the old nor
the new members alone can commit, elect or confirm a read. Outside a joint
configuration the outgoing set is empty, and an empty set agrees to
everything (it is the identity of the "and"), which makes every joint
function below reduce to the simple one (etcd-io/raft quorum/joint.go).
"""
from __future__ import annotations

import enum


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def quorum_size(n_voters: int) -> int:
    return n_voters // 2 + 1


# What an empty voter set "holds": everything, so that min() with it is the
# other set's answer. Never returned by joint_committed_index.
_EVERYTHING = float("inf")


def committed_index(voters, match_of) -> int:
    """The largest index that a majority of voters hold: sort the voters'
    match indexes descending and take the quorum-th one. 0 for no voters."""
    if not voters:
        return 0
    matches = sorted((match_of(v) for v in voters), reverse=True)
    return matches[quorum_size(len(matches)) - 1]


def joint_committed_index(incoming, outgoing, match_of) -> int:
    """The largest index held by a majority of incoming AND a majority of
    outgoing: the smaller of the two majorities' indexes. An empty side
    does not constrain; with both empty nothing is committed (0)."""
    a = committed_index(incoming, match_of) if incoming else _EVERYTHING
    b = committed_index(outgoing, match_of) if outgoing else _EVERYTHING
    m = min(a, b)
    return 0 if m == _EVERYTHING else m


def vote_result(voters, votes: dict[int, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority can no longer grant."""
    if not voters:
        return VoteResult.WON  # an empty config wins trivially, as in etcd
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            granted += 1
        elif got is False:
            rejected += 1
    q = quorum_size(len(voters))
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected < q:
        return VoteResult.LOST
    return VoteResult.PENDING


def joint_vote_result(incoming, outgoing, votes: dict[int, bool]) -> VoteResult:
    """WON when both sides won, LOST as soon as either side lost, else
    PENDING. A vote counts on every side its voter belongs to."""
    a = vote_result(incoming, votes)
    b = vote_result(outgoing, votes)
    if a is b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING
