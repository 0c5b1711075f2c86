"""ClusterSource: one live model of a cluster, fed by polling and watches.

The console owns one ClusterSource and calls it from its workers:

    source = ClusterSource(["127.0.0.1:2379", ...])     # inside the running loop
    state = await source.poll()                           # one round, ~1 s at most
    result = await source.put("k", "v")                   # etcd's answer or error text
    async for state in source.watch("k", prefix=True): ...

`poll()` never overlaps itself (a lock; a second caller waits for the round
in progress and gets its result). Every method returns, it never raises for
a member being down, slow or gone. No UI here: the module must import
without textual.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import AsyncIterator, Awaitable, Callable

from . import actions, faults, merge, poll, rates, timeline
from . import watch as watch_stream
from .connection import Connections, Stubs, TlsFiles
from .model import ActionResult, ClusterState, LiveWatch, Member, TimelineEvent

COMPACT_REVISION_EVERY = 2.0   # seconds between compact-revision probes (a watch each)
WATCHERS_EVERY = 1.0
WAL_ENTRIES = 200
WATCH_EVENTS_KEPT = 1000


class ClusterSource:
    def __init__(self, endpoints: list[str], tls: TlsFiles | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._conns = Connections(endpoints, tls)
        self._clock = clock
        self._state = ClusterState()
        self._members: list[poll.MemberInfo] = []
        self._endpoint_of: dict[int, str] = {}
        self._poll_lock = asyncio.Lock()
        self._last_compact_probe = 0.0
        self._last_watchers = 0.0
        self._fault_capable: dict[str, bool] = {}   # endpoint -> serves Fault (absent: not known yet)

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ClusterState:
        return self._state

    @property
    def endpoints(self) -> list[str]:
        return list(self._conns.endpoints)

    def note(self, text: str, ok: bool = True, kind: str = "action") -> None:
        """Put a line in the timeline (results of host-mode actions, for instance)."""
        self._add_events([TimelineEvent(self._clock(), kind, text, ok)])

    def _add_events(self, events: list[TimelineEvent]) -> None:
        if events:
            self._state = dataclasses.replace(
                self._state, timeline=timeline.prepend(self._state.timeline, events)
            )

    def _record(self, result: ActionResult, kind: str = "action") -> ActionResult:
        self.note(result.text, result.ok, kind if result.ok else "error")
        return result

    async def close(self) -> None:
        await self._conns.close()

    # ------------------------------------------------------------------- poll

    async def poll(self, wal_member: int = 0) -> ClusterState:
        """One round over every endpoint; returns (and keeps) the new state.

        `wal_member`: whose WAL tail to fetch, when it serves Inspect."""
        async with self._poll_lock:
            await self._poll_round(wal_member)
            return self._state

    async def _poll_round(self, wal_member: int) -> None:
        now = self._clock()
        self._discover_endpoints()
        endpoints = list(self._conns.endpoints)
        preferred = self._preferred_stubs()
        probe_compact = now - self._last_compact_probe >= COMPACT_REVISION_EVERY
        inspect_eps = [ep for ep in endpoints if self._inspect_wanted(ep)]
        fault_eps = [ep for ep in endpoints if self._fault_capable.get(ep, True)]

        statuses, member_list, alarms, compact, inspects, fault_views = await asyncio.gather(
            asyncio.gather(*(poll.status(self._conns.get(ep)) for ep in endpoints)),
            poll.member_list(preferred),
            poll.alarms(preferred),
            poll.compact_revision(preferred) if probe_compact else _none(),
            asyncio.gather(*(poll.inspect_status(self._conns.get(ep)) for ep in inspect_eps)),
            asyncio.gather(*(faults.status(self._conns.get(ep), poll.POLL_DEADLINE) for ep in fault_eps)),
        )
        for ep, view in zip(fault_eps, fault_views):
            if view is False:
                self._fault_capable[ep] = False
            elif view is not None:
                self._fault_capable[ep] = True
        if probe_compact:
            self._last_compact_probe = now
        by_endpoint = dict(zip(endpoints, statuses))
        for st in statuses:
            if st.ok and st.member_id:
                self._endpoint_of[st.member_id] = st.endpoint
        if member_list is not None:
            self._members = member_list
        known = self._members or self._members_from_endpoints(statuses)
        results = merge.RoundResults(
            statuses=by_endpoint, members=member_list, alarms=alarms, compact_revision=compact,
            inspects=dict(zip(inspect_eps, inspects)),
        )
        old = self._state
        new = merge.build(old, known, self._endpoint_of, results, self._clock())
        new = self._with_faults(new, dict(zip(fault_eps, fault_views)))
        new = await self._inspect_extras(new, wal_member)
        new = dataclasses.replace(new, rates=rates.append(old.rates, rates.sample(old, new)))
        self._state = new
        self._add_events(timeline.changes(old, new, new.polled_at))

    def _with_faults(self, state: ClusterState, views: dict) -> ClusterState:
        """Mark members with a cut as partitioned; note whether any member serves Fault."""
        members = tuple(
            dataclasses.replace(m, health="partitioned")
            if m.health == "up" and isinstance(views.get(m.endpoint), faults.FaultView)
            and views[m.endpoint].partitioned else m
            for m in state.members
        )
        capable = [self._fault_capable[m.endpoint] for m in members if m.endpoint in self._fault_capable]
        return dataclasses.replace(state, members=members,
                                   fault=any(capable) if capable else state.fault)

    async def _inspect_extras(self, state: ClusterState, wal_member: int) -> ClusterState:
        """WAL tail of one member and everyone's watchers, from Inspect when served."""
        if not state.inspect:
            return state
        calls: list[Awaitable] = []
        target = state.member(wal_member) or state.leader
        if target is not None and target.inspect and target.health == "up":
            calls.append(poll.wal_tail(self._conns.get(target.endpoint), WAL_ENTRIES))
        else:
            calls.append(_none())
        now = self._clock()
        want_watchers = now - self._last_watchers >= WATCHERS_EVERY
        served = [m for m in state.members if m.inspect and m.health == "up"]
        if want_watchers:
            self._last_watchers = now
            calls.extend(poll.watchers(self._conns.get(m.endpoint), m.label) for m in served)
        wal, *per_member = await asyncio.gather(*calls)
        changes: dict = {}
        if wal is not None and target is not None:
            changes.update(wal=wal, wal_member=target.id)
        if want_watchers:
            changes["watchers"] = tuple(w for ws in per_member if ws for w in ws)
        return dataclasses.replace(state, **changes) if changes else state

    def _inspect_wanted(self, endpoint: str) -> bool:
        member = next((m for m in self._state.members if m.endpoint == endpoint), None)
        return member is None or member.inspect is not False

    def _discover_endpoints(self) -> None:
        """Poll members the operator did not list: their first client URL."""
        known = set(self._conns.endpoints)
        for info in self._members:
            if info.id in self._endpoint_of:
                continue
            urls = [merge.strip_scheme(u) for u in info.client_urls]
            match = next((u for u in urls if u in known), None)
            if match is None and urls:
                match = urls[0]
                self._conns.add(match)
            if match is not None:
                self._endpoint_of[info.id] = match

    def _members_from_endpoints(self, statuses: list[poll.StatusResult]) -> list[poll.MemberInfo]:
        """Before any MemberList answer: one row per endpoint (synthetic negative ids)."""
        out = []
        for i, st in enumerate(statuses):
            mid = st.member_id if st.ok and st.member_id else -(i + 1)
            self._endpoint_of.setdefault(mid, st.endpoint)
            out.append(poll.MemberInfo(mid, st.endpoint, (), (f"http://{st.endpoint}",), st.is_learner))
        return out

    # ---------------------------------------------------- choosing an endpoint

    def _stubs_for(self, member: Member | None) -> Stubs:
        return self._conns.get(member.endpoint) if member and member.endpoint else self._preferred_stubs()

    def _preferred_stubs(self) -> Stubs:
        """The leader's endpoint if it is up, else any member that is up, else the first."""
        state = self._state
        candidates = [state.leader] + [m for m in state.members if m.health == "up" and not m.is_learner]
        for m in candidates:
            if m is not None and m.health == "up" and m.endpoint:
                return self._conns.get(m.endpoint)
        return self._conns.get(self._conns.endpoints[0])

    def _member(self, member_id: int) -> Member | None:
        return self._state.member(member_id)

    # ----------------------------------------------------------------- actions

    async def put(self, key: str, value: str, lease_ttl: int | None = None) -> ActionResult:
        return self._record(await actions.put(self._preferred_stubs(), key, value, lease_ttl))

    async def delete(self, key: str, prefix: bool = False) -> ActionResult:
        return self._record(await actions.delete(self._preferred_stubs(), key, prefix))

    async def get(self, key: str, revision: int = 0, prefix: bool = False) -> ActionResult:
        return self._record(await actions.get(self._preferred_stubs(), key, revision, prefix), "read")

    async def history(self, key: str) -> ActionResult:
        return await actions.history(self._preferred_stubs(), key)

    async def list_keys(self, prefix: str = "", limit: int = 1000, after: str | None = None) -> ActionResult:
        """One page: data = (list[KeyValue], more). Not put in the timeline (it is a refresh)."""
        return await actions.list_keys(self._preferred_stubs(), prefix, limit, after)

    async def compact(self, revision: int) -> ActionResult:
        result = self._record(await actions.compact(self._preferred_stubs(), revision), "compact")
        if result.ok:
            self._state = dataclasses.replace(self._state, compact_revision=revision)
        return result

    async def defrag(self, member_id: int) -> ActionResult:
        m = self._member(member_id)
        if m is None:
            return self._record(ActionResult.fail("defrag: no such member"))
        return self._record(await actions.defrag(self._conns.get(m.endpoint), m.label), "defrag")

    async def move_leader(self, member_id: int) -> ActionResult:
        target, leader = self._member(member_id), self._state.leader
        if target is None:
            return self._record(ActionResult.fail("move leader: no such member"))
        if leader is None or leader.health != "up":
            return self._record(ActionResult.fail("move leader: no leader endpoint given"))
        if leader.id == target.id:
            return self._record(ActionResult(True, f"{target.label} is already the leader"))
        return self._record(await actions.move_leader(self._conns.get(leader.endpoint), target.id,
                                                      target.label), "leader")

    async def add_learner(self, peer_url: str) -> ActionResult:
        return self._record(await actions.add_learner(self._preferred_stubs(), peer_url), "member")

    async def promote(self, member_id: int) -> ActionResult:
        m = self._member(member_id)
        name = m.label if m else f"{member_id:x}"
        return self._record(await actions.promote(self._preferred_stubs(), member_id, name), "member")

    async def remove_member(self, member_id: int) -> ActionResult:
        m = self._member(member_id)
        name = m.label if m else f"{member_id:x}"
        return self._record(await actions.remove_member(self._preferred_stubs(), member_id, name), "member")

    async def alarm_list(self) -> ActionResult:
        return self._record(await actions.alarm_list(self._preferred_stubs()), "alarm")

    async def alarm_disarm(self) -> ActionResult:
        return self._record(await actions.alarm_disarm(self._preferred_stubs()), "alarm")

    async def snapshot_save(self, path: str, member_id: int = 0) -> ActionResult:
        m = self._member(member_id) or self._state.leader
        stubs = self._stubs_for(m)
        name = m.label if m else stubs.endpoint
        return self._record(await actions.snapshot_save(stubs, path, name), "snapshot")

    # ---------------------------------------------------------- network faults

    def _voting_stubs(self) -> list[tuple[Stubs, int]]:
        return [(self._conns.get(m.endpoint), m.id) for m in self._state.members if m.endpoint and m.id > 0]

    async def partition(self, groups: list[list[int]]) -> ActionResult:
        """Cut the members in groups[0] off from everyone else."""
        everyone = self._voting_stubs()
        side_a = [(s, i) for s, i in everyone if i in groups[0]]
        side_b = [(s, i) for s, i in everyone if i not in groups[0]]
        names = ", ".join(m.label for m in self._state.members if m.id in groups[0])
        others = ", ".join(m.label for m in self._state.members if m.id not in groups[0])
        return self._record(await faults.partition(side_a, side_b, f"{{{names}}} | {{{others}}}"), "partition")

    async def heal(self) -> ActionResult:
        return self._record(await faults.heal([s for s, _ in self._voting_stubs()]), "heal")

    async def drop_delay(self, member_id: int, drop_percent: int, delay_ms: int) -> ActionResult:
        m = self._member(member_id)
        if m is None:
            return self._record(ActionResult.fail("drop/delay: no such member"))
        return self._record(await faults.drop_delay(self._conns.get(m.endpoint), m.label,
                                                    drop_percent, delay_ms), "fault")

    # ------------------------------------------------------------------ watch

    async def watch(self, key: str, prefix: bool = False,
                    start_revision: int = 0) -> AsyncIterator[ClusterState]:
        """Open a live watch; yields the new state after every batch of events.

        Only one live watch at a time: the caller cancels the iteration to stop."""
        live = LiveWatch(key=key, prefix=prefix)
        self._set_watch(live)
        what = f"{key}{'*' if prefix else ''}"
        self.note(f"watch opened on {what}", kind="watch")
        async for batch in watch_stream.stream(self._preferred_stubs(), key, prefix, start_revision):
            events = (live.events + tuple(batch))[-WATCH_EVENTS_KEPT:]
            status = live.status
            if batch and batch[0].type == "CREATED":
                status = "watching"
            if batch and batch[-1].type == "CANCELED":
                status = f"closed: {batch[-1].value}"
                self.note(f"watch on {what} closed: {batch[-1].value}", ok=False, kind="watch")
            live = dataclasses.replace(live, events=events, status=status)
            self._set_watch(live)
            yield self._state

    def _set_watch(self, live: LiveWatch | None) -> None:
        self._state = dataclasses.replace(self._state, watch=live)

    def close_watch(self) -> None:
        if self._state.watch is not None:
            self._set_watch(None)


async def _none() -> None:
    return None
