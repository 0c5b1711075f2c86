"""What changed between two polls, as timeline events.

Only differences between consecutive ClusterStates are reported, so a
console that attaches to a running cluster starts with an empty timeline
plus one "attached" line, not a burst of "member up" noise.
"""
from __future__ import annotations

from .merge import strip_scheme
from .model import ClusterState, Member, TimelineLine

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

    # A member is its ID, whatever it is called: a name that appears later
    # (published after start, or the member list answering after the first
    # Status) renames it, nothing more.
    before = {m.id: m for m in old.members}
    after = {m.id: m for m in new.members}
    stand_ins = [m for m in old.members if m.id <= 0 and m.id not in after]
    for mid, m in after.items():
        prev = before.get(mid)
        if prev is None and mid > 0 and stand_ins:
            prev = _stand_in_for(m, stand_ins)
            if prev is None:
                continue      # first heard of by its ID: it was one of the stand-ins
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
        if mid not in after and mid > 0:      # a stand-in leaving is the member getting its ID
            events.append(TimelineLine(now, "member", f"member {m.label} removed"))

    if new.compact_revision > old.compact_revision and old.polled_at:
        events.append(TimelineLine(now, "compact", f"compacted to revision {new.compact_revision}"))
    return events


def _stand_in_for(member: Member, stand_ins: list[Member]) -> Member | None:
    """The stand-in (taken from `stand_ins`) for a member first seen by its ID.

    Until a member answers Status or the member list arrives, the console
    knows only an endpoint, and shows a stand-in for it: a synthetic ID
    (<= 0) named after that endpoint. The stand-in at the member's endpoint
    (or at one of its client URLs) is that member as it was: returned, so
    that a change of health is still told ("n1 is up"). Without one at its
    address it is still one of the stand-ins (which, the console cannot
    say): one is taken and None returned, first heard of -- never "added"."""
    urls = {strip_scheme(u) for u in member.client_urls}
    for i, s in enumerate(stand_ins):
        if s.endpoint and (s.endpoint == member.endpoint or s.endpoint in urls):
            return stand_ins.pop(i)
    stand_ins.pop(0)
    return None


def prepend(timeline: tuple[TimelineLine, ...], events: list[TimelineLine]) -> tuple[TimelineLine, ...]:
    """Newest first, bounded.

    What the console saw itself goes on top, in the order it learned it (its
    sequence number), never re-sorted by time stamp: the console's clock may
    step back, and within one second "no leader" must stay below the
    "leader is now" that followed it.

    What a member reported (`reported`: its own leader events, and what its
    streamed status showed, stamped when it built it) happened at its own
    time stamp, often well before the console learned it -- a campaign
    arrives after the poll that showed the leader it produced. It
    is placed by that time, to full precision, below every line stamped
    later (a tie: the line learned later is the newer), so causes come
    before effects. Hosted members share the console's clock; a remote
    member's clock is only as good as its NTP.

    History (seq 0: what members recorded before the console attached) has
    no other order than its stamps, and stays below every live line."""
    if not events:
        return timeline
    merged = list(timeline)
    for e in sorted((e for e in events if e.seq), key=lambda e: e.seq):
        at = 0
        if e.reported:
            while at < len(merged) and merged[at].seq and merged[at].at > e.at:
                at += 1
        merged.insert(at, e)
    old = [e for e in events if not e.seq]
    if old:
        history = sorted(old + [e for e in merged if not e.seq], key=lambda e: e.at, reverse=True)
        merged = [e for e in merged if e.seq] + history
    return tuple(merged[:TIMELINE_LIMIT])
