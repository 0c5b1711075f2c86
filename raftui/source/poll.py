"""One poll round's raw calls: Status on every endpoint, MemberList, the
compact revision, and Inspect (RaftStatus, Rates, WalTail, Watchers) when
the member has it.

Alarms are read from Status.errors (etcd puts every active alarm there, as
`memberID:123 alarm:NOSPACE `), not with Alarm(GET): etcd -- and raftnode,
faithfully -- sends an Alarm GET through raft, so polling it would put a log
entry in every member's WAL several times a second.

Each call has its own deadline (POLL_DEADLINE) and all run concurrently, so a
round takes at most about one deadline however many members are down. The
results are plain dataclasses; `merge.py` turns them into a ClusterState.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re
import time

import grpc

from engine.proto import rpc_pb2

from . import errors
from .codec import decode
from .connection import Stubs
from .model import PeerProgress, RaftConfig, WalEntry, WatcherInfo

POLL_DEADLINE = 0.8   # seconds; a silent member is marked down after this


@dataclasses.dataclass(frozen=True)
class StatusResult:
    endpoint: str
    ok: bool
    error: str = ""
    member_id: int = 0
    cluster_id: int = 0
    leader_id: int = 0
    term: int = 0
    commit_index: int = 0
    applied_index: int = 0
    db_size: int = 0
    db_size_in_use: int = 0
    revision: int = 0
    is_learner: bool = False
    version: str = ""
    errors: tuple[str, ...] = ()                    # without the alarms
    alarms: dict[int, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # the cluster's


@dataclasses.dataclass(frozen=True)
class MemberInfo:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


_ALARM = re.compile(r"memberID:(\d+) alarm:([A-Z_]+)")


def alarms_from_errors(errors_: tuple[str, ...]) -> tuple[dict[int, tuple[str, ...]], tuple[str, ...]]:
    """Split Status.errors into ({member id: alarms}, the other errors)."""
    alarms: dict[int, list[str]] = {}
    rest = []
    for e in errors_:
        m = _ALARM.search(e)
        if m:
            alarms.setdefault(int(m.group(1)), []).append(m.group(2))
        else:
            rest.append(e)
    return {k: tuple(v) for k, v in alarms.items()}, tuple(rest)


@dataclasses.dataclass(frozen=True)
class InspectResult:
    """Inspect.RaftStatus of one member (polled or streamed); `available`
    False means UNIMPLEMENTED (etcd)."""
    endpoint: str
    available: bool
    role: str = "unknown"
    last_index: int | None = None
    progress: tuple[PeerProgress, ...] = ()
    member_id: int = 0
    term: int = 0
    leader_id: int = 0
    commit_index: int = 0
    applied_index: int = 0
    loop_lag_ms: int | None = None     # None: a member whose Inspect has no loop_lag_ms field
    config: RaftConfig | None = None   # voters (and C_old while joint); None: not reported
    at: float = 0.0                    # the member's wall clock when it built the answer; 0: not sent
    name: str = ""                     # the member's --name, as it says itself


@dataclasses.dataclass(frozen=True)
class RatesResult:
    """Inspect.Rates of one member: counters, and their per-second rates over the member's window."""
    per_second: dict[str, float]
    apply_lag: int
    window: float
    totals: dict[str, int] = dataclasses.field(default_factory=dict)
    at: float = 0.0                  # time.monotonic() when the answer came


async def status(stubs: Stubs, deadline: float = POLL_DEADLINE) -> StatusResult:
    try:
        resp = await stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        return StatusResult(endpoint=stubs.endpoint, ok=False, error=errors.describe(exc))
    h = resp.header
    alarms, other = alarms_from_errors(tuple(resp.errors))
    return StatusResult(
        endpoint=stubs.endpoint, ok=True, member_id=h.member_id, cluster_id=h.cluster_id,
        leader_id=resp.leader, term=resp.raftTerm, commit_index=resp.raftIndex,
        applied_index=resp.raftAppliedIndex, db_size=resp.dbSize, db_size_in_use=resp.dbSizeInUse,
        revision=h.revision, is_learner=resp.isLearner, version=resp.version,
        errors=other, alarms=alarms,
    )


async def member_list(stubs: Stubs, deadline: float = POLL_DEADLINE) -> list[MemberInfo] | None:
    try:
        resp = await stubs.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=deadline)
    except grpc.aio.AioRpcError:
        return None
    return [
        MemberInfo(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)
        for m in resp.members
    ]


async def compact_revision(stubs: Stubs, deadline: float = POLL_DEADLINE) -> int | None:
    """The store's compacted revision (0 if never compacted), or None if unknown.

    etcd's API has no call for it. A Range at revision 1 tells whether
    anything was compacted; if so, a watch from revision 1 is cancelled by the
    server (its sync loop runs every 100 ms) with `compact_revision` set.
    """
    try:
        await stubs.kv.Range(rpc_pb2.RangeRequest(key=b"\x00", revision=1, count_only=True),
                             timeout=deadline)
        return 0
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.OUT_OF_RANGE or "compacted" not in (exc.details() or ""):
            return None
    req = rpc_pb2.WatchRequest(
        create_request=rpc_pb2.WatchCreateRequest(key=b"\x00", start_revision=1)
    )
    call = stubs.watch.Watch(timeout=deadline)
    try:
        await call.write(req)
        async for resp in call:
            if resp.compact_revision:
                return resp.compact_revision
            if resp.canceled:
                return None
        return None
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        return None
    finally:
        call.cancel()


