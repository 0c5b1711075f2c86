"""Majority arithmetic over the voters of one configuration.

Learners never appear here: they neither vote nor count toward commitment.
"""
from __future__ import annotations

import enum


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def quorum_size(n_voters: int) -> int:
    return n_voters // 2 + 1


def committed_index(voters, match_of) -> int:
    """The largest index that a majority of voters hold: sort the voters'
    match indexes descending and take the quorum-th one."""
    if not voters:
        return 0
    matches = sorted((match_of(v) for v in voters), reverse=True)
    return matches[quorum_size(len(matches)) - 1]


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
