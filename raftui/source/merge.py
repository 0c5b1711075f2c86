"""Build a ClusterState from one poll round's raw results, and lay streamed
raft statuses over it.

A member that does not answer keeps its last known numbers (shown dimmed by
the console) and is marked down with the reason; one that never answered is
"unknown".
"""
from __future__ import annotations

import dataclasses

from .model import ClusterState, Member
from .poll import InspectResult, MemberInfo, RatesResult, StatusResult


def strip_scheme(url: str) -> str:
    for scheme in ("http://", "https://", "unix://", "unixs://"):
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/")
    return url.rstrip("/")


@dataclasses.dataclass
class RoundResults:
    statuses: dict[str, StatusResult]            # by endpoint
    members: list[MemberInfo] | None             # None: MemberList failed this round
    compact_revision: int | None
    inspects: dict[str, InspectResult | None]    # by endpoint
    rates: dict[str, RatesResult | None] = dataclasses.field(default_factory=dict)


def build(prev: ClusterState, known: list[MemberInfo], endpoint_of: dict[int, str],
          r: RoundResults, now: float) -> ClusterState:
    """`known`: the latest member list; `endpoint_of`: member id -> endpoint polled for it."""
    by_id_prev = {m.id: m for m in prev.members}
    # Every member's Status lists every alarm of the cluster; None: nobody answered.
    answered = [s for s in r.statuses.values() if s.ok]
    cluster_alarms: dict[int, tuple[str, ...]] | None = None
    if answered:
        cluster_alarms = {}
        for s in answered:
            for mid, names in s.alarms.items():
                cluster_alarms[mid] = tuple(sorted(set(cluster_alarms.get(mid, ())) | set(names)))
    members: list[Member] = []
    for info in sorted(known, key=lambda i: (i.name or "~", i.id)):
        endpoint = endpoint_of.get(info.id, "")
        st = r.statuses.get(endpoint)
        old = by_id_prev.get(info.id)
        ins = r.inspects.get(endpoint)
        base = old or Member(name=info.name, id=info.id, endpoint=endpoint)
        # A member lists no name until it has published it (a fresh cluster);
        # its Inspect answers already say the name it goes by.
        said = ins.name if ins is not None and ins.available and ins.member_id == info.id else ""
        base = dataclasses.replace(
            base, name=info.name or said or base.name, endpoint=endpoint, client_urls=info.client_urls,
            peer_urls=info.peer_urls, is_learner=info.is_learner,
        )
        alarms = cluster_alarms.get(info.id, ()) if cluster_alarms is not None else base.alarms
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
                loop_lag_ms=ins.loop_lag_ms if ins is not None and ins.available else base.loop_lag_ms,
                config=ins.config if ins is not None and ins.available else base.config,
                inspect=ins.available if ins is not None else base.inspect,
            ))
        elif st is not None:
            members.append(dataclasses.replace(base, health="down", role="unknown", alarms=alarms,
                                               errors=(st.error,)))
        else:
            members.append(dataclasses.replace(base, health="unknown", alarms=alarms))

    cluster_id = next((s.cluster_id for s in answered if s.cluster_id), prev.cluster_id)
    inspect_flags = [m.inspect for m in members if m.inspect is not None]
    up = [m for m in members if m.health == "up"]
    state = dataclasses.replace(
        prev,
        cluster_id=cluster_id,
        revision=max((m.revision for m in up), default=prev.revision),
        compact_revision=r.compact_revision if r.compact_revision is not None else prev.compact_revision,
        polled_at=now,
        inspect=any(inspect_flags) if inspect_flags else prev.inspect,
    )
    return summarise(state, members, r.inspects)


def overlay(state: ClusterState, views: dict[str, InspectResult]) -> ClusterState:
    """The state with the raft numbers of answering members replaced by their
    latest streamed status (Inspect.WatchStatus), which is fresher than a poll."""
    if not views:
        return state
    changed = False
    members = []
    for m in state.members:
        v = views.get(m.endpoint)
        if v is not None and m.health in ("up", "partitioned") and (not v.member_id or v.member_id == m.id):
            new = dataclasses.replace(m, name=m.name if m.name and m.id > 0 and m.name != m.endpoint
                                      else v.name or m.name,
                                      role=v.role, term=v.term, commit_index=v.commit_index,
                                      applied_index=v.applied_index, last_index=v.last_index,
                                      leader_id=v.leader_id, loop_lag_ms=v.loop_lag_ms, inspect=True,
                                      config=v.config or m.config)
            changed = changed or new != m
            m = new
        members.append(m)
    if not changed:
        return state
    out = summarise(state, members, {})
    if out.leader_id != state.leader_id:
        # A new leader: its streamed status carries its progress view; the
        # old leader's view is no longer anyone's.
        out = summarise(out, [dataclasses.replace(m, progress=None) for m in out.members], views)
    return out


def summarise(state: ClusterState, members: list[Member],
              inspects: dict[str, InspectResult | None]) -> ClusterState:
    """Cluster term and leader from the members; the leader's progress view on each."""
    answering = [m for m in members if m.health in ("up", "partitioned")]
    term = max((m.term for m in answering), default=state.term)
    # The leader as seen by the members of the highest term; a stale member's
    # idea of the leader (a partitioned old leader) must not win.
    leader_id = next((m.leader_id for m in answering if m.term == term and m.leader_id), 0)
    members = _attach_progress(members, leader_id, inspects)
    return dataclasses.replace(state, members=tuple(members), leader_id=leader_id, term=term)


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
