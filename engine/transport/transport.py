"""Peer transport: raft messages between members over grpc.aio.

The shape follows etcd's rafthttp, not its code:

- one long-lived outgoing stream per peer (the `Peer.Stream` RPC). `send()`
  never awaits: it appends to the peer's bounded queue and wakes the peer's
  writer task, which writes everything queued as one `MessageBatch`. Raft
  retransmits whatever is lost, so a full queue or a broken stream means
  "drop and tell the core the peer is unreachable", never "wait".
- snapshots go through `Peer.SendSnapshot` in a task of their own, on a
  channel of their own (so a multi-megabyte snapshot does not queue
  heartbeats behind it on one TCP connection), in chunks of at most 1 MiB,
  and end with `on_snapshot_status(peer, ok)`.
- while a peer is down (no connection within CONNECT_TIMEOUT, or a write
  failed) messages for it are dropped at once with `on_unreachable(peer)`;
  the writer keeps reconnecting with backoff and the peer is up again as
  soon as its channel is ready.
- the receiving side (`add_peer_service`) rejects streams for another
  cluster or another member, and hands each batch to `on_messages`.
- every message passes the member's FaultFilter twice: when sent and when
  received.

All of it lives on the event loop that created the PeerTransport: grpc.aio
channels belong to the loop that made them.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
import urllib.parse
from typing import Any, Callable, Sequence

import grpc
import grpc.aio

from engine.proto import peer_pb2, peer_pb2_grpc
from engine.proto import raft_pb2 as raftpb
from engine.transport.faults import Direction, FaultFilter

log = logging.getLogger("engine.transport")

Message = raftpb.Message
MSG_SNAP = raftpb.MsgSnap

# Messages waiting per peer; etcd's stream buffer holds 4096 too. Beyond
# this the peer is not keeping up and Raft's own flow control should slow.
QUEUE_SIZE = 4096
# One MessageBatch carries at most about this much entry data, so one write
# never grows without bound when a peer falls behind.
MAX_BATCH_BYTES = 4 << 20
SNAPSHOT_CHUNK_BYTES = 1 << 20
# grpc's default limit is 4 MiB; a single MsgApp may carry one entry as big
# as --max-request-bytes plus a batch of others, so allow generous frames.
MAX_GRPC_MESSAGE_BYTES = 64 << 20

# Seconds close() waits for its tasks and channels.
CLOSE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0      # seconds to get a ready channel before "peer down"
WRITE_TIMEOUT = 5.0        # a write stalled this long means the peer is stuck
# A snapshot must finish within base + per-MiB seconds (its deadline).
SNAPSHOT_TIMEOUT_BASE = 10.0
SNAPSHOT_TIMEOUT_PER_MIB = 1.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
# A stream that lived this long counts as healthy: backoff starts over.
HEALTHY_STREAM_SECONDS = 1.0

# Server options: keepalive as in etcd-compat.md trap 2 (grpc-go clients
# ping often; a default grpcio server answers with GOAWAY too_many_pings),
# plus frame limits large enough for raft batches and snapshot chunks.
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
)

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
    # Notice a silently dead peer (no RST, e.g. a paused process) on an idle
    # stream. The peer server allows pings this often (SERVER_OPTIONS).
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    # grpc's default reconnect backoff grows to 120 s; a restarted member
    # must be talked to again within about a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    # Raft retransmits; grpc must not replay stream writes on its own.
    ("grpc.enable_retries", 0),
)
# A snapshot gets its own TCP connection: without a local subchannel pool
# grpc would share one connection among channels with the same target.
SNAPSHOT_CHANNEL_OPTIONS = CHANNEL_OPTIONS + (("grpc.use_local_subchannel_pool", 1),)


def make_server(options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Server:
    """A grpc.aio server with SERVER_OPTIONS; `options` add to or override them.
    Call inside the running event loop."""
    merged = dict(SERVER_OPTIONS)
    merged.update(dict(options))
    return grpc.aio.server(options=list(merged.items()))


def url_target(url: str) -> tuple[str, bool]:
    """'https://host:port' -> ('host:port', True). Raises ValueError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"peer URL must be http(s)://host:port, got {url!r}")
    return parts.netloc, parts.scheme == "https"


def _estimate_bytes(m: Message) -> int:
    # Cheap upper-ish bound without serialising: entry payloads dominate.
    return 64 + sum(len(e.data) + 24 for e in m.entries) + len(m.context)