_ROLES = {1: "follower", 2: "candidate", 3: "candidate", 4: "leader", 5: "learner"}
_PROGRESS = {1: "probe", 2: "replicate", 3: "snapshot"}


async def inspect_status(stubs: Stubs, deadline: float = POLL_DEADLINE) -> InspectResult | None:
    """Inspect.RaftStatus; None on a transport failure (availability unknown)."""
    from engine.proto import inspect_pb2

    try:
        resp = await stubs.inspect.RaftStatus(inspect_pb2.RaftStatusRequest(), timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        if errors.no_inspect(exc):
            return InspectResult(stubs.endpoint, available=False)
        return None
    return inspect_result(stubs.endpoint, resp)


def inspect_result(endpoint: str, resp) -> InspectResult:
    """A RaftStatusResponse (from RaftStatus or a WatchStatus event) as an InspectResult."""
    progress = tuple(
        PeerProgress(p.member_id, p.match, p.next, _PROGRESS.get(p.state, "?"), p.inflight,
                     p.recent_active, p.paused)
        for p in resp.progress
    )
    return InspectResult(endpoint, True, _ROLES.get(resp.role, "unknown"), resp.last_index, progress,
                         member_id=resp.header.member_id, term=resp.term, leader_id=resp.leader_id,
                         commit_index=resp.commit_index, applied_index=resp.applied_index,
                         loop_lag_ms=_loop_lag(resp), config=_config(resp),
                         at=resp.header.unix_nanos / 1e9, name=resp.header.name)


def _config(resp) -> RaftConfig | None:
    """The configuration a RaftStatus reports; a member built before the
    joint-configuration fields reports voters only."""
    if not resp.voters:
        return None
    fields = resp.DESCRIPTOR.fields_by_name
    joint = "voters_outgoing" in fields
    return RaftConfig(tuple(resp.voters), tuple(resp.voters_outgoing) if joint else (),
                      tuple(resp.learners_next) if joint else (), bool(resp.auto_leave) if joint else False)


def _loop_lag(resp) -> int | None:
    """Inspect's loop_lag_ms (raftnode since issue 8); None from a member built without it."""
    try:
        return int(resp.loop_lag_ms) if "loop_lag_ms" in resp.DESCRIPTOR.fields_by_name else None
    except (AttributeError, TypeError, ValueError):
        return None


async def inspect_rates(stubs: Stubs, deadline: float = POLL_DEADLINE) -> RatesResult | None:
    from engine.proto import inspect_pb2

    try:
        resp = await stubs.inspect.Rates(inspect_pb2.RatesRequest(), timeout=deadline)
    except grpc.aio.AioRpcError:
        return None
    return RatesResult({r.name: r.per_second for r in resp.rates}, resp.apply_lag, resp.window_seconds,
                       {r.name: r.total for r in resp.rates}, time.monotonic())


async def wal_tail(stubs: Stubs, limit: int = 200, deadline: float = POLL_DEADLINE) -> tuple[WalEntry, ...] | None:
    page = await wal_page(stubs, 0, limit, deadline)
    return None if page is None else page[0]


async def wal_page(stubs: Stubs, before_index: int, limit: int,
                   deadline: float = POLL_DEADLINE) -> tuple[tuple[WalEntry, ...], int] | None:
    """Entries with index < before_index (0: the newest), ascending, and the
    member's first (oldest still available) index; None on failure."""
    from engine.proto import inspect_pb2

    try:
        resp = await stubs.inspect.WalTail(inspect_pb2.WalTailRequest(limit=limit, before_index=before_index),
                                           timeout=deadline)
    except grpc.aio.AioRpcError:
        return None
    entries = tuple(
        WalEntry(e.index, e.term, "conf change" if e.type == 1 else "normal", e.text,
                 e.committed, e.applied)
        for e in resp.entries
    )
    return entries, resp.first_index


async def watchers(stubs: Stubs, member: str, deadline: float = POLL_DEADLINE) -> tuple[WatcherInfo, ...] | None:
    from engine.proto import inspect_pb2

    try:
        resp = await stubs.inspect.Watchers(inspect_pb2.WatchersRequest(limit=500), timeout=deadline)
    except grpc.aio.AioRpcError:
        return None
    head = resp.current_revision
    return tuple(
        WatcherInfo(member, w.watch_id, _text(w.key), _text(w.range_end), w.start_revision,
                    w.synced, w.events_sent,
                    # A synced watcher has every revision (its next_revision moves only with
                    # its own events); an unsynced one is catching up from next_revision.
                    behind=0 if w.synced else max(0, head - w.next_revision + 1),
                    pending=getattr(w, "pending_events", 0), next_revision=w.next_revision, peer=w.peer)
        for w in resp.watchers
    )


def _text(b: bytes) -> str:
    return decode(b)
