"""Rates from consecutive polls: writes/s, commit-index advance/s, apply lag.

etcd has no rate counters in its v3 API, so the console derives them: the
store revision advances once per write transaction, the commit index once per
raft entry.
"""
from __future__ import annotations

from .model import ClusterState, RateSample

RATE_HISTORY = 120   # samples kept for the sparklines


def sample(old: ClusterState, new: ClusterState) -> RateSample | None:
    dt = new.polled_at - old.polled_at
    if not old.polled_at or dt <= 0:
        return None
    writes = max(0, new.revision - old.revision) / dt if old.revision else 0.0
    before = {m.id: m for m in old.members}
    commit, lag = [], []
    for m in new.members:
        prev = before.get(m.id)
        up = m.health == "up" and prev is not None and prev.health == "up"
        commit.append((m.label, max(0, m.commit_index - prev.commit_index) / dt if up else 0.0))
        lag.append((m.label, max(0, m.commit_index - m.applied_index) if m.health == "up" else 0))
    return RateSample(new.polled_at, writes, tuple(commit), tuple(lag))


def append(history: tuple[RateSample, ...], s: RateSample | None) -> tuple[RateSample, ...]:
    if s is None:
        return history
    return (history + (s,))[-RATE_HISTORY:]
