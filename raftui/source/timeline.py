"""What changed between two polls, as timeline events.

Only differences between consecutive ClusterStates are reported, so a
console that attaches to a running cluster starts with an empty timeline
plus one "attached" line, not a burst of "member up" noise.
"""
from __future__ import annotations

from .model import ClusterState, TimelineLine

TIMELINE_LIMIT = 500


def changes(old: ClusterState, new: ClusterState, now: float) -> list[TimelineLine]:
    events: list[TimelineLine] = []
    if not old.members:
        if new.members:
            leader = new.leader
            where = f"leader {leader.label}, term {new.term}" if leader else "no leader"
            events.append(TimelineLine(now, "attach", f"attached to {len(new.members)} members, {where}"))
        return events

    if new.leader_id != old.leader_id:
        if new.leader_id:
            leader = new.leader
            name = leader.label if leader else f"{new.leader_id:x}"
            events.append(TimelineLine(now, "leader", f"leader is now {name} (term {new.term})",
                                        key=(new.leader_id, new.term)))
        else:
            events.append(TimelineLine(now, "leader", "no leader", ok=False))
    elif new.term != old.term and new.term:
        events.append(TimelineLine(now, "term", f"term {old.term} -> {new.term}"))

    before = {m.id: m for m in old.members}
    after = {m.id: m for m in new.members}
    for mid, m in after.items():
        prev = before.get(mid)
        if prev is None:
            events.append(TimelineLine(now, "member", f"member {m.label} added"
                                        + (" as learner" if m.is_learner else "")))
            continue
        # unknown -> anything is a member first heard of, not a change.
        if prev.health != m.health and prev.health != "unknown":
            ok = m.health == "up"
            why = f" ({m.errors[-1]})" if not ok and m.errors else ""
            events.append(TimelineLine(now, m.health, f"{m.label} is {m.health}{why}", ok=ok))
        if prev.is_learner and not m.is_learner:
            events.append(TimelineLine(now, "member", f"{m.label} promoted to voter"))
        for alarm in set(m.alarms) - set(prev.alarms):
            events.append(TimelineLine(now, "alarm", f"alarm {alarm} on {m.label}", ok=False))
        for alarm in set(prev.alarms) - set(m.alarms):
            events.append(TimelineLine(now, "alarm", f"alarm {alarm} on {m.label} cleared"))
    for mid, m in before.items():
        if mid not in after:
            events.append(TimelineLine(now, "member", f"member {m.label} removed"))

    if new.compact_revision > old.compact_revision and old.polled_at:
        events.append(TimelineLine(now, "compact", f"compacted to revision {new.compact_revision}"))
    return events


def prepend(timeline: tuple[TimelineLine, ...], events: list[TimelineLine]) -> tuple[TimelineLine, ...]:
    """Newest first, bounded. Live events (seq > 0) are ordered by their
    sequence number, the order the console learned of them, never by their
    time stamps: a member's clock and the console's differ, and within one
    second "no leader" must stay below the "leader is now" that followed it.
    History (seq 0: what members recorded before the console attached) has
    no other order than its stamps, and stays below every live line."""
    if not events:
        return timeline
    live = sorted((e for e in events if e.seq), key=lambda e: e.seq, reverse=True)
    old = [e for e in events if not e.seq]
    merged = tuple(live) + timeline
    if old:
        history = sorted(old + [e for e in timeline if not e.seq], key=lambda e: e.at, reverse=True)
        merged = tuple(e for e in merged if e.seq) + tuple(history)
    return merged[:TIMELINE_LIMIT]