@dataclasses.dataclass(frozen=True)
class PeerStatus:
    member_id: int
    urls: tuple[str, ...]
    active: bool
    active_since: float | None   # time.time() when the current stream came up
    queued: int
    sent: int                    # messages written to the stream
    dropped: int                 # messages dropped: queue full or peer down


class _Peer:
    """One remote member: its queue, its writer task and its snapshot tasks."""

    def __init__(self, member_id: int, urls: tuple[str, ...]) -> None:
        self.member_id = member_id
        self.urls = urls
        self.queue: collections.deque[Message] = collections.deque()
        self.wakeup = asyncio.Event()
        self.writer: asyncio.Task | None = None
        self.snapshots: set[asyncio.Task] = set()
        # None: never connected yet (messages wait); False: down (messages
        # are dropped); True: a stream is up.
        self.up: bool | None = None
        self.active_since: float | None = None
        self.sent = 0
        self.dropped = 0

    def status(self) -> PeerStatus:
        return PeerStatus(self.member_id, self.urls, bool(self.up), self.active_since,
                          len(self.queue), self.sent, self.dropped)


class PeerTransport:
    """Sends raft messages to peers and delivers the ones that arrive.

    Create it inside the running event loop. Callbacks run on that loop and
    must not block: `on_messages(msgs)` for every batch received (already
    through the fault filter), `on_unreachable(peer)` when messages to a
    peer were lost, `on_snapshot_status(peer, ok)` when a MsgSnap send ended.
    None of them is called from inside `send()` (they are scheduled with
    call_soon), so the host may call `send()` while it holds the raft node.
    """

    def __init__(
        self,
        member_id: int,
        cluster_id: int,
        on_messages: Callable[[list[Message]], None],
        on_unreachable: Callable[[int], None],
        on_snapshot_status: Callable[[int, bool], None],
        *,
        tls: grpc.ChannelCredentials | None = None,
        faults: FaultFilter | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        if member_id <= 0 or cluster_id <= 0:
            raise ValueError("member and cluster ids are non-zero")
        self._loop = asyncio.get_running_loop()
        self.member_id = member_id
        self.cluster_id = cluster_id
        self._on_messages = on_messages
        self._on_unreachable = on_unreachable
        self._on_snapshot_status = on_snapshot_status
        self._tls = tls
        self.faults = faults if faults is not None else FaultFilter()
        self._queue_size = queue_size
        self._peers: dict[int, _Peer] = {}
        # Members removed from the cluster: their streams are refused, as in
        # etcd, so a removed member cannot disrupt the ones that remain.
        self._removed: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._closed = False
        # Set by the node: () -> peer_pb2.MembersResponse, served to joiners.
        self.members_provider: Callable[[], peer_pb2.MembersResponse] | None = None

    # -- membership -------------------------------------------------------------

    def add_peer(self, member_id: int, urls: Sequence[str]) -> None:
        """Start talking to `member_id`. Adding a known peer updates its URLs."""
        self._check_open()
        if member_id == self.member_id:
            raise ValueError("a member is not its own peer")
        if member_id in self._peers:
            self.update_peer(member_id, urls)
            return
        peer = _Peer(member_id, self._check_urls(urls))
        self._removed.discard(member_id)
        self._peers[member_id] = peer
        peer.writer = self._spawn(self._run_writer(peer), f"peer-{member_id:x}-writer")

    def update_peer(self, member_id: int, urls: Sequence[str]) -> None:
        """New URLs for a peer: its stream is reopened; queued messages stay."""
        self._check_open()
        peer = self._peers.get(member_id)
        if peer is None:
            self.add_peer(member_id, urls)
            return
        new_urls = self._check_urls(urls)
        if new_urls == peer.urls:
            return
        peer.urls = new_urls
        if peer.writer is not None:
            peer.writer.cancel()
        peer.up = None
        peer.writer = self._spawn(self._run_writer(peer), f"peer-{member_id:x}-writer")

    def remove_peer(self, member_id: int) -> None:
        """Stop talking to `member_id` and refuse its messages from now on."""
        peer = self._peers.pop(member_id, None)
        self._removed.add(member_id)
        if peer is None:
            return
        if peer.writer is not None:
            peer.writer.cancel()
        for task in peer.snapshots:
            task.cancel()
        peer.queue.clear()

    def peers(self) -> dict[int, PeerStatus]:
        return {pid: p.status() for pid, p in self._peers.items()}

    def is_active(self, member_id: int) -> bool:
        peer = self._peers.get(member_id)
        return bool(peer and peer.up)

    # -- sending ----------------------------------------------------------------

    def send(self, msgs: Sequence[Message]) -> None:
        """Queue `msgs` for their peers. Never blocks, never awaits."""
        if self._closed or not msgs:
            return
        by_peer: dict[int, list[Message]] = {}
        for m in msgs:
            by_peer.setdefault(m.to, []).append(m)
        for to, group in by_peer.items():
            self.faults.filter(to, Direction.OUT, group,
                               lambda ms, to=to: self._deliver_out(to, ms),
                               self._dropped_by_fault)

    def _dropped_by_fault(self, m: Message) -> None:
        # A lost MsgSnap would leave the leader waiting for a report forever.
        if m.type == MSG_SNAP:
            self._notify(self._on_snapshot_status, m.to, False)

    def _deliver_out(self, to: int, msgs: list[Message]) -> None:
        """Messages that passed the fault filter: onto the peer's queue."""
        if self._closed:
            return
        peer = self._peers.get(to)
        if peer is None:
            log.debug("dropping %d message(s) for unknown peer %x", len(msgs), to)
            self._report_lost(to, msgs)
            return
        lost: list[Message] = []
        queued = False
        for m in msgs:
            if m.type == MSG_SNAP:
                task = self._spawn(self._send_snapshot(peer, m), f"peer-{to:x}-snapshot")
                peer.snapshots.add(task)
                task.add_done_callback(peer.snapshots.discard)
            elif peer.up is False or len(peer.queue) >= self._queue_size:
                lost.append(m)
            else:
                peer.queue.append(m)
                queued = True
        if queued:
            peer.wakeup.set()
        if lost:
            peer.dropped += len(lost)
            self._report_lost(to, lost)

    def _report_lost(self, to: int, msgs: list[Message]) -> None:
        # One report per peer per call is enough: Raft only needs to know
        # that the peer should be probed again.
        self._notify(self._on_unreachable, to)
        for m in msgs:
            if m.type == MSG_SNAP:
                self._notify(self._on_snapshot_status, to, False)

    async def _run_writer(self, peer: _Peer) -> None:
        """Connect, stream batches until something fails, back off, repeat."""
        backoff = BACKOFF_MIN
        url_index = 0
        stub_channel: grpc.aio.Channel | None = None
        current_url = None
        try:
            while True:
                url = peer.urls[url_index % len(peer.urls)]
                if url != current_url:
                    if stub_channel is not None:
                        await _close_channel(stub_channel)
                    stub_channel = self._channel(url, CHANNEL_OPTIONS)
                    current_url = url
                try:
                    await asyncio.wait_for(stub_channel.channel_ready(), CONNECT_TIMEOUT)
                except asyncio.TimeoutError:
                    self._mark_down(peer, f"no connection to {url} within {CONNECT_TIMEOUT}s")
                    url_index += 1  # several URLs: try the next one
                    continue        # channel_ready itself paces the retries
                started = time.monotonic()
                error = await self._stream(peer, stub_channel)
                self._mark_down(peer, error)
                if time.monotonic() - started >= HEALTHY_STREAM_SECONDS:
                    backoff = BACKOFF_MIN
                # Paces reconnects to a peer that accepts connections but
                # refuses or breaks the stream (wrong cluster, crashing).
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            if stub_channel is not None:
                await _close_channel(stub_channel)

    async def _stream(self, peer: _Peer, channel: grpc.aio.Channel) -> str:
        """Write batches until a write fails; returns why it stopped."""
        stub = peer_pb2_grpc.PeerStub(channel)
        # No deadline: the stream lives as long as the connection. It ends by
        # a failed or stalled write (WRITE_TIMEOUT), keepalive, or cancel.
        call = stub.Stream()
        peer.up = True
        peer.active_since = time.time()
        log.info("stream to peer %x up", peer.member_id)
        try:
            while True:
                if not peer.queue:
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                batch = self._take_batch(peer)
                try:
                    await asyncio.wait_for(call.write(batch), WRITE_TIMEOUT)
                except asyncio.TimeoutError:
                    return f"write to peer {peer.member_id:x} stalled for {WRITE_TIMEOUT}s"
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.RpcError) as e:
                    return f"stream to peer {peer.member_id:x} failed: {_describe_error(e)}"
                peer.sent += len(batch.msgs)
        finally:
            call.cancel()

    def _take_batch(self, peer: _Peer) -> peer_pb2.MessageBatch:
        q = peer.queue
        msgs = [q.popleft()]
        size = _estimate_bytes(msgs[0])
        while q:
            size += _estimate_bytes(q[0])
            if size > MAX_BATCH_BYTES:
                break
            msgs.append(q.popleft())
        return peer_pb2.MessageBatch(from_member=self.member_id, cluster_id=self.cluster_id,
                                     to_member=peer.member_id, msgs=msgs)

    def _mark_down(self, peer: _Peer, why: str) -> None:
        was = peer.up
        peer.up = False
        peer.active_since = None
        # What was queued for a dead stream is lost; Raft will resend.
        lost = list(peer.queue)
        peer.queue.clear()
        peer.dropped += len(lost)
        if was is not False:
            # While closing, broken streams are expected, not news.
            (log.debug if self._closed else log.warning)("peer %x unreachable: %s", peer.member_id, why)
        if was or lost:
            self._notify(self._on_unreachable, peer.member_id)

    async def _send_snapshot(self, peer: _Peer, m: Message) -> None:
        data = m.snapshot.data
        head = Message()
        head.CopyFrom(m)
        head.snapshot.ClearField("data")
        header = peer_pb2.SnapshotHeader(from_member=self.member_id, cluster_id=self.cluster_id,
                                         to_member=peer.member_id, msg=head,
                                         total_size=len(data))
        timeout = SNAPSHOT_TIMEOUT_BASE + SNAPSHOT_TIMEOUT_PER_MIB * len(data) / (1 << 20)
        ok = False
        channel = self._channel(peer.urls[0], SNAPSHOT_CHANNEL_OPTIONS)
        try:
            try:
                await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("snapshot to peer %x failed: no connection to %s within %ss",
                            peer.member_id, peer.urls[0], CONNECT_TIMEOUT)
                return
            stub = peer_pb2_grpc.PeerStub(channel)
            # The deadline bounds the whole transfer, however slow the peer.
            call = stub.SendSnapshot(timeout=timeout)
            try:
                await call.write(peer_pb2.SnapshotChunk(header=header))
                view = memoryview(data)
                for off in range(0, len(data), SNAPSHOT_CHUNK_BYTES):
                    await call.write(peer_pb2.SnapshotChunk(
                        data=bytes(view[off:off + SNAPSHOT_CHUNK_BYTES])))
                await call.done_writing()
                await call
                ok = True
                log.info("snapshot (index %d, %d bytes) sent to peer %x",
                         m.snapshot.metadata.index, len(data), peer.member_id)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.RpcError) as e:
                log.warning("snapshot to peer %x failed: %s", peer.member_id,
                            _describe_error(e))
            finally:
                call.cancel()
        finally:
            await channel.close()
            if not self._closed and peer.member_id in self._peers:
                if not ok:
                    self._on_unreachable(peer.member_id)
                self._on_snapshot_status(peer.member_id, ok)

    def _channel(self, url: str, options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
        target, secure = url_target(url)
        if secure:
            return grpc.aio.secure_channel(target, self._tls, options=list(options))
        return grpc.aio.insecure_channel(target, options=list(options))

    # -- receiving (called by the servicer) ---------------------------------------

    def _check_incoming(self, from_member: int, cluster_id: int, to_member: int) -> str | None:
        """Why a stream from `from_member` must be refused, or None."""
        if self._closed:
            return "transport closed"
        if cluster_id != self.cluster_id:
            return (f"cluster ID mismatch: member {self.member_id:x} is in cluster "
                    f"{self.cluster_id:x}, sender {from_member:x} in {cluster_id:x}")
        if to_member and to_member != self.member_id:
            return f"this is member {self.member_id:x}, not {to_member:x}"
        if from_member == 0:
            return "sender has no member id"
        if from_member in self._removed:
            return f"member {from_member:x} was removed from the cluster"
        return None

    def _receive(self, from_member: int, msgs: list[Message]) -> None:
        self.faults.filter(from_member, Direction.IN, msgs, self._deliver_in)

    def _deliver_in(self, msgs: list[Message]) -> None:
        if self._closed or not msgs:
            return
        try:
            self._on_messages(msgs)
        except Exception:  # a host bug must not kill the peer's stream
            log.exception("on_messages failed")

    # -- lifecycle --------------------------------------------------------------

    async def close(self) -> None:
        """Cancel every task, close every channel, drop delayed messages."""
        if self._closed:
            return
        self._closed = True
        self.faults.cancel_pending()
        for peer in self._peers.values():
            peer.queue.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a grpc call can be slow to honour a cancel, and a
            # member must never hang on its way down because of a peer.
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
            for task in pending:
                log.debug("transport task %s still finishing after close", task.get_name())

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = self._loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("transport task %s crashed", task.get_name(), exc_info=task.exception())

    def _notify(self, fn: Callable, *args: Any) -> None:
        self._loop.call_soon(self._fire, fn, args)

    def _fire(self, fn: Callable, args: tuple) -> None:
        if not self._closed:
            fn(*args)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("transport is closed")

    def _check_urls(self, urls: Sequence[str]) -> tuple[str, ...]:
        urls = tuple(urls)
        if not urls:
            raise ValueError("a peer needs at least one URL")
        for url in urls:
            _, secure = url_target(url)
            if secure and self._tls is None:
                raise ValueError(f"{url} is https but the transport has no TLS credentials")
        return urls


async def fetch_members(urls: Sequence[str], timeout: float = 2.0,
                        tls: grpc.ChannelCredentials | None = None) -> peer_pb2.MembersResponse:
    """Ask the first peer that answers for the cluster's member list."""
    last: Exception | None = None
    for url in urls:
        target, secure = url_target(url)
        channel = (grpc.aio.secure_channel(target, tls) if secure and tls is not None
                   else grpc.aio.insecure_channel(target))
        try:
            stub = peer_pb2_grpc.PeerStub(channel)
            return await stub.Members(peer_pb2.MembersRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            last = e
        finally:
            await channel.close()
    raise ConnectionError(f"no peer answered at {', '.join(urls)}: {last and last.details()}")


async def _close_channel(channel: grpc.aio.Channel) -> None:
    """Close a channel without waiting on it forever (see close())."""
    try:
        await asyncio.wait_for(channel.close(), CLOSE_TIMEOUT)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 -- closing is best effort
        pass


def _describe_error(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return type(e).__name__ + (f": {e}" if str(e) else "")


class _PeerServicer(peer_pb2_grpc.PeerServicer):
    def __init__(self, transport: PeerTransport) -> None:
        self._t = transport

    async def Stream(self, request_iterator, context):
        t = self._t
        checked_from: int | None = None
        async for batch in request_iterator:
            # A stream comes from one sender; check it once, on its first batch.
            if checked_from != batch.from_member:
                why = t._check_incoming(batch.from_member, batch.cluster_id, batch.to_member)
                if why is not None:
                    log.warning("refusing stream from %x: %s", batch.from_member, why)
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
                checked_from = batch.from_member
            if t._closed:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "transport closed")
            if batch.from_member in t._removed:
                # Removed while its stream was open.
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"member {batch.from_member:x} was removed from the cluster")
            if batch.msgs:
                t._receive(batch.from_member, list(batch.msgs))
        return peer_pb2.StreamAck()

    async def SendSnapshot(self, request_iterator, context):
        t = self._t
        header: peer_pb2.SnapshotHeader | None = None
        parts: list[bytes] = []
        got = 0
        async for chunk in request_iterator:
            kind = chunk.WhichOneof("kind")
            if header is None:
                if kind != "header":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        "snapshot stream must start with a header")
                header = chunk.header
                why = t._check_incoming(header.from_member, header.cluster_id,
                                        header.to_member)
                if why is not None:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, why)
                if header.msg.type != MSG_SNAP:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        "snapshot header must carry a MsgSnap")
                continue
            if kind != "data":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "second snapshot header")
            got += len(chunk.data)
            if got > header.total_size:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"snapshot data exceeds announced {header.total_size} bytes")
            parts.append(chunk.data)
        if header is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty snapshot stream")
        if got != header.total_size:
            await context.abort(grpc.StatusCode.DATA_LOSS,
                                f"snapshot cut short: {got} of {header.total_size} bytes")
        msg = Message()
        msg.CopyFrom(header.msg)
        msg.snapshot.data = b"".join(parts)
        del parts
        dropped = []
        t.faults.filter(header.from_member, Direction.IN, [msg], t._deliver_in, dropped.append)
        if dropped:
            # Tell the sender, so its leader reports the snapshot as failed.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "dropped by fault injection")
        return peer_pb2.SnapshotAck()


    async def Members(self, request, context):
        provider = self._t.members_provider
        if provider is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "member list not available yet")
        return provider()


def add_peer_service(server: grpc.aio.Server, transport: PeerTransport) -> None:
    """Register the Peer service for `transport` on the node's peer server."""
    peer_pb2_grpc.add_PeerServicer_to_server(_PeerServicer(transport), server)
