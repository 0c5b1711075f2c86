"""raftuipb.Inspect: what the console sees inside a member that etcd's API
does not show (engine/proto/inspect.proto is the contract; read it).

Everything is answered from in-memory state on the loop's thread, never by
reading WAL files or scanning the store, and never through raft: a member
without a leader answers normally. With auth on, only root may ask.
"""
from __future__ import annotations

import asyncio
import time

import grpc

from engine.proto import inspect_pb2 as ipb
from engine.proto import inspect_pb2_grpc
from engine.server.kvserver import KVServer

from .auth import require_root
from .entry_text import entry_text
from .errors import abort
from .stats import Counters
from .watch import WatchRegistry

DEFAULT_WAL_LIMIT = 50
MAX_WAL_LIMIT = 5000
DEFAULT_HISTORY_LIMIT = 50
DEFAULT_STATUS_INTERVAL_MS = 100
STATUS_POLL = 0.02      # how often a WatchStatus stream looks for a change
MAX_TEXT = 100          # characters of an entry's description

_ROLES = {
    "follower": ipb.FOLLOWER, "pre-candidate": ipb.PRE_CANDIDATE,
    "candidate": ipb.CANDIDATE, "leader": ipb.LEADER,
}
_PROGRESS = {"probe": ipb.PROBE, "replicate": ipb.REPLICATE, "snapshot": ipb.SNAPSHOT}

_LEADER_KINDS = {"elected": ipb.ELECTED, "leader-lost": ipb.LEADER_LOST,
                 "campaign": ipb.CAMPAIGN, "transfer": ipb.TRANSFER_STARTED}


def _ms(seconds: float) -> int:
    return max(0, min(int(seconds * 1000), 0xFFFF_FFFF))


def leader_event(ev) -> ipb.LeaderEvent | None:
    """A node TimelineEvent as a LeaderEvent, or None if it is not one."""
    kind = _LEADER_KINDS.get(ev.kind)
    if kind is None:
        return None
    detail = ev.text
    if kind == ipb.CAMPAIGN:
        detail = "pre-vote" if ev.text.startswith("pre-candidate") else "election"
    return ipb.LeaderEvent(unix_nanos=int(ev.at * 1e9), kind=kind, term=ev.term,
                           leader_id=ev.leader, detail=detail)


