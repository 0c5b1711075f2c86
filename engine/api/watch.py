"""etcd's Watch service: many watchers on one bidi stream.

Per stream (etcd's serverWatchStream, v3rpc/watch.go at v3.4.23):
  * a reader task takes create / cancel / progress requests;
  * the handler itself is the writer: it sends control answers (created,
    canceled, progress) and the events the hub buffered for this stream's
    watchers. The hub calls each watcher's notify callback from inside
    apply; the callback only marks the watcher dirty and sets an Event, so
    apply never waits for a client.
  * Watch ids are per stream: the client's, or the lowest free one counting
    from 0 (etcd's AutoWatchID). They map to the hub's own ids.
  * A watcher's events are sent only after its "created" answer.
  * progress_request (stream-wide, watch id -1): answered only once every
    watcher of the stream is synced and its buffered events went out, so a
    progress revision R never overtakes an event <= R (etcd #15220, fixed in
    3.4.25: RequestProgressAll / deferProgress). Until then it is deferred
    and re-checked after every send; requests arriving meanwhile fold into
    the one pending answer. A stream without watchers is answered at once.
  * progress_notify: every interval (etcd: 10 min + up to 10 % jitter) a
    watcher that got no events since the last tick and is synced is sent an
    empty response at the current revision.
  * `hasleader: true` metadata: refused at start when there is no leader,
    and ended with "etcdserver: no leader" after the member has had no
    leader for 3 election timeouts (etcd's monitorLeader) -- as a status on
    the stream, like etcd; clientv3 then hands the watch channel a canceled
    response with that error, which etcdctl prints.
When the stream ends, all its hub watchers are cancelled.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import random
from dataclasses import dataclass, field

import grpc

from engine.auth import errors as auth_errors
from engine.auth.tokens import AuthInfo
from engine.mvcc.watch import NODELETE, NOPUT
from engine.proto import rpc_pb2, rpc_pb2_grpc
from engine.server import errors as server_errors
from engine.server.kvserver import KVServer

from .auth import auth_info
from .decode import UndecodableRequest
from .errors import WatchCanceled, abort
from .gate import checked, has_require_leader
from .stats import Counters

log = logging.getLogger("engine.api")

INVALID_WATCH_ID = -1
DEFAULT_PROGRESS_INTERVAL = 600.0
PROGRESS_INTERVAL_ENV = "RAFTUI_WATCH_PROGRESS_NOTIFY_INTERVAL"
MIN_PROGRESS_INTERVAL = 0.1     # etcd's minWatchProgressInterval
NO_LEADER_CHECKS = 3            # etcd's maxNoLeaderCnt
GRPC_OVERHEAD_BYTES = 512 * 1024
ERR_EMPTY_RANGE = "mvcc: watcher range is empty"
ERR_DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
UNMARSHAL_ERROR = "grpc: error unmarshalling request: "   # grpc-go's words
# Tasks cancelling a closed stream's watchers once an apply chunk ends (held
# here so they are not garbage-collected while they wait).
_closing: set[asyncio.Task] = set()


def progress_interval_from_env() -> float:
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_PROGRESS_INTERVAL
    except ValueError:
        log.warning("ignoring %s=%r (not a number of seconds)", PROGRESS_INTERVAL_ENV, raw)
        value = DEFAULT_PROGRESS_INTERVAL
    return max(value, MIN_PROGRESS_INTERVAL)


@dataclass(eq=False)
class _Entry:
    """One watcher of a stream."""
    watch_id: int
    watcher: object             # engine.mvcc.watch.Watcher
    prev_kv: bool
    progress_notify: bool
    fragment: bool
    filters: tuple[str, ...]
    announced: bool = False     # its "created" answer went out
    quiet: bool = True          # no events since the last progress tick


@dataclass(eq=False)
class WatchStream:
    stream_id: int
    peer: str
    entries: dict[int, _Entry] = field(default_factory=dict)


class WatchRegistry:
    """The live streams, for Inspect.Watchers."""

    def __init__(self) -> None:
        self.streams: dict[int, WatchStream] = {}
        self._ids = itertools.count(1)

    def new_stream(self, peer: str) -> WatchStream:
        s = WatchStream(next(self._ids), peer)
        self.streams[s.stream_id] = s
        return s

    def by_hub_id(self) -> dict[int, tuple[WatchStream, _Entry]]:
        return {e.watcher.id: (s, e) for s in self.streams.values() for e in s.entries.values()}


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    def __init__(self, server: KVServer, counters: Counters, registry: WatchRegistry,
                 progress_interval: float | None = None) -> None:
        self.server = server
        self.counters = counters
        self.registry = registry
        self.progress_interval = progress_interval or progress_interval_from_env()

    async def Watch(self, request_iterator, context):
        await checked(self.server, context)
        session = _Session(self, context)
        try:
            await session.run(request_iterator)
        except (server_errors.ServerError, WatchCanceled) as e:
            await abort(context, e)
        except UndecodableRequest as e:
            # etcd's recvLoop returns grpc's own unmarshalling error as the stream's status.
            await context.abort(grpc.StatusCode.INTERNAL, UNMARSHAL_ERROR + str(e))
        finally:
            session.close()


class _Session:
    """The state of one Watch call."""

    def __init__(self, svc: WatchServicer, context) -> None:
        self.server = svc.server
        self.hub = svc.server.watch_hub
        self.counters = svc.counters
        self.registry = svc.registry
        self.context = context
        self.stream = svc.registry.new_stream(context.peer() or "")
        self.progress_interval = svc.progress_interval
        self.require_leader = has_require_leader(context)
        self.max_bytes = svc.server.config.max_request_bytes + GRPC_OVERHEAD_BYTES
        self.ctrl: collections.deque[rpc_pb2.WatchResponse] = collections.deque()
        self.dirty: set[int] = set()       # stream watch ids with something to send
        self.wake = asyncio.Event()
        self.next_id = 0
        self.progress_wanted = False       # a progress_request waits for the watchers to sync

    # -- lifecycle ------------------------------------------------------------------

    async def run(self, request_iterator) -> None:
        reader = asyncio.get_running_loop().create_task(self._read(request_iterator))
        reader.add_done_callback(lambda _t: self.wake.set())   # a broken request side ends the stream now
        try:
            await self._write_loop(reader)
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass

    def close(self) -> None:
        ids = [e.watcher.id for e in self.stream.entries.values()]
        self.stream.entries.clear()
        self.registry.streams.pop(self.stream.stream_id, None)
        lock = self.server.between_batches()
        if not lock.locked():
            self._cancel_in_hub(ids)   # no apply chunk half done: now, without yielding
        else:
            # The stream is ending (perhaps cancelled): the watchers go once
            # the chunk ends, in a task of their own.
            task = asyncio.get_running_loop().create_task(self._cancel_after_chunk(ids))
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    def _cancel_in_hub(self, ids: list[int]) -> None:
        for wid in ids:
            self.hub.cancel(wid)

    async def _cancel_after_chunk(self, ids: list[int]) -> None:
        async with self.server.between_batches():
            self._cancel_in_hub(ids)

    def _header(self, revision: int) -> rpc_pb2.ResponseHeader:
        return self.server.new_header(revision)

    def _send_ctrl(self, resp: rpc_pb2.WatchResponse) -> None:
        self.ctrl.append(resp)
        self.wake.set()

    # -- requests -------------------------------------------------------------------

    async def _read(self, request_iterator) -> None:
        async for req in request_iterator:
            kind = req.WhichOneof("request_union")
            if kind == "create_request":
                refusal = await self._auth_refusal(req.create_request)
                if refusal is not None:
                    self._send_ctrl(rpc_pb2.WatchResponse(
                        header=self._header(self.server.current_revision), watch_id=INVALID_WATCH_ID,
                        created=True, canceled=True, cancel_reason=refusal))
                    continue
                # Registered between apply chunks: a watcher starts at a revision
                # whose events are all delivered or all still to come.
                async with self.server.between_batches():
                    self._create(req.create_request)
            elif kind == "cancel_request":
                async with self.server.between_batches():
                    self._cancel(req.cancel_request.watch_id)
            elif kind == "progress_request":
                # Not tied to a watcher: clientv3 hands it to every watch channel.
                # Answered by the writer once no event can be overtaken.
                self.progress_wanted = True
                self.wake.set()
        # The client half-closed: like etcd, keep sending until it goes away.

    async def _auth_refusal(self, cr: rpc_pb2.WatchCreateRequest) -> str | None:
        """etcd's isWatchPermitted: the cancel reason for a watch the user may
        not read, as etcd words it (the gRPC error's text), or None."""
        store = self.server.auth_store
        if store is None or not store.enabled:
            return None
        try:
            info = await auth_info(self.server, self.context)
            store.is_range_permitted(info or AuthInfo("", 0), cr.key, cr.range_end)
        except auth_errors.AuthError as e:
            if not isinstance(e, (auth_errors.InvalidAuthToken, auth_errors.AuthOldRevision,
                                  auth_errors.UserEmpty)):
                e = auth_errors.PermissionDenied()
            code, msg = auth_errors.status_of(e)
            go_name = "".join(w.capitalize() for w in code.name.split("_"))
            return f"rpc error: code = {go_name} desc = {msg}"
        return None

    def _create(self, cr: rpc_pb2.WatchCreateRequest) -> None:
        key = cr.key or b"\x00"           # etcd: an empty key means the smallest key
        end = cr.range_end
        rev_now = self.server.current_revision
        err = None
        if end and end != b"\x00" and key >= end:
            err = ERR_EMPTY_RANGE
        wid = cr.watch_id
        if err is None:
            if wid == 0:
                while self.next_id in self.stream.entries:
                    self.next_id += 1
                wid = self.next_id
                self.next_id += 1
            elif wid in self.stream.entries:
                err = ERR_DUPLICATE_ID
        if err is not None:
            self._send_ctrl(rpc_pb2.WatchResponse(
                header=self._header(rev_now), watch_id=INVALID_WATCH_ID, created=True,
                canceled=True, cancel_reason=err))
            return
        filters = tuple(f for f in cr.filters if f in (NOPUT, NODELETE))
        watcher = self.hub.watch(key, end, cr.start_revision, prev_kv=cr.prev_kv, filters=filters,
                                 notify=lambda _w, wid=wid: self._notify(wid))
        self.stream.entries[wid] = _Entry(
            wid, watcher, cr.prev_kv, cr.progress_notify, cr.fragment,
            tuple("noput" if f == NOPUT else "nodelete" for f in filters))
        self._send_ctrl(rpc_pb2.WatchResponse(header=self._header(rev_now), watch_id=wid, created=True))
        if watcher.canceled or watcher.buffer:  # compacted already, or events at once
            self._notify(wid)

    def _cancel(self, wid: int) -> None:
        e = self.stream.entries.pop(wid, None)
        if e is None:
            return  # etcd says nothing for an unknown id
        self.hub.cancel(e.watcher.id)
        self.dirty.discard(wid)
        self._send_ctrl(rpc_pb2.WatchResponse(
            header=self._header(self.server.current_revision), watch_id=wid, canceled=True))

    def _notify(self, wid: int) -> None:
        # Called by the hub inside apply: mark and wake, nothing else.
        self.dirty.add(wid)
        self.wake.set()

    # -- sending ----------------------------------------------------------------------

    async def _write_loop(self, reader: asyncio.Task) -> None:
        loop = asyncio.get_running_loop()
        election = self.server.config.election_timeout_ms / 1000
        next_progress = loop.time() + self._jittered()
        next_leader_check = loop.time() + election
        no_leader = 0
        while True:
            now = loop.time()
            timeout = min(next_progress, next_leader_check) - now
            if timeout > 0 and not self.wake.is_set():
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
            self.wake.clear()
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                if isinstance(reader.exception(), UndecodableRequest):
                    raise reader.exception()
                raise WatchCanceled()  # the request side broke: etcd ends the stream
            await self._flush()
            if self.progress_wanted:
                await self._maybe_send_progress()
            now = loop.time()
            if now >= next_leader_check:
                next_leader_check = now + election
                no_leader = no_leader + 1 if not self.server.leader_id else 0
                if self.require_leader and no_leader >= NO_LEADER_CHECKS:
                    raise server_errors.NoLeader()
            if now >= next_progress:
                next_progress = now + self._jittered()
                await self._progress_tick()

    def _jittered(self) -> float:
        return self.progress_interval * (1 + random.random() / 10)

    async def _flush(self) -> None:
        write = self.context.write
        while self.ctrl:
            resp = self.ctrl.popleft()
            await write(resp)
            if resp.created and not resp.canceled:
                e = self.stream.entries.get(resp.watch_id)
                if e is not None:
                    e.announced = True
        for wid in list(self.dirty):
            e = self.stream.entries.get(wid)
            if e is None:
                self.dirty.discard(wid)
                continue
            if not e.announced:
                continue  # its "created" goes first; it stays dirty
            self.dirty.discard(wid)
            await self._send_events(e)
            if self.ctrl:
                # A create or cancel came in meanwhile: answer it first.
                self.wake.set()
                return

    async def _send_events(self, e: _Entry) -> None:
        w = e.watcher
        events = w.take_events()
        if w.canceled and w.compact_revision:
            # Compacted past this watcher's start: tell the revision, drop it.
            # etcd sends this one with header revision 0.
            self.stream.entries.pop(e.watch_id, None)
            await self.context.write(rpc_pb2.WatchResponse(
                header=self._header(0), watch_id=e.watch_id,
                compact_revision=w.compact_revision, canceled=True))
            return
        if not events:
            return
        resp = rpc_pb2.WatchResponse(header=self._header(w.revision), watch_id=e.watch_id)
        resp.events.extend(events)
        self.counters.bump("watch_event", len(events))
        e.quiet = False
        if e.fragment and len(events) > 1 and resp.ByteSize() >= self.max_bytes:
            for part in _fragments(resp, self.max_bytes):
                await self.context.write(part)
        else:
            await self.context.write(resp)

    async def _maybe_send_progress(self) -> None:
        """Answer a pending progress_request if every watcher is synced and flushed."""
        if self.ctrl:
            return  # control answers first; the writer comes back (wake is set)
        async with self.server.between_batches():   # never a revision whose events are half out
            rev = self.hub.progress_all(e.watcher for e in self.stream.entries.values())
        if rev is None:
            return  # deferred: re-checked when the hub wakes this stream
        self.progress_wanted = False
        await self.context.write(rpc_pb2.WatchResponse(header=self._header(rev), watch_id=INVALID_WATCH_ID))

    async def _progress_tick(self) -> None:
        for e in list(self.stream.entries.values()):
            if not e.progress_notify:
                continue
            if e.quiet:
                async with self.server.between_batches():
                    rev = self.hub.request_progress(e.watcher.id)
                if rev is not None:
                    await self.context.write(rpc_pb2.WatchResponse(
                        header=self._header(rev), watch_id=e.watch_id))
            e.quiet = True


def _fragments(resp: rpc_pb2.WatchResponse, max_bytes: int):
    """etcd's sendFragments: split events over responses of < max_bytes
    (at least one event each); all but the last say fragment=true."""
    events = list(resp.events)
    base = rpc_pb2.WatchResponse()
    base.CopyFrom(resp)
    base.ClearField("events")
    i = 0
    while i < len(events):
        cur = rpc_pb2.WatchResponse()
        cur.CopyFrom(base)
        cur.fragment = True
        cur.events.append(events[i])
        i += 1
        while i < len(events):
            cur.events.append(events[i])
            if cur.ByteSize() >= max_bytes:
                del cur.events[-1]
                break
            i += 1
        if i == len(events):
            cur.fragment = False
        yield cur
