"""ClusterSource: one live model of a cluster, fed by polling and watches.

The console owns one ClusterSource and calls it from its workers:

    source = ClusterSource(["127.0.0.1:2379", ...])     # inside the running loop
    state = await source.poll()                           # one round, ~1 s at most
    async for state in source.follow(): ...               # pushed raft changes (raftnode)
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
import itertools
import time
from typing import AsyncIterator, Callable

from . import actions, faults, links, merge, metrics, poll, rates, scrub, timeline, txn
from . import watch as watch_stream
from .codec import encode
from .connection import ClientAuth, Connections, Stubs, TlsFiles
from .model import ActionResult, ClusterState, LiveWatch, Member, TimelineLine
from .status_stream import LeaderNote, StatusStreams

COMPACT_REVISION_EVERY = 2.0   # seconds between compact-revision probes (a watch each)
WATCHERS_EVERY = 1.0
WAL_ENTRIES = 200
WAL_PAGE = 1000               # entries per page when the WAL panel pages back
WATCH_EVENTS_KEPT = 1000
# A live watch the member ended is opened again after this many seconds,
# doubling up to the max while it keeps ending before it is created.
WATCH_REOPEN_MIN = 1.0
WATCH_REOPEN_MAX = 8.0
FOLLOW_GAP = 0.15              # at most this often does follow() yield (coalescing)
METRICS_EVERY = 2.0            # seconds between /metrics scrapes (p99s over bucket deltas: any interval works)


class ClusterSource:
    def __init__(self, endpoints: list[str], tls: TlsFiles | None = None,
                 clock: Callable[[], float] = time.time, *,
                 metrics_urls: dict[str, str] | None = None, auth: ClientAuth | None = None) -> None:
        """`metrics_urls`: endpoint -> its member's /metrics URL (host mode knows
        them; else each endpoint's own /metrics is tried, as etcd serves it).
        `auth`: who the console is to the members (--user); every call carries its token."""
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._conns = Connections(endpoints, tls, auth=auth)
        self._metrics = metrics.MetricsPoller(metrics_urls or {}, tls=tls)
        self._last_metrics = 0.0
        self._latency: dict = {}                   # the last scrape's p99s by endpoint
        self._clock = clock
        self._since = clock()                          # events stamped earlier are history
        self._seq = itertools.count(1)                 # timeline order: the order events were learned
        self._state = ClusterState()
        self._members: list[poll.MemberInfo] = []
        self._endpoint_of: dict[int, str] = {}
        self._poll_lock = asyncio.Lock()
        self._last_compact_probe = 0.0
        self._last_watchers = 0.0
        self._fault_capable: dict[str, bool] = {}   # endpoint -> serves Fault (absent: not known yet)
        self._streams: StatusStreams | None = None  # made by follow()
        self._stream_changed = asyncio.Event()
        self._announced: set[tuple[int, int]] = set()   # (leader id, term) already in the timeline
        self._seen_notes: set[tuple] = set()
        self._last_rates: dict[str, poll.RatesResult] = {}

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ClusterState:
        return self._state

    @property
    def tls(self) -> TlsFiles | None:
        """The client TLS files the console dials with (tools it starts dial the same way)."""
        return self._conns.tls

    @property
    def auth(self) -> ClientAuth | None:
        """--user: .user, .enabled (True on / False off / None not known yet), .error
        (etcd's text of the last failed authentication). None without --user."""
        return self._conns.auth

    @property
    def endpoints(self) -> list[str]:
        return list(self._conns.endpoints)

    def note(self, text: str, ok: bool = True, kind: str = "action") -> None:
        """Put a line in the timeline (results of host-mode actions, for instance)."""
        self._fold(lambda state: (state, [TimelineLine(self._clock(), kind, text, ok)]))

    def _fold(self, step: Callable[[ClusterState], tuple[ClusterState, list[TimelineLine]]]) -> ClusterState:
        """The one place the state changes. Every producer -- a poll round, the
        status streams, an action's result, the live watch -- hands in a step:
        what its result makes of the state *as it is now*, and the timeline
        lines it adds. Steps run whole between two awaits (one event loop), so
        none overwrites what another folded in while it was out on the network:
        nothing to reconcile afterwards."""
        new, events = step(self._state)
        # A member cannot have done something after the console learned of
        # it: a clock running ahead is held to the moment it was learned.
        learned = self._clock()
        events = [dataclasses.replace(e, at=learned) if e.reported and e.at > learned else e for e in events]
        # Into the timeline in the order given (the order learned), each with
        # the next sequence number; what members recorded before the console
        # attached is history (seq 0). timeline.prepend places them.
        events = [e if e.at < self._since else dataclasses.replace(e, seq=next(self._seq))
                  for e in events if self._first_announcement(e)]
        if events:
            new = dataclasses.replace(new, timeline=timeline.prepend(new.timeline, events))
        self._state = new
        return new

    def _first_announcement(self, e: TimelineLine) -> bool:
        """False for a "leader is now X (term T)" already in the timeline (seen
        first by the status stream, or by a poll)."""
        if e.kind != "leader" or not e.key:
            return True
        if e.key in self._announced:
            return False
        self._announced.add(e.key)
        return True

    def _record(self, result: ActionResult, kind: str = "action") -> ActionResult:
        self.note(result.text, result.ok, kind if result.ok else "error")
        return result

    async def close(self) -> None:
        await self._metrics.close()
        if self._streams is not None:
            await self._streams.close()
        await self._conns.close()

    # ------------------------------------------------------------------- poll

    async def poll(self, wal_member: int = 0) -> ClusterState:
        """One round over every endpoint; returns (and keeps) the new state.

        `wal_member`: whose WAL tail to fetch, when it serves Inspect."""
        async with self._poll_lock:
            await self._poll_round(wal_member)
            return self._state

    async def _poll_round(self, wal_member: int) -> None:
        """Every call of the round at once (each with its own deadline), then one fold."""
        now = self._clock()
        self._discover_endpoints()
        endpoints = list(self._conns.endpoints)
        preferred = self._preferred_stubs()
        probe_compact = now - self._last_compact_probe >= COMPACT_REVISION_EVERY
        scrape = now - self._last_metrics >= METRICS_EVERY
        wanted = [ep for ep in endpoints if self._inspect_wanted(ep)]
        streams = self._streams
        if streams is not None:
            streams.ensure(wanted)
        # A member whose status stream is up needs no RaftStatus poll -- but the
        # leader does: its replication progress is not streamed.
        leader = self._state.leader
        leader_ep = leader.endpoint if leader is not None else ""
        inspect_eps = [ep for ep in wanted if streams is None or not streams.live(ep) or ep == leader_ep]
        rate_eps = [ep for ep in wanted if self._inspect_known(ep)]
        fault_eps = [ep for ep in endpoints if self._fault_capable.get(ep, True)]
        wal_target, watcher_members = self._extras_wanted(wal_member, now)

        (statuses, member_list, compact, inspects, rate_results, fault_views, wal,
         watchers, latency) = await asyncio.gather(
            asyncio.gather(*(poll.status(self._conns.get(ep)) for ep in endpoints)),
            poll.member_list(preferred),
            poll.compact_revision(preferred) if probe_compact else _none(),
            asyncio.gather(*(poll.inspect_status(self._conns.get(ep)) for ep in inspect_eps)),
            asyncio.gather(*(poll.inspect_rates(self._conns.get(ep)) for ep in rate_eps)),
            asyncio.gather(*(faults.status(self._conns.get(ep), poll.POLL_DEADLINE) for ep in fault_eps)),
            poll.wal_tail(self._conns.get(wal_target.endpoint), WAL_ENTRIES) if wal_target else _none(),
            asyncio.gather(*(poll.watchers(self._conns.get(m.endpoint), m.label) for m in watcher_members))
            if watcher_members is not None else _none(),
            self._metrics.poll(endpoints) if scrape else _none(),
        )
        if scrape:
            self._last_metrics = now
            self._latency = latency or {}
        # What the round taught about the endpoints (not the cluster's state).
        for ep, view in zip(fault_eps, fault_views):
            if view is False:
                self._fault_capable[ep] = False
            elif view is not None:
                self._fault_capable[ep] = True
        if probe_compact:
            self._last_compact_probe = now
        for st in statuses:
            if st.ok and st.member_id:
                self._endpoint_of[st.member_id] = st.endpoint
        if member_list is not None:
            self._members = member_list
        known = self._members or self._members_from_endpoints(statuses)
        inspect_by_ep = dict(zip(inspect_eps, inspects))
        if streams is not None:
            inspect_by_ep.update({ep: v for ep, v in streams.latest.items()
                                  if ep in endpoints and inspect_by_ep.get(ep) is None})
        results = merge.RoundResults(
            statuses=dict(zip(endpoints, statuses)), members=member_list, compact_revision=compact,
            inspects=inspect_by_ep, rates=dict(zip(rate_eps, rate_results)),
        )
        extras = {}
        if wal is not None and wal_target is not None:
            extras.update(wal=wal, wal_member=wal_target.id)
        if watchers is not None:
            extras["watchers"] = tuple(w for ws in watchers if ws for w in ws)
        if streams is not None:
            # Statuses streamed while the round was out first, stamped by when
            # they were built, so the round's fold (which lays them over its
            # answers) does not tell their changes as learned now.
            self._apply_streams()
        self._fold(lambda state: self._round_step(state, known, results, dict(zip(fault_eps, fault_views)),
                                                  extras, now))
        if streams is not None:
            self._apply_streams()   # leader events that came before the members were known

    def _round_step(self, state: ClusterState, known: list, results: merge.RoundResults, fault_views: dict,
                    extras: dict, now: float) -> tuple[ClusterState, list[TimelineLine]]:
        """A poll round's answers made into the state as it is now (timeline, live
        watch and anything else folded in meanwhile are kept: build starts from it)."""
        new = merge.build(state, known, self._endpoint_of, results, now)
        # The compacted revision only grows: a probe sent before a compaction
        # the console made meanwhile must not take it back.
        new = dataclasses.replace(new, compact_revision=max(new.compact_revision, state.compact_revision),
                                  **extras)
        new = self._with_faults(new, fault_views)
        if "watchers" in extras:
            new = dataclasses.replace(new, watchers=_marked(new.watchers, new))
        # Streamed statuses that arrived meanwhile are newer than its answers.
        if self._streams is not None:
            new = merge.overlay(new, self._streams.latest)
        served = {ep: r for ep, r in results.rates.items() if r is not None}
        new = dataclasses.replace(new, rates=rates.append(
            state.rates, rates.sample(state, new, served, self._last_rates, latency=self._latency)))
        self._last_rates.update(served)
        # Stamped when learned, as every line the console sees itself: the
        # answers arrived between the round's start and now, and a status
        # stream folded in meanwhile has a smaller sequence number.
        return new, timeline.changes(state, new, self._clock())

    def _with_faults(self, state: ClusterState, views: dict) -> ClusterState:
        """Keep each member's fault rules (the link matrix reads them), mark
        members cut off from a majority as partitioned, name every cut in the
        errors column; note whether any member serves Fault.

        A partition is told to both sides, so the majority side has cuts too:
        only a member that no longer talks both ways with a quorum (itself
        included) is "partitioned"; the others stay up, their cuts listed. A
        one-way cut counts: a leader whose messages to its followers are lost
        is partitioned even though it still hears them."""
        by_id = {m.id: views.get(m.endpoint) for m in state.members}
        # A member that did not answer has no rules known (its links say so);
        # the other end of a cut link still shows the cut.
        kept = tuple((mid, v) for mid, v in by_id.items() if isinstance(v, faults.FaultView))
        state = dataclasses.replace(state, faults=tuple(sorted(kept, key=lambda kv: kv[0])))
        matrix = links.matrix(state)
        label = {m.id: m.label for m in state.members}
        members = []
        for m in state.members:
            view = by_id.get(m.id)
            if isinstance(view, faults.FaultView) and m.health == "up" and view.active:
                others = [o for o in state.members if o.id != m.id and o.id > 0]
                both = [o.id for o in others if view.rule(o.id, faults.OUT).cut and view.rule(o.id, faults.IN).cut]
                out = [o.id for o in others if view.rule(o.id, faults.OUT).cut and o.id not in both]
                inn = [o.id for o in others if view.rule(o.id, faults.IN).cut and o.id not in both]
                notes = []
                for ids, text in ((both, "cut from"), (out, "sends nothing to"), (inn, "hears nothing from")):
                    if ids:
                        notes.append(f"{text} " + ",".join(sorted(label[i] for i in ids)))
                if view.drop:
                    notes.append(f"dropping {view.drop:.0%}")
                if view.delay_ms:
                    notes.append(f"delaying {view.delay_ms} ms")
                cut_off = (both or out or inn) and not links.quorum_reached(state, m.id, matrix)
                m = dataclasses.replace(m, errors=(*m.errors, *notes),
                                        health="partitioned" if cut_off else m.health)
            members.append(m)
        capable = [self._fault_capable[m.endpoint] for m in members if m.endpoint in self._fault_capable]
        return dataclasses.replace(state, members=tuple(members),
                                   fault=any(capable) if capable else state.fault)

    def _extras_wanted(self, wal_member: int, now: float) -> tuple[Member | None, list[Member] | None]:
        """Whose WAL tail this round reads (the selected member, else the leader)
        and whose watchers (every WATCHERS_EVERY seconds; None: not this round),
        from Inspect, where served."""
        state = self._state
        if not state.inspect:
            return None, None
        target = state.member(wal_member) or state.leader
        if target is None or not target.inspect or target.health != "up":
            target = None
        if now - self._last_watchers < WATCHERS_EVERY:
            return target, None
        self._last_watchers = now
        return target, [m for m in state.members if m.inspect and m.health == "up"]

    def _inspect_wanted(self, endpoint: str) -> bool:
        member = next((m for m in self._state.members if m.endpoint == endpoint), None)
        return member is None or member.inspect is not False

    def _inspect_known(self, endpoint: str) -> bool:
        member = next((m for m in self._state.members if m.endpoint == endpoint), None)
        return member is not None and member.inspect is True and member.health in ("up", "partitioned")

    # ----------------------------------------------------------------- follow

    async def follow(self) -> AsyncIterator[ClusterState]:
        """Yield the state whenever a member's status stream (Inspect.WatchStatus)
        changed it: elections, term and leader changes, commit/apply progress,
        a member's stream breaking. Runs until cancelled; with no member
        serving Inspect (etcd) it just never yields. Polls keep running
        alongside for everything else (db size, faults, members)."""
        if self._streams is None:
            self._streams = StatusStreams(self._conns, self._stream_changed.set)
            self._streams.ensure(ep for ep in self._conns.endpoints if self._inspect_wanted(ep))
        while True:
            await self._stream_changed.wait()
            self._stream_changed.clear()
            if self._apply_streams():
                yield self._state
            await asyncio.sleep(FOLLOW_GAP)  # coalesce bursts into one screen update

    def _apply_streams(self) -> bool:
        streams = self._streams
        if streams is None:
            return False
        if not self._state.members:
            streams.take_built()    # told when members are known: by then, as learned
            return False
        changed = False

        def step(old: ClusterState) -> tuple[ClusterState, list[TimelineLine]]:
            nonlocal changed
            new = old
            broken = streams.take_broken()
            if broken:
                new = dataclasses.replace(new, members=tuple(
                    dataclasses.replace(m, health="down", role="unknown", errors=(broken[m.endpoint],))
                    if m.endpoint in broken and m.health in ("up", "partitioned") else m
                    for m in new.members))
                new = merge.summarise(new, list(new.members), {})
            new = merge.overlay(new, streams.latest)
            notes = self._leader_notes(streams.take_notes(), new)
            changed = new is not old or bool(notes)
            # The members' own notes first, in the order they happened (several
            # members' streams can deliver in one batch): an election they report
            # wins over the same change seen in the numbers.
            notes.sort(key=lambda e: e.at)
            # What the numbers show was true when the members built them: a
            # candidate's "no leader" goes below the election that ended it even
            # when the console learned it later. The earliest of the batch, so a
            # status built after the election never lifts it above. A broken
            # stream has no such time: then when learned.
            built = [t for t in streams.take_built() if t > 0]
            if broken or not built:
                seen = timeline.changes(old, new, self._clock())
            else:
                seen = [dataclasses.replace(e, reported=True)
                        for e in timeline.changes(old, new, min(built))]
            return new, (notes + seen) if changed else []

        self._fold(step)
        return changed

    def _leader_notes(self, notes: list[LeaderNote], state: ClusterState) -> list[TimelineLine]:
        """Members' leader events as timeline lines (an election once, not once per member)."""
        out = []
        # Until the member list names them (a fresh cluster), members are shown
        # by endpoint or ID; their statuses already carry the names they go by.
        views = self._streams.latest if self._streams is not None else {}
        said = {ep: v.name for ep, v in views.items() if v.name}
        name_of = {v.member_id: v.name for v in views.values() if v.member_id and v.name}
        label_of = {}
        for m in state.members:
            listed = m.name and m.name != m.endpoint      # not a stand-in's endpoint
            label_of[m.endpoint] = m.name if listed else said.get(m.endpoint, m.label)
            if listed or m.id not in name_of:
                name_of[m.id] = label_of[m.endpoint]
        for n in notes:
            who = label_of.get(n.endpoint, n.endpoint)
            if n.kind == "elected":
                leader = name_of.get(n.leader_id, f"{n.leader_id:x}")
                out.append(TimelineLine(n.at, "leader", f"leader is now {leader} (term {n.term})",
                                         key=(n.leader_id, n.term), reported=True))
                continue
            key = (n.endpoint, n.kind, n.term, n.at)
            if key in self._seen_notes:
                continue
            self._seen_notes.add(key)
            if n.kind == "campaign":
                out.append(TimelineLine(n.at, "election", f"{who} campaigns for term {n.term} ({n.detail})",
                                        reported=True))
            elif n.kind == "lost":
                out.append(TimelineLine(n.at, "election", f"{who} lost its leader (term {n.term})",
                                        reported=True))
            elif n.kind == "transfer":
                target = name_of.get(n.leader_id, f"{n.leader_id:x}")
                out.append(TimelineLine(n.at, "leader", f"{who} hands leadership to {target} (term {n.term})",
                                        reported=True))
        return out

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

    async def answers(self, member_id: int, deadline: float = 1.0) -> bool:
        """Does this member answer Status now (and as itself)? Host mode asks
        before and after restarting a process: what runs is what answers."""
        m = self._member(member_id)
        if m is None or not m.endpoint:
            return False
        st = await poll.status(self._conns.get(m.endpoint), deadline)
        return st.ok and (st.member_id == m.id or m.id <= 0)

    async def status_of(self, member_id: int, deadline: float = 1.0) -> poll.StatusResult | None:
        """One member's Status now (guided maintenance waits on it); None if it is not known."""
        m = self._member(member_id)
        if m is None or not m.endpoint:
            return None
        return await poll.status(self._conns.get(m.endpoint), deadline)

    async def current_revision(self) -> int | None:
        """The cluster's revision now, from the preferred member's Status (None: no answer)."""
        st = await poll.status(self._preferred_stubs())
        return st.revision if st.ok else None

    # ----------------------------------------------------------------- actions

    async def put(self, key: str, value: str, lease_ttl: int | None = None) -> ActionResult:
        return self._record(await actions.put(self._preferred_stubs(), key, value, lease_ttl))

    async def delete(self, key: str, prefix: bool = False) -> ActionResult:
        return self._record(await actions.delete(self._preferred_stubs(), key, prefix))

    async def get(self, key: str, revision: int = 0, prefix: bool = False) -> ActionResult:
        return self._record(await actions.get(self._preferred_stubs(), key, revision, prefix), "read")

    async def count(self, key: str, prefix: bool = False) -> ActionResult:
        """How many keys a delete would take (asked before it). Not put in the timeline."""
        return await actions.count(self._preferred_stubs(), key, prefix)

    async def history(self, key: str) -> ActionResult:
        return await actions.history(self._preferred_stubs(), key)

    async def list_keys(self, prefix: str = "", limit: int = 1000, after: str | None = None,
                        before: str | None = None, last: bool = False) -> ActionResult:
        """One page: data = a KeyPage (see actions.list_keys). Not put in the timeline (it is a refresh)."""
        return await actions.list_keys(self._preferred_stubs(), prefix, limit, after, before, last)

    async def txn(self, compares: list, then: list, otherwise: list) -> ActionResult:
        """Run a txn (raftui/source/txn.py); data = a TxnOutcome naming each compare's
        actual value and which one failed. ok: the compares held (then-branch ran)."""
        outcome = await txn.run(self._preferred_stubs(), compares, then, otherwise)
        if isinstance(outcome, str):
            return self._record(ActionResult.fail(f"txn: {outcome}"))
        return self._record(ActionResult(outcome.succeeded, outcome.summary(), outcome), "txn")

    async def revision_view(self, key: str, prefix: bool, revision: int) -> "scrub.RevisionView":
        """A key or prefix at one revision and what that revision changed in it
        (the revision scrubber; not put in the timeline: it is browsing)."""
        return await scrub.revision_view(self._preferred_stubs(), key, prefix, revision)

    async def scrub_change(self, key: str, prefix: bool, revision: int, forward: bool) -> int | str:
        """The next (or previous) revision that changed the key or prefix, from `revision`;
        a string when there is none (the scrubber's { and })."""
        stubs = self._preferred_stubs()
        if forward:
            head = await self.current_revision() or self._state.revision
            return await scrub.next_change(stubs, key, prefix, revision, head)
        return await scrub.previous_change(stubs, key, prefix, revision, self._state.compact_revision)

    async def wal_page(self, member_id: int, before_index: int, limit: int = WAL_PAGE) -> ActionResult:
        """Older WAL entries of one member (Inspect.WalTail with before_index):
        data = (entries ascending, the member's first index). Not put in the
        timeline (it is scrolling)."""
        m = self._member(member_id)
        if m is None or not m.endpoint:
            return ActionResult.fail("WAL page: no such member")
        got = await poll.wal_page(self._conns.get(m.endpoint), before_index, limit)
        if got is None:
            return ActionResult.fail(f"WAL page from {m.label}: no answer")
        return ActionResult(True, f"{len(got[0])} WAL entries before {before_index}", got)

    async def compact(self, revision: int) -> ActionResult:
        result = self._record(await actions.compact(self._preferred_stubs(), revision), "compact")
        if result.ok:
            self._fold(lambda state: (dataclasses.replace(
                state, compact_revision=max(state.compact_revision, revision)), []))
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
        names = {m.id: m.label for m in self._state.members}
        return self._record(await actions.alarm_list(self._preferred_stubs(), names), "alarm")

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

    def _end(self, member_id: int) -> faults.End | None:
        m = self._member(member_id)
        if m is None or not m.endpoint or m.id <= 0:
            return None
        return faults.End(self._conns.get(m.endpoint), m.id, dict(self._state.faults).get(m.id))

    def _link_ends(self, src_id: int, dst_id: int) -> tuple[faults.End, faults.End, str] | ActionResult:
        src, dst = self._end(src_id), self._end(dst_id)
        if src is None or dst is None or src_id == dst_id:
            return ActionResult.fail("link: no such pair of members")
        return src, dst, f"{self._member(src_id).label} → {self._member(dst_id).label}"

    async def link_cut(self, src_id: int, dst_id: int, cut: bool) -> ActionResult:
        """Cut (cut=True) or open the one-way link src -> dst, told to both ends."""
        ends = self._link_ends(src_id, dst_id)
        if isinstance(ends, ActionResult):
            return self._record(ends)
        src, dst, label = ends
        members = [m.id for m in self._state.members if m.id > 0]
        return self._record(await faults.link_cut(src, dst, cut, label, members), "fault")

    async def link_drop_delay(self, src_id: int, dst_id: int, drop_percent: int | None = None,
                              delay_ms: int | None = None) -> ActionResult:
        ends = self._link_ends(src_id, dst_id)
        if isinstance(ends, ActionResult):
            return self._record(ends)
        src, dst, label = ends
        return self._record(await faults.link_drop_delay(src, dst, label, drop_percent, delay_ms), "fault")

    async def refresh_faults(self) -> ClusterState:
        """Every member's fault rules read again now (after an edit in the link
        matrix: the matrix shows what the members say, not what was asked)."""
        eps = [m.endpoint for m in self._state.members if m.endpoint and self._fault_capable.get(m.endpoint)]
        got = await asyncio.gather(*(faults.status(self._conns.get(ep), poll.POLL_DEADLINE) for ep in eps))
        fresh = {m.id: v for m in self._state.members for ep, v in zip(eps, got)
                 if ep == m.endpoint and isinstance(v, faults.FaultView)}

        def step(state: ClusterState) -> tuple[ClusterState, list[TimelineLine]]:
            # Only the rules: health and the errors column follow at the next poll round.
            merged = {**dict(state.faults), **fresh}
            return dataclasses.replace(state, faults=tuple(sorted(merged.items()))), []

        self._fold(step)
        return self._state

    # ------------------------------------------------------------------ watch

    async def watch(self, key: str, prefix: bool = False,
                    start_revision: int = 0) -> AsyncIterator[ClusterState]:
        """Open a live watch; yields the new state after every batch of events.

        Only one live watch at a time: the caller cancels the iteration to stop.
        A stream the member ends (it lost its leader, it went down) is opened
        again, on the preferred member then, from the revision after the last
        one it was complete up to, so no event is lost or shown twice (after
        a compaction past it: from the current revision)."""
        live = LiveWatch(key=key, prefix=prefix)
        self._set_watch(live)
        what = f"{key}{'*' if prefix else ''}"
        self.note(f"watch opened on {what}", kind="watch")
        resume = start_revision
        pause = WATCH_REOPEN_MIN
        while True:
            stubs = self._preferred_stubs()
            live = dataclasses.replace(live, endpoint=stubs.endpoint)
            async for batch in watch_stream.stream(stubs, key, prefix, resume):
                marks = [e.mod_revision for e in batch if e.type == watch_stream.REVISION]
                batch = [e for e in batch if e.type != watch_stream.REVISION]
                changes: dict = {}
                if marks:
                    changes["revision"] = max(live.revision, *marks)
                    resume = max(resume, max(marks) + 1)
                for e in batch:
                    if e.type in ("PUT", "DELETE"):
                        resume = max(resume, e.mod_revision + 1)
                    elif e.type == "COMPACTED":
                        resume = 0
                if batch:
                    changes["events"] = (live.events + tuple(batch))[-WATCH_EVENTS_KEPT:]
                if batch and batch[0].type == "CREATED":
                    changes["status"] = "watching"
                    changes["watch_id"] = _watch_id(batch[0].value)
                    pause = WATCH_REOPEN_MIN
                if batch and batch[-1].type == "CANCELED":
                    changes["status"] = f"closed: {batch[-1].value}; reopening in {pause:g}s"
                    self.note(f"watch on {what} closed: {batch[-1].value}; reopening", ok=False, kind="watch")
                live = dataclasses.replace(live, **changes)
                self._set_watch(live)
                yield self._state
            await asyncio.sleep(pause)   # the pace of reopening, not a wait for an event
            pause = min(pause * 2, WATCH_REOPEN_MAX)

    def _set_watch(self, live: LiveWatch | None) -> None:
        self._fold(lambda state: (dataclasses.replace(state, watch=live), []))

    def close_watch(self) -> None:
        if self._state.watch is not None:
            self._set_watch(None)


async def _none() -> None:
    return None


def _watch_id(created_text: str) -> int:
    """The id in a CREATED marker's text ("watch 3 on host:port")."""
    parts = created_text.split()
    return int(parts[1]) if len(parts) > 1 and parts[1].lstrip("-").isdigit() else -1


def _marked(watchers: tuple, state: ClusterState) -> tuple:
    """The members' watchers with this console's own live watch marked: the one
    on the member it was opened on, with its watch id, key and range."""
    live = state.watch
    if live is None or live.watch_id < 0:
        return watchers
    member = next((m.label for m in state.members if m.endpoint == live.endpoint), None)
    end = actions.prefix_end(encode(live.key)) if live.prefix else b""
    out = []
    for w in watchers:
        mine = (w.member == member and w.watch_id == live.watch_id and w.key == live.key
                and encode(w.range_end) == end)
        out.append(dataclasses.replace(w, console=True) if mine and not w.console else w)
    return tuple(out)
