"""Build a ClusterState from one poll round's raw results.

A member that does not answer keeps its last known numbers (shown dimmed by
the console) and is marked down with the reason; one that never answered is
"unknown".
"""
from __future__ import annotations

import dataclasses

from .model import ClusterState, Member
from .poll import InspectResult, MemberInfo, StatusResult


def strip_scheme(url: str) -> str:
    for scheme in ("http://", "https://", "unix://", "unixs://"):
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/")
    return url.rstrip("/")


@dataclasses.dataclass
class RoundResults:
    statuses: dict[str, StatusResult]            # by endpoint
    members: list[MemberInfo] | None             # None: MemberList failed this round
    alarms: dict[int, tuple[str, ...]] | None
    compact_revision: int | None
    inspects: dict[str, InspectResult | None]    # by endpoint


def build(prev: ClusterState, known: list[MemberInfo], endpoint_of: dict[int, str],
          r: RoundResults, now: float) -> ClusterState:
    """`known`: the latest member list; `endpoint_of`: member id -> endpoint polled for it."""
    by_id_prev = {m.id: m for m in prev.members}
    members: list[Member] = []
    for info in sorted(known, key=lambda i: (i.name or "~", i.id)):
        endpoint = endpoint_of.get(info.id, "")
        st = r.statuses.get(endpoint)
        old = by_id_prev.get(info.id)
        base = old or Member(name=info.name, id=info.id, endpoint=endpoint)
        base = dataclasses.replace(
            base, name=info.name or base.name, endpoint=endpoint, client_urls=info.client_urls,
            peer_urls=info.peer_urls, is_learner=info.is_learner,
        )
        alarms = (r.alarms or {}).get(info.id, ()) if r.alarms is not None else base.alarms
        ins = r.inspects.get(endpoint)
        if st is not None and st.ok:
            role = "leader" if st.leader_id == info.id else ("learner" if st.is_learner else "follower")
            if ins is not None and ins.available:
                role = ins.role
            members.append(dataclasses.replace(
                base, health="up", role=role, term=st.term, commit_index=st.commit_index,
                applied_index=st.applied_index, db_size=st.db_size, db_size_in_use=st.db_size_in_use,
                leader_id=st.leader_id, revision=st.revision, version=st.version, alarms=alarms,
                errors=st.errors, is_learner=st.is_learner or info.is_learner,
                last_index=ins.last_index if ins is not None and ins.available else base.last_index,
                inspect=ins.available if ins is not None else base.inspect,
            ))
        elif st is not None:
            members.append(dataclasses.replace(base, health="down", role="unknown", alarms=alarms,
                                               errors=(st.error,)))
        else:
            members.append(dataclasses.replace(base, health="unknown", alarms=alarms))

    up = [m for m in members if m.health == "up"]
    term = max((m.term for m in up), default=prev.term)
    # The leader as seen by the members of the highest term; a stale member's
    # idea of the leader (a partitioned old leader) must not win.
    leader_id = next((m.leader_id for m in up if m.term == term and m.leader_id), 0)
    members = _attach_progress(members, leader_id, r.inspects)
    cluster_id = next((s.cluster_id for s in r.statuses.values() if s.ok and s.cluster_id), prev.cluster_id)
    inspect_flags = [m.inspect for m in members if m.inspect is not None]
    return dataclasses.replace(
        prev,
        members=tuple(members),
        cluster_id=cluster_id,
        revision=max((m.revision for m in up), default=prev.revision),
        compact_revision=r.compact_revision if r.compact_revision is not None else prev.compact_revision,
        leader_id=leader_id,
        term=term,
        polled_at=now,
        inspect=any(inspect_flags) if inspect_flags else prev.inspect,
    )


def _attach_progress(members: list[Member], leader_id: int,
                     inspects: dict[str, InspectResult | None]) -> list[Member]:
    leader = next((m for m in members if m.id == leader_id), None)
    if leader is None:
        return members
    ins = inspects.get(leader.endpoint)
    if ins is None or not ins.available:
        return members
    progress = {p.member_id: p for p in ins.progress}
    return [dataclasses.replace(m, progress=progress.get(m.id)) for m in members]
