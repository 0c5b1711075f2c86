"""The cluster in one line: what an operator must know first, computed from a
ClusterState (no UI, no I/O).

    3/3 voters up ✓ quorum · NOSPACE on n2: cluster is read-only · leader n1 · term 7 · rev 512
    · db 2.5 MB of 2.1 GB (the quota) · 2 leader changes in 10 min · loop lag 140 ms (n2) · raftnode

Each part has a kind (how it is drawn: ok, bad, warn, info) and a priority
(which parts a narrow terminal keeps: quorum and alarms before versions).
"""
from __future__ import annotations

import dataclasses

from .actions import human_bytes
from .model import ClusterState, Member, RaftConfig

DEFAULT_QUOTA_BYTES = 2 * 1024 ** 3     # etcd's --quota-backend-bytes default; the API does not report it
LEADER_WINDOW = 600.0                   # seconds: "leader changes in the last 10 minutes"
SLOW_LOOP_MS = 100
QUOTA_WARN = 0.8                        # share of the quota from which the db size is a warning

ALARM_MEANING = {
    "NOSPACE": "cluster is read-only",
    "CORRUPT": "members' data differ",
}
ALARM_REMEDY = {
    "NOSPACE": "the db reached its quota: compact (c), defrag (g) every member, then disarm (!)",
}


@dataclasses.dataclass(frozen=True)
class Part:
    text: str
    kind: str = "info"       # ok / bad / warn / info
    priority: int = 5        # 0 is kept longest


def voters(state: ClusterState) -> tuple[list[Member], list[Member]]:
    """(voters, voters that answer and reach a majority)."""
    all_voters = [m for m in state.members if not m.is_learner]
    return all_voters, [m for m in all_voters if m.health == "up"]


def config(state: ClusterState) -> RaftConfig | None:
    """The configuration as the leader (else any answering member) reports it (Inspect only)."""
    reporters = [state.leader] + [m for m in state.members if m.health == "up"]
    return next((m.config for m in reporters if m is not None and m.config is not None), None)


def has_quorum(state: ClusterState) -> bool:
    """A majority of the voters up -- of both halves while a joint configuration is in force."""
    all_voters, up = voters(state)
    cfg = config(state)
    if cfg is None or not cfg.joint:
        return bool(all_voters) and len(up) >= len(all_voters) // 2 + 1
    answering = {m.id for m in up}
    return all(len(answering & set(half)) >= len(half) // 2 + 1 for half in (cfg.voters, cfg.voters_outgoing))


def summary(state: ClusterState, now: float, quota_bytes: int = DEFAULT_QUOTA_BYTES) -> list[Part]:
    if not state.members:
        return [Part("connecting ...", "warn", 0)]
    all_voters, up = voters(state)
    need = len(all_voters) // 2 + 1
    parts = []
    if has_quorum(state):
        parts.append(Part(f"{len(up)}/{len(all_voters)} voters up ✓ quorum", "ok", 0))
    else:
        cfg = config(state)
        needs = "a majority of C_old and of C_new" if cfg is not None and cfg.joint else str(need)
        parts.append(Part(f"{len(up)}/{len(all_voters)} voters up ✗ no quorum (needs {needs}): writes will fail",
                          "bad", 0))
    cfg = config(state)
    if cfg is not None and cfg.joint:
        name = {m.id: m.label for m in state.members}

        def ids(group: tuple[int, ...]) -> str:
            return "(" + " ".join(name.get(i, f"{i:x}") for i in sorted(group, key=lambda i: name.get(i, ""))) + ")"

        text = f"joint config: voters {ids(cfg.voters)} && {ids(cfg.voters_outgoing)}"
        if cfg.learners_next:
            text += f" learners_next {ids(cfg.learners_next)}"
        parts.append(Part(text + (" autoleave" if cfg.auto_leave else ""), "warn", 1))
    for alarm, names in _alarms(state).items():
        meaning = ALARM_MEANING.get(alarm, "")
        parts.append(Part(f"{alarm} on {', '.join(names)}" + (f": {meaning}" if meaning else ""), "bad", 0))
    leader = state.leader
    if leader is not None:
        parts.append(Part(f"leader {leader.label}", "info", 1))
    else:
        parts.append(Part("no leader", "bad", 1))
    parts.append(Part(f"term {state.term}", "info", 1))
    parts.append(Part(f"rev {state.revision}", "info", 2))
    db = max((m.db_size for m in state.members if m.health == "up"), default=0)
    if db:
        share = db / quota_bytes
        used = f" ({share:.0%})" if share >= 0.01 else ""
        parts.append(Part(f"db {human_bytes(db)} of {human_bytes(quota_bytes)}{used}",
                          "warn" if share >= QUOTA_WARN else "info", 3))
    changes = leader_changes(state, now)
    parts.append(Part(f"{changes} leader change{'s' if changes != 1 else ''} in 10 min",
                      "warn" if changes > 1 else "info", 4))
    lagging = [m for m in state.members if m.loop_lag_ms is not None and m.health == "up"]
    if lagging:
        worst = max(lagging, key=lambda m: m.loop_lag_ms)
        parts.append(Part(f"loop lag {worst.loop_lag_ms} ms ({worst.label})",
                          "warn" if worst.loop_lag_ms > SLOW_LOOP_MS else "info", 4))
    versions = sorted({m.version for m in state.members if m.version})
    if versions:
        parts.append(Part(("version " if len(versions) == 1 else "versions ") + ", ".join(versions),
                          "warn" if len(versions) > 1 else "info", 6))
    return parts


def fit(parts: list[Part], width: int, sep: str = " · ") -> list[Part]:
    """The parts that fit in `width` columns, dropping the least important first (order kept)."""
    kept = list(parts)
    while len(kept) > 1 and len(sep.join(p.text for p in kept)) > width:
        drop = max(range(len(kept)), key=lambda i: (kept[i].priority, i))
        del kept[drop]
    return kept


def leader_changes(state: ClusterState, now: float) -> int:
    """Leaders elected in the last LEADER_WINDOW seconds, as the timeline recorded them."""
    return sum(1 for e in state.timeline
               if e.kind == "leader" and e.key is not None and e.at >= now - LEADER_WINDOW)


def _alarms(state: ClusterState) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for m in state.members:
        for alarm in m.alarms:
            out.setdefault(alarm, []).append(m.label)
    return out

