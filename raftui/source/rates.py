"""Rates for the sparklines: writes/s, commit-index advance/s, apply lag.

raftnode counts them itself (Inspect.Rates: per-second rates over its own
window of a few seconds, and the apply lag); the console uses those when
the members serve them (the counters' advance between two answers, so the
sparklines react within a poll). etcd has no rate counters in its v3 API, so there
the console derives them from consecutive polls: the store revision advances
once per write transaction, the commit index once per raft entry.

Latency (WAL fsync p99, backend commit p99, peer round trip p99) comes from
each member's /metrics, raftnode and etcd alike (raftui/source/metrics.py);
`sample()` files it under the member's label.
"""
from __future__ import annotations

import dataclasses

from .metrics import MemberLatency
from .model import ClusterState, RateSample
from .poll import RatesResult

RATE_HISTORY = 120   # samples kept for the sparklines
WRITES = ("put", "delete", "txn")


def sample(old: ClusterState, new: ClusterState,
           served: dict[str, RatesResult | None] | None = None,
           previous: dict[str, RatesResult] | None = None,
           latency: dict[str, MemberLatency] | None = None) -> RateSample | None:
    """`served`: this round's Inspect.Rates answers by endpoint (None: not
    asked or no answer); `previous`: the last answer of each endpoint;
    `latency`: this round's scrape of each endpoint's /metrics."""
    s = _sample(old, new, served, previous)
    if s is None or not latency or "latency" not in _FIELDS:
        return s
    by_label = tuple((m.label, latency[m.endpoint]) for m in new.members if m.endpoint in latency)
    return dataclasses.replace(s, latency=by_label)


_FIELDS = {f.name for f in dataclasses.fields(RateSample)}


def _sample(old: ClusterState, new: ClusterState, served: dict[str, RatesResult | None] | None,
            previous: dict[str, RatesResult] | None) -> RateSample | None:
    served = {ep: r for ep, r in (served or {}).items() if r is not None}
    if served:
        return _from_inspect(new, served, previous or {})
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


def _per_second(r: RatesResult, before: RatesResult | None, name: str) -> float:
    """The counter's rate since the previous answer (what just happened), or
    the member's own windowed rate when there is no previous answer."""
    if before is not None and r.at > before.at and name in r.totals:
        return max(0, r.totals[name] - before.totals.get(name, 0)) / (r.at - before.at)
    return r.per_second.get(name, 0.0)


def _from_inspect(new: ClusterState, served: dict[str, RatesResult],
                  previous: dict[str, RatesResult]) -> RateSample:
    # Writes are counted by the member the client sent them to: the sum over
    # members is the cluster's rate (a member that did not answer adds 0).
    writes = sum(_per_second(r, previous.get(ep), name) for ep, r in served.items() for name in WRITES)
    commit, lag = [], []
    for m in new.members:
        r = served.get(m.endpoint)
        commit.append((m.label, _per_second(r, previous.get(m.endpoint), "commit") if r else 0.0))
        lag.append((m.label, r.apply_lag if r else 0))
    return RateSample(new.polled_at, writes, tuple(commit), tuple(lag), from_inspect=True)


def append(history: tuple[RateSample, ...], s: RateSample | None) -> tuple[RateSample, ...]:
    if s is None:
        return history
    return (history + (s,))[-RATE_HISTORY:]