class InspectServicer(inspect_pb2_grpc.InspectServicer):
    def __init__(self, server: KVServer, counters: Counters, registry: WatchRegistry) -> None:
        self.server = server
        self.counters = counters
        self.registry = registry

    # -- helpers --------------------------------------------------------------------

    async def _check_serving(self, context) -> None:
        """Serving, and with auth on, asked by root (the WAL tail shows values)."""
        if not self.server.serving:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "raftnode: member is not serving")
        try:
            await require_root(self.server, context)
        except Exception as e:
            await abort(context, e)

    def _header(self) -> ipb.InspectHeader:
        s = self.server
        return ipb.InspectHeader(cluster_id=s.cluster_id, member_id=s.member_id, name=s.name,
                                 raft_term=s.term, unix_nanos=time.time_ns())

    def _status(self) -> ipb.RaftStatusResponse:
        server = self.server
        st = server.raft_status()
        snap = server.snapshot_metadata()
        role = ipb.LEARNER if st.is_learner else _ROLES.get(st.state, ipb.ROLE_UNKNOWN)
        out = ipb.RaftStatusResponse(
            header=self._header(), role=role, term=st.term, vote=st.vote, leader_id=st.lead,
            commit_index=st.commit, applied_index=server.applied_index, last_index=st.last_index,
            first_index=st.first_index, snapshot_index=snap.index, snapshot_term=snap.term,
            voters=sorted(st.voters), learners=sorted(st.learners),
            voters_outgoing=sorted(st.voters_outgoing), learners_next=sorted(st.learners_next),
            auto_leave=st.auto_leave,
            lead_transferee=st.lead_transferee, persisted_index=server.persisted_index,
            loop_lag_ms=_ms(server.loop_lag), loop_lag_max_ms=_ms(server.loop_lag_max))
        for mid, p in sorted(st.progress.items()):
            pr = server.progress(mid)
            out.progress.add(
                member_id=mid, match=p.match, next=p.next, state=_PROGRESS.get(p.state, 0),
                inflight=p.inflight, recent_active=p.recent_active, is_learner=p.is_learner,
                paused=bool(pr is not None and mid != server.member_id and pr.is_paused()),
                pending_snapshot=getattr(pr, "pending_snapshot", 0) if pr is not None else 0)
        return out

    def _leader_events(self, limit: int = 0) -> list[ipb.LeaderEvent]:
        evs = [le for le in map(leader_event, self.server.events()) if le is not None]
        return evs[-limit:] if limit else evs

    # -- RPCs ---------------------------------------------------------------------------

    async def RaftStatus(self, request, context):
        await self._check_serving(context)
        return self._status()

    async def WalTail(self, request: ipb.WalTailRequest, context):
        await self._check_serving(context)
        server = self.server
        first, last = server.log_bounds()
        commit, applied = server.committed_index, server.applied_index
        persisted = server.persisted_index
        limit = min(request.limit or DEFAULT_WAL_LIMIT, MAX_WAL_LIMIT)
        hi = last + 1
        if request.before_index:
            hi = min(hi, request.before_index)
        lo = max(first, hi - limit)
        out = ipb.WalTailResponse(header=self._header(), first_index=first, last_index=last,
                                  commit_index=commit, applied_index=applied)
        if lo < hi:
            for e in server.entries(lo, hi):
                text = entry_text(e)
                if len(text) > MAX_TEXT:
                    text = text[:MAX_TEXT - 1] + "…"
                out.entries.add(index=e.index, term=e.term, type=e.type, text=text,
                                size=len(e.data), committed=e.index <= commit,
                                applied=e.index <= applied, persisted=e.index <= persisted)
        return out

    async def Watchers(self, request: ipb.WatchersRequest, context):
        await self._check_serving(context)
        owners = self.registry.by_hub_id()
        stats = self.server.watch_hub.stats()
        out = ipb.WatchersResponse(header=self._header(), total=len(stats),
                                   current_revision=self.server.current_revision)
        for s in stats[:request.limit] if request.limit else stats:
            owner = owners.get(s.id)
            info = out.watchers.add(key=s.key, range_end=s.range_end, start_revision=s.start_revision,
                                    next_revision=s.next_revision, synced=s.synced,
                                    events_sent=s.events_sent, pending_events=s.buffered)
            if owner is None:
                info.watch_id = s.id
                continue
            stream, entry = owner
            info.watch_id = entry.watch_id
            info.stream_id = stream.stream_id
            info.peer = stream.peer
            info.prev_kv = entry.prev_kv
            info.progress_notify = entry.progress_notify
            info.filters.extend(entry.filters)
        return out

    async def LeaderHistory(self, request: ipb.LeaderHistoryRequest, context):
        await self._check_serving(context)
        return ipb.LeaderHistoryResponse(
            header=self._header(), events=self._leader_events(request.limit or DEFAULT_HISTORY_LIMIT))

    async def Rates(self, request, context):
        await self._check_serving(context)
        server = self.server
        commit, applied = server.committed_index, server.applied_index
        totals = dict(self.counters.totals)
        totals.update(server.request_totals(), commit=commit)
        for name in ("put", "delete", "txn", "range", "compact", "watch_event"):
            totals.setdefault(name, 0)
        window, rates = self.counters.rates(totals)
        out = ipb.RatesResponse(header=self._header(), window_seconds=window,
                                apply_lag=max(0, commit - applied))
        for name in sorted(totals):
            out.rates.add(name=name, total=totals[name], per_second=rates[name])
        return out

    async def WatchStatus(self, request: ipb.WatchStatusRequest, context):
        await self._check_serving(context)
        interval = (request.min_interval_ms or DEFAULT_STATUS_INTERVAL_MS) / 1000
        last_key = None
        seen = None  # the newest node TimelineEvent already reported
        while True:
            if self.server.stopped:
                return
            status = self._status()
            key = (status.role, status.term, status.vote, status.leader_id,
                   status.commit_index, status.applied_index, status.last_index,
                   status.loop_lag_ms // 100)  # a lag change of 100 ms is news too
            events = self.server.events()
            fresh = events
            if seen is not None:
                for i in range(len(events) - 1, -1, -1):
                    if events[i] is seen:
                        fresh = events[i + 1:]
                        break
            leader_events = [le for le in map(leader_event, fresh) if le is not None]
            if key != last_key or leader_events:
                if events:
                    seen = events[-1]
                last_key = key
                yield ipb.StatusEvent(status=status, leader_events=leader_events)
                await asyncio.sleep(interval)  # coalesce what happens meanwhile
            else:
                await asyncio.sleep(min(interval, STATUS_POLL))
