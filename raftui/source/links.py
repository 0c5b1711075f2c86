"""Every directed link between members, from the members' fault statuses.

The link a->b carries what a sends to b. Two rules act on it: a's OUT rule
for b (or a's all-peers OUT rule) where the message leaves, and b's IN rule
for a where it arrives. The link is cut if either cuts it; a message
survives both drops (1 - (1-p_a)(1-p_b) is lost) and waits both delays.

What a member "reaches" is read from the links: both ways (it can talk and
hear), only out (its messages arrive but the answers do not), only in, or
not at all. A member that talks both ways with fewer voters than a quorum
(itself counted) is partitioned, whichever way its links were cut.

No UI and no network here: plain functions of a ClusterState.
"""
from __future__ import annotations

import dataclasses

from .faults import IN, OUT, FaultView, Rule
from .model import ClusterState, Member


@dataclasses.dataclass(frozen=True)
class Link:
    src: int
    dst: int
    cut: bool = False
    drop: float = 0.0                 # the fraction of messages lost, both ends' rules together
    delay_ms: int = 0
    by: tuple[str, ...] = ()          # which ends' rules act on it: "n1 out", "n2 in"
    known: bool = True                # both ends' fault status known (else: what is known)

    @property
    def active(self) -> bool:
        return self.cut or bool(self.drop) or bool(self.delay_ms)


def views(state: ClusterState) -> dict[int, FaultView]:
    return dict(state.faults)


def link(state: ClusterState, src: Member, dst: Member, known: dict[int, FaultView] | None = None) -> Link:
    known = views(state) if known is None else known
    out_view, in_view = known.get(src.id), known.get(dst.id)
    out_rule = out_view.rule(dst.id, OUT) if out_view is not None else Rule()
    in_rule = in_view.rule(src.id, IN) if in_view is not None else Rule()
    by = tuple(f"{who.label} {way}" for who, way, rule in ((src, OUT, out_rule), (dst, IN, in_rule))
               if rule.active)
    return Link(src.id, dst.id,
                cut=out_rule.cut or in_rule.cut,
                drop=1.0 - (1.0 - out_rule.drop) * (1.0 - in_rule.drop),
                delay_ms=out_rule.delay_ms + in_rule.delay_ms,
                by=by, known=out_view is not None and in_view is not None)


def matrix(state: ClusterState) -> dict[tuple[int, int], Link]:
    """Every directed link between two members (a != b), by (src id, dst id)."""
    known = views(state)
    members = [m for m in state.members if m.id > 0]
    return {(a.id, b.id): link(state, a, b, known) for a in members for b in members if a.id != b.id}


@dataclasses.dataclass(frozen=True)
class Reach:
    both: tuple[str, ...] = ()        # labels it talks to and hears from
    out_only: tuple[str, ...] = ()    # it is heard, it does not hear them
    in_only: tuple[str, ...] = ()
    none: tuple[str, ...] = ()

    @property
    def whole(self) -> bool:
        return not (self.out_only or self.in_only or self.none)

    def describe(self) -> str:
        """"all" when nothing is cut; else "⇄n2 →n3 ←n1 ✗n4" (both, only out, only in, none)."""
        if self.whole:
            return "all"
        parts = ([f"⇄{n}" for n in self.both] + [f"→{n}" for n in self.out_only]
                 + [f"←{n}" for n in self.in_only] + [f"✗{n}" for n in self.none])
        return " ".join(parts) if parts else "none"


def reach(state: ClusterState, member_id: int, links: dict[tuple[int, int], Link] | None = None) -> Reach:
    """Whom `member_id` can reach, by cuts (drops and delays slow links, they do not end them)."""
    links = matrix(state) if links is None else links
    both, out_only, in_only, none = [], [], [], []
    for other in state.members:
        if other.id == member_id or other.id <= 0:
            continue
        out = links.get((member_id, other.id))
        back = links.get((other.id, member_id))
        can_send = out is None or not out.cut
        can_hear = back is None or not back.cut
        bucket = both if can_send and can_hear else out_only if can_send else in_only if can_hear else none
        bucket.append(other.label)
    return Reach(tuple(both), tuple(out_only), tuple(in_only), tuple(none))


def quorum_reached(state: ClusterState, member_id: int, links: dict[tuple[int, int], Link]) -> bool:
    """Does `member_id` talk both ways with a quorum of voters (itself counted)?"""
    voters = [m for m in state.members if not m.is_learner] or list(state.members)
    talking = [v for v in voters if v.id == member_id
               or (not links.get((member_id, v.id), Link(0, 0)).cut
                   and not links.get((v.id, member_id), Link(0, 0)).cut)]
    return len(talking) >= len(voters) // 2 + 1
