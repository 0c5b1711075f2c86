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
- the receiving side (`add_peer_service`) talks only to members: a stream
  (or snapshot) is refused unless it is for this cluster and this member and
  its sender is a current peer (in the peer table, not removed). The first
  batch names the stream's sender; a later batch naming another sender ends
  the stream. Every message is checked on its own before it reaches the
  core (`check_message`): `from` is the stream's sender, `to` is us, the
  type is one peers send, the shape fits the type (entries, term, no
  snapshot outside a snapshot stream). Bad ones are dropped with a
  rate-limited warning, never raised. What only the log can tell (a
  heartbeat whose commit is past it) is the host's to catch when stepping.
- everything a peer sends is bounded: a frame by PEER_RECEIVE_BYTES, a
  batch by MAX_BATCH_MSGS messages, a snapshot by `max_snapshot_bytes`
  (spooled to a file, never held whole in RAM before it is verified; its
  sha256 travels after the data and is checked before delivery), at most
  MAX_SNAPSHOT_RECEIVES snapshot streams at a time.
- a peer URL the transport cannot dial (https without peer TLS, a unix
  socket, port 0 ...) makes that peer unreachable, with one warning:
  `add_peer`/`update_peer` never raise on URLs.
- every message passes the member's FaultFilter twice: when sent and when
  received.
- a prober per peer (`Peer.Probe`, etcd's /raft/probing) measures the round
  trip every PROBE_INTERVAL through the same faults (`on_peer_rtt`), and is
  how a member with nothing to send (a learner removed while it was down)
  hears a peer say "removed member".

All of it lives on the event loop that created the PeerTransport: grpc.aio
channels belong to the loop that made them.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from typing import Any, Awaitable, Callable, Sequence

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from engine.proto import peer_pb2, peer_pb2_grpc
from engine.proto import raft_pb2 as raftpb
from engine.transport import peerwire, snapfile
from engine.transport.faults import Direction, FaultFilter
from engine.transport.urls import URLError, dial_target, split_host_port

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
# as --max-request-bytes plus a batch of others, so allow generous frames
# when sending.
MAX_GRPC_MESSAGE_BYTES = 64 << 20
# What the peer server accepts in one frame: a batch (MAX_BATCH_BYTES) plus
# one oversized entry at the default --max-request-bytes, with room to spare.
# A member with a larger --max-request-bytes passes peer_receive_limit().
PEER_RECEIVE_BYTES = 16 << 20
# A batch never carries more messages than a peer's queue holds.
MAX_BATCH_MSGS = QUEUE_SIZE
SNAPSHOT_DIGEST_BYTES = 32          # sha256, sent after the data
SNAPSHOT_MIN_AVG_CHUNK = 1024       # a received snapshot's chunks average at least this
# Default cap on a received snapshot: etcd's default quota (2 GiB) + 10 %.
DEFAULT_MAX_SNAPSHOT_BYTES = (2 << 30) * 11 // 10
MAX_SNAPSHOT_RECEIVES = 2           # snapshot streams received at once
SNAPSHOT_TMP_PREFIX = "peer-snap-"
SNAPSHOT_TMP_SUFFIX = ".part"
# One warning per (sender, reason) this often; the rest are counted.
WARN_INTERVAL = 5.0

# Seconds close() waits for its tasks and channels.
CLOSE_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0      # seconds to get a ready channel before "peer down"
WRITE_TIMEOUT = 5.0        # a write stalled this long means the peer is stuck
# Every refusal of a stream, batch or snapshot has this status. One from a
# member this one has applied the removal of has details starting with
# REMOVED_DETAILS (etcd's rafthttp: HTTP 410 "removed member"): the refused
# member learns from it that it was removed (on_removed). Only a committed,
# applied removal puts a member id there, and ids are never reused, so one
# peer's word is enough (as in etcd); a peer that has not applied the
# member's ADD yet answers "not a member" instead, which proves nothing.
REFUSED_CODE = grpc.StatusCode.FAILED_PRECONDITION
REMOVED_DETAILS = "removed member"
# A snapshot must finish within base + per-MiB seconds (its deadline).
SNAPSHOT_TIMEOUT_BASE = 10.0
SNAPSHOT_TIMEOUT_PER_MIB = 1.0
BACKOFF_MIN = 0.05
BACKOFF_MAX = 1.0
# A stream that lived this long counts as healthy: backoff starts over.
HEALTHY_STREAM_SECONDS = 1.0
# Every member probes each peer this often (etcd's prober: its connection
# read timeout minus a second); until a first answer, much more often, so a
# restarted member that was removed while down hears it within a second.
PROBE_INTERVAL = 4.0
PROBE_FIRST_INTERVAL = 0.2
PROBE_TIMEOUT = 2.0
# A peer whose port does not speak peerwire's plain-TCP stream (a member
# without the PeerPort listener) gets Peer.Stream for this long; then the
# stream ends between batches and the plain one is asked for again.
RAW_RETRY_SECONDS = 30.0
# Write buffer above which the plain-TCP stream waits for the socket.
RAW_HIGH_WATER = 1 << 20

# Server options: keepalive as in etcd-compat.md trap 2 (grpc-go clients
# ping often; a default grpcio server answers with GOAWAY too_many_pings),
# plus frame limits large enough for raft batches and snapshot chunks.
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", PEER_RECEIVE_BYTES),
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


def make_server(options: Sequence[tuple[str, Any]] = (), interceptors: Sequence[Any] = ()) -> grpc.aio.Server:
    """A grpc.aio server with SERVER_OPTIONS; `options` add to or override them;
    `interceptors` (grpc.aio.ServerInterceptor, e.g. engine/http's metrics).
    Call inside the running event loop."""
    merged = dict(SERVER_OPTIONS)
    merged.update(dict(options))
    return grpc.aio.server(options=list(merged.items()), interceptors=list(interceptors) or None)


def peer_receive_limit(max_request_bytes: int) -> int:
    """The peer server's frame limit for a member with this --max-request-bytes
    (for make_server([("grpc.max_receive_message_length", ...)]))."""
    return max(PEER_RECEIVE_BYTES, MAX_BATCH_BYTES + 2 * max_request_bytes + (1 << 20))


def url_target(url: str) -> tuple[str, bool]:
    """'https://host:port' -> ('host:port', True). Raises ValueError (URLError)
    for anything this transport cannot dial."""
    return dial_target(url)


# -- what a peer may send ---------------------------------------------------------

# Types a peer sends over the stream. MsgSnap comes through SendSnapshot only;
# the rest (MsgHup, MsgBeat, MsgUnreachable, MsgSnapStatus, MsgCheckQuorum)
# are local to a member and would let a peer make us campaign or step down.
STREAM_TYPES = frozenset({
    raftpb.MsgProp, raftpb.MsgApp, raftpb.MsgAppResp, raftpb.MsgVote, raftpb.MsgVoteResp,
    raftpb.MsgHeartbeat, raftpb.MsgHeartbeatResp, raftpb.MsgTransferLeader,
    raftpb.MsgTimeoutNow, raftpb.MsgReadIndex, raftpb.MsgReadIndexResp,
    raftpb.MsgPreVote, raftpb.MsgPreVoteResp,
})
# Forwarded proposals and read requests are termless (the core's send()).
_TERMLESS = frozenset({raftpb.MsgProp, raftpb.MsgReadIndex})
_ENTRY_TYPES = frozenset(raftpb.EntryType.values())
_MSG_TYPE_NAMES = {v: k for k, v in raftpb.MessageType.items()}


def _type_name(t: int) -> str:
    return _MSG_TYPE_NAMES.get(t, f"type {t}")


def check_message(m: Message, sender: int, me: int, *, snapshot: bool = False) -> str | None:
    """Why message `m`, received on a stream from `sender`, must be dropped
    (None: it may go to the core). Only what the message itself shows is
    checked; what needs the log (a heartbeat's commit) is the core's."""
    t = m.type
    if snapshot:
        if t != MSG_SNAP:
            return f"{_type_name(t)} on a snapshot stream"
    elif t not in STREAM_TYPES:
        if t == MSG_SNAP:
            return "MsgSnap outside a snapshot stream"
        return f"{_type_name(t)} is not a message peers send"
    if m.from_ != sender:
        return f"{_type_name(t)} from {m.from_:x} on the stream of {sender:x}"
    if m.to != me:
        return f"{_type_name(t)} to {m.to:x}, this is {me:x}"
    if t in _TERMLESS:
        if m.term != 0:
            return f"{_type_name(t)} with a term"
    elif m.term == 0:
        return f"{_type_name(t)} without a term"
    if not snapshot and m.HasField("snapshot"):
        return f"{_type_name(t)} carrying a snapshot"
    n = len(m.entries)
    if t != raftpb.MsgApp:  # (MsgApp's are checked in its one walk below)
        for e in m.entries:
            if e.type not in _ENTRY_TYPES:
                return f"{_type_name(t)} with an entry of type {e.type}"
    if t == raftpb.MsgProp:
        if n == 0:
            return "MsgProp without entries"
    elif t in (raftpb.MsgReadIndex, raftpb.MsgReadIndexResp):
        if n != 1:
            return f"{_type_name(t)} with {n} entries"
    elif t == raftpb.MsgApp:
        prev = m.log_term
        for i, e in enumerate(m.entries):
            if e.type not in _ENTRY_TYPES:
                return f"MsgApp with an entry of type {e.type}"
            if e.index != m.index + 1 + i:
                return f"MsgApp entry {i} has index {e.index}, expected {m.index + 1 + i}"
            if e.term == 0 or e.term < prev or e.term > m.term:
                return f"MsgApp entry {e.index} has term {e.term} (log term {prev}, term {m.term})"
            prev = e.term
    elif n:
        return f"{_type_name(t)} with {n} entries"
    if snapshot:
        md = m.snapshot.metadata
        if md.index == 0 or md.term == 0:
            return "MsgSnap without a snapshot index and term"
        if md.term > m.term:
            return f"MsgSnap of term {md.term} from term {m.term}"
    return None


class _RateLimitedLog:
    """At most one warning per key every WARN_INTERVAL seconds."""

    def __init__(self, interval: float = WARN_INTERVAL) -> None:
        self._interval = interval
        self._last: dict[Any, tuple[float, int]] = {}

    def warn(self, key: Any, fmt: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval:
            self._last[key] = (last[0], last[1] + 1)
            return
        suppressed = last[1] if last is not None else 0
        if len(self._last) > 4096:  # keys come from peers: bound the table
            self._last.clear()
        self._last[key] = (now, 0)
        if suppressed:
            fmt += " (%d more like it since the last warning)"
            args = (*args, suppressed)
        log.warning(fmt, *args)


def _estimate_bytes(m: Message) -> int:
    # The serialized size, from protobuf's C code: a third of what summing
    # the entries in Python cost (it was 2-3 % of a leader under check perf).
    return m.ByteSize()


@dataclasses.dataclass(frozen=True)
class PeerStatus:
    member_id: int
    urls: tuple[str, ...]
    active: bool
    active_since: float | None   # time.time() when the current stream came up
    queued: int
    sent: int                    # messages written to the stream
    dropped: int                 # messages dropped: queue full or peer down
    sent_bytes: int = 0          # serialized batches written to its stream
    received_bytes: int = 0      # serialized batches received on its stream
    rtt: float | None = None     # the last probe's round trip, seconds


class _Peer:
    """One remote member: its queue, its writer task and its snapshot tasks."""

    def __init__(self, member_id: int, urls: tuple[str, ...]) -> None:
        self.member_id = member_id
        self.urls = urls
        self.queue: collections.deque[Message] = collections.deque()
        self.wakeup = asyncio.Event()
        self.writer: asyncio.Task | None = None
        self.prober: asyncio.Task | None = None
        # The writer's channel while its stream is up (after the dial
        # check); the prober borrows it (no second connection) and does
        # nothing while there is none.
        self.channel: grpc.aio.Channel | None = None
        self.channel_target: tuple[str, bool] = ("", False)   # (host:port, TLS) of that channel
        # The last probe's round trip in seconds, None before the first.
        self.rtt: float | None = None
        self.snapshots: set[asyncio.Task] = set()
        # time.monotonic() before which the plain-TCP stream is not tried
        # (the peer's port did not speak it).
        self.raw_retry_at = 0.0
        # None: never connected yet (messages wait); False: down (messages
        # are dropped); True: a stream is up.
        self.up: bool | None = None
        self.active_since: float | None = None
        self.sent = 0
        self.dropped = 0
        # etcd_network_peer_sent_bytes_total / _received_bytes_total
        self.sent_bytes = 0
        self.received_bytes = 0

    def status(self) -> PeerStatus:
        return PeerStatus(self.member_id, self.urls, bool(self.up), self.active_since,
                          len(self.queue), self.sent, self.dropped, self.sent_bytes, self.received_bytes,
                          self.rtt)


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
        snapshot_dir: str | None = None,
        max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        raw_streams: bool = True,
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
        # Set by the node: (peer id) -> None, called (on the loop, never from
        # inside send()) when a peer refused our stream as from a removed member.
        self.on_removed: Callable[[int], None] | None = None
        # Set by the node (metrics): (peer id, seconds) for every answered
        # probe, etcd_network_peer_round_trip_time_seconds. Called on the loop.
        self.on_peer_rtt: Callable[[int, float], None] | None = None
        # Set by the node: async (target) -> why | None, checks a peer's TLS
        # certificate (--peer-cert-allowed-cn/-hostname) before anything is
        # streamed to it, as etcd's peer dialer does (engine/transport/certcheck).
        self.dial_check: Callable[[str], Awaitable[str | None]] | None = None
        # Received snapshots: spooled here and delivered as file references
        # (snapfile); without a directory they are spooled to an anonymous
        # temporary file and delivered as bytes once verified.
        self.snapshot_dir = snapshot_dir
        self.max_snapshot_bytes = max_snapshot_bytes
        self._snapshot_receives = 0
        # Raft streams to http peers over peerwire's plain TCP (falling back
        # to Peer.Stream for a peer that does not speak it).
        self.raw_streams = raw_streams
        # The largest frame a peer's stream may send us (the peer gRPC
        # server's max_receive_message_length says the same for Peer.Stream).
        self.receive_limit = PEER_RECEIVE_BYTES
        self._warn = _RateLimitedLog()
        # Counters for tests and the console: what was refused or dropped.
        self.refused_streams = 0
        self.dropped_incoming = 0
        # Heartbeats lost before they left (queue full, stream down): etcd's
        # etcd_server_heartbeat_send_failures_total.
        self.heartbeat_send_failures = 0
        if snapshot_dir is not None:
            _remove_partials(snapshot_dir)

    # -- membership -------------------------------------------------------------

    def add_peer(self, member_id: int, urls: Sequence[str]) -> None:
        """Start talking to `member_id`. Adding a known peer updates its URLs.

        Never raises on the URLs: a peer none of whose URLs this transport
        can dial is kept as an unreachable peer (one warning), as etcd keeps
        a member it cannot reach."""
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
        peer.prober = self._spawn(self._run_prober(peer), f"peer-{member_id:x}-prober")

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
        if peer.prober is not None:
            peer.prober.cancel()
        for task in peer.snapshots:
            task.cancel()
        peer.queue.clear()

    def is_removed(self, member_id: int) -> bool:
        return member_id in self._removed

    def peers(self) -> dict[int, PeerStatus]:
        return {pid: p.status() for pid, p in self._peers.items()}

    def is_active(self, member_id: int) -> bool:
        peer = self._peers.get(member_id)
        return bool(peer and peer.up)

    # -- sending ----------------------------------------------------------------

    def send(self, msgs: Sequence[Message]) -> None:
        """Queue `msgs` for their peers. Never blocks, never awaits.

        A MsgSnap whose snapshot.data is a file reference (snapfile) hands
        that file to the transport: it is deleted once sent or lost."""
        if self._closed:
            for m in msgs:
                if m.type == MSG_SNAP:
                    snapfile.discard(m.snapshot.data)
            return
        if not msgs:
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
            snapfile.discard(m.snapshot.data)
            self._notify(self._on_snapshot_status, m.to, False)

    def _deliver_out(self, to: int, msgs: list[Message]) -> None:
        """Messages that passed the fault filter: onto the peer's queue."""
        if self._closed:
            for m in msgs:
                if m.type == MSG_SNAP:
                    snapfile.discard(m.snapshot.data)
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
            self._count_heartbeats(lost)
            self._report_lost(to, lost)

    def _count_heartbeats(self, lost) -> None:
        self.heartbeat_send_failures += sum(1 for m in lost if m.type == raftpb.MsgHeartbeat)

    def _report_lost(self, to: int, msgs: list[Message]) -> None:
        # One report per peer per call is enough: Raft only needs to know
        # that the peer should be probed again.
        self._notify(self._on_unreachable, to)
        for m in msgs:
            if m.type == MSG_SNAP:
                snapfile.discard(m.snapshot.data)
                self._notify(self._on_snapshot_status, to, False)

    async def _run_writer(self, peer: _Peer) -> None:
        """Connect, stream batches until something fails, back off, repeat."""
        dialable, why = self._dialable(peer.urls)
        if not dialable:
            # Nothing to dial: the peer stays unreachable until its URLs
            # change (update_peer starts a new writer).
            self._mark_down(peer, f"cannot dial any of its URLs ({why})")
            await asyncio.Event().wait()
        backoff = BACKOFF_MIN
        url_index = 0
        stub_channel: grpc.aio.Channel | None = None
        current_url = None
        try:
            while True:
                url, target, secure = dialable[url_index % len(dialable)]
                if url != current_url:
                    if stub_channel is not None:
                        await _close_channel(stub_channel)
                    stub_channel = self._open_channel(target, secure, CHANNEL_OPTIONS)
                    current_url = url
                try:
                    await asyncio.wait_for(stub_channel.channel_ready(), CONNECT_TIMEOUT)
                except asyncio.TimeoutError:
                    self._mark_down(peer, f"no connection to {url} within {CONNECT_TIMEOUT}s")
                    url_index += 1  # several URLs: try the next one
                    continue        # channel_ready itself paces the retries
                if secure and self.dial_check is not None:
                    refused = await self.dial_check(target)
                    if refused is not None:
                        self._mark_down(peer, f"certificate of peer {peer.member_id:x} at {url} refused: {refused}")
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, BACKOFF_MAX)
                        continue
                started = time.monotonic()
                peer.channel = stub_channel  # the prober's, while the stream is up
                peer.channel_target = (target, secure)
                try:
                    error = None
                    until = None
                    if not secure and self.raw_streams:
                        if started >= peer.raw_retry_at:
                            error = await self._try_raw_stream(peer, url, target)
                        # Peer.Stream for a peer that did not speak the
                        # plain stream, asked again when its time is up.
                        until = peer.raw_retry_at
                    if error is None:
                        error = await self._stream(peer, stub_channel, until)
                finally:
                    peer.channel = None
                if error is None:
                    continue  # Peer.Stream's time is up, nothing lost: ask again at once
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

    async def _run_prober(self, peer: _Peer) -> None:
        """Probe the peer forever: measure the round trip, and hear a
        refusal "removed member" (then tell the host, which stops)."""
        delay = PROBE_FIRST_INTERVAL
        while True:
            await asyncio.sleep(delay)
            channel = peer.channel
            if channel is None:
                continue
            verdict = await self._probe(peer, channel)
            if verdict == "removed":
                return
            # Answered: every PROBE_INTERVAL. Failing (a joiner not known
            # yet, a member without Probe): backing off to that pace too.
            delay = PROBE_INTERVAL if verdict == "ok" else min(delay * 2, PROBE_INTERVAL)

    async def _probe(self, peer: _Peer, channel: grpc.aio.Channel) -> str:
        """One probe through the fault filter: "ok", "removed", or "failed"."""
        passed = self._loop.create_future()
        self.faults.filter(peer.member_id, Direction.OUT, [True],
                           lambda _items: passed.done() or passed.set_result(True),
                           lambda _item: passed.done() or passed.set_result(False))
        started = time.monotonic()  # an injected delay counts, as netem's would
        if not await passed:
            return "failed"
        request = peer_pb2.ProbeRequest(from_member=self.member_id, cluster_id=self.cluster_id,
                                        to_member=peer.member_id)
        try:
            await peer_pb2_grpc.PeerStub(channel).Probe(request, timeout=PROBE_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            if e.code() == REFUSED_CODE and (e.details() or "").startswith(REMOVED_DETAILS):
                # grpc may have reconnected the channel on its own since the
                # writer's dial check: whoever says "removed" (which stops
                # this member) must pass the check now, or it is not heard.
                target, secure = peer.channel_target
                if secure and self.dial_check is not None:
                    refused = await self.dial_check(target)
                    if refused is not None:
                        self._warn.warn(("probe-refused", peer.member_id),
                                        "ignoring 'removed' from peer %x at %s: its certificate is refused (%s)",
                                        peer.member_id, target, refused)
                        return "failed"
                log.error("peer %x refused our probe: %s", peer.member_id, e.details())
                if self.on_removed is not None:
                    self._notify(self.on_removed, peer.member_id)
                return "removed"
            return "failed"  # down, not a member yet, an old member: proves nothing
        except (asyncio.InvalidStateError, grpc.RpcError):
            return "failed"  # the writer closed the channel under us
        peer.rtt = time.monotonic() - started
        if self.on_peer_rtt is not None:
            self._notify(self.on_peer_rtt, peer.member_id, peer.rtt)
        return "ok"

    async def _stream(self, peer: _Peer, channel: grpc.aio.Channel, until: float | None = None) -> str | None:
        """Write batches on Peer.Stream until a write fails; returns why it
        stopped. With `until` (time.monotonic()), it also ends at the first
        moment after it with nothing queued, returning None (nothing lost)."""
        stub = peer_pb2_grpc.PeerStub(channel)
        # No deadline: the stream lives as long as the connection. It ends by
        # a failed or stalled write (WRITE_TIMEOUT), keepalive, or cancel.
        call = stub.Stream()
        if not peer.up:
            log.info("stream to peer %x up (Peer.Stream)", peer.member_id)
            peer.active_since = time.time()
        peer.up = True
        try:
            while True:
                if not peer.queue:
                    if until is not None and time.monotonic() >= until:
                        return None
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                    continue  # (a wakeup with nothing queued is possible)
                batch = self._take_batch(peer)
                try:
                    await asyncio.wait_for(call.write(batch), WRITE_TIMEOUT)
                except asyncio.TimeoutError:
                    return f"write to peer {peer.member_id:x} stalled for {WRITE_TIMEOUT}s"
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.RpcError) as e:
                    await self._check_removed(peer, call)
                    return f"stream to peer {peer.member_id:x} failed: {_describe_error(e)}"
                peer.sent += len(batch.msgs)
                peer.sent_bytes += batch.ByteSize()
        finally:
            call.cancel()

    async def _try_raw_stream(self, peer: _Peer, url: str, target: str) -> str | None:
        """Stream to the peer over peerwire's plain TCP; returns why it
        stopped, or None when the peer's port does not speak it (then
        Peer.Stream, until RAW_RETRY_SECONDS from now)."""
        try:
            host, port = split_host_port(target)
            opened = await peerwire.open_stream(host, int(port))
        except (OSError, asyncio.TimeoutError, ValueError) as e:   # (URLError is a ValueError)
            return f"no stream connection to {url}: {_describe_error(e)}"
        if opened is None:
            peer.raw_retry_at = time.monotonic() + RAW_RETRY_SECONDS
            log.info("peer %x at %s does not take plain TCP streams: Peer.Stream for %.0f s",
                     peer.member_id, url, RAW_RETRY_SECONDS)
            return None
        return await self._raw_stream(peer, *opened)

    async def _raw_stream(self, peer: _Peer, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> str:
        """Write batches as frames until the connection fails, the peer
        refuses the stream, or it stops acknowledging; returns why."""
        state = _RawStreamState()
        if not peer.up:
            log.info("stream to peer %x up", peer.member_id)
            peer.active_since = time.time()
        peer.up = True
        helpers = [self._spawn(self._raw_answers(peer, reader, state), f"peer-{peer.member_id:x}-answers"),
                   self._spawn(self._raw_watchdog(peer, state), f"peer-{peer.member_id:x}-watchdog")]
        transport = writer.transport
        # The first frame names us and nothing else (peerwire.HELLO_LIMIT).
        writer.write(peerwire.frame(peer_pb2.MessageBatch(
            from_member=self.member_id, cluster_id=self.cluster_id,
            to_member=peer.member_id).SerializeToString()))
        try:
            while state.ended is None:
                if not peer.queue:
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                    continue
                batch = self._take_batch(peer)
                data = batch.SerializeToString()
                writer.write(peerwire.frame(data))
                if state.unacked_since is None:
                    state.unacked_since = time.monotonic()
                peer.sent += len(batch.msgs)
                peer.sent_bytes += len(data)
                if transport.get_write_buffer_size() > RAW_HIGH_WATER:
                    try:
                        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
                    except asyncio.TimeoutError:
                        return f"write to peer {peer.member_id:x} stalled for {WRITE_TIMEOUT}s"
                    except OSError as e:
                        return f"stream to peer {peer.member_id:x} failed: {_describe_error(e)}"
            return state.ended
        finally:
            for task in helpers:
                task.cancel()
            writer.close()

    async def _raw_answers(self, peer: _Peer, reader: asyncio.StreamReader, state: "_RawStreamState") -> None:
        """Read what the peer sends back on a plain-TCP stream: acks, or
        the refusal that ends it."""
        try:
            while True:
                body = await peerwire.read_frame(reader, 1 << 16)
                kind = body[0] if body else 0
                if kind == peerwire.KIND_ACK:
                    state.unacked_since = None
                    continue
                if kind == peerwire.KIND_END and len(body) >= 2:
                    code = _STATUS_BY_NUMBER.get(body[1], grpc.StatusCode.UNKNOWN)
                    details = body[2:].decode("utf-8", "replace")
                    self._stream_refused(peer, code, details)
                    state.ended = f"stream to peer {peer.member_id:x} failed: {code.name}: {details}"
                else:
                    state.ended = f"stream to peer {peer.member_id:x}: unexpected answer (kind {kind})"
                return
        except (asyncio.IncompleteReadError, OSError, ValueError) as e:
            state.ended = f"stream to peer {peer.member_id:x} closed: {_describe_error(e)}"
        finally:
            peer.wakeup.set()

    async def _raw_watchdog(self, peer: _Peer, state: "_RawStreamState") -> None:
        """End a stream whose peer stopped acknowledging what we write."""
        while state.ended is None:
            await asyncio.sleep(peerwire.ACK_INTERVAL)
            since = state.unacked_since
            if since is not None and time.monotonic() - since > peerwire.DEAD_AFTER:
                state.ended = f"peer {peer.member_id:x} acknowledged nothing for {peerwire.DEAD_AFTER:.0f}s"
                peer.wakeup.set()

    async def _check_removed(self, peer: _Peer, call) -> None:
        """The stream ended: if the peer refused it as from a removed
        member, tell the host (once per refusal)."""
        try:
            code = await asyncio.wait_for(call.code(), 1.0)
            details = await asyncio.wait_for(call.details(), 1.0)
        except Exception:  # no status to read (cancelled, closing)
            return
        self._stream_refused(peer, code, details or "")

    def _stream_refused(self, peer: _Peer, code: grpc.StatusCode, details: str) -> None:
        """A stream (either wire) ended with this status: if the peer
        refused it as from a removed member, tell the host."""
        if code == REFUSED_CODE and details.startswith(REMOVED_DETAILS):
            log.error("peer %x refused our stream: %s", peer.member_id, details)
            if self.on_removed is not None:
                self._notify(self.on_removed, peer.member_id)

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
        self._count_heartbeats(lost)
        if was is not False:
            # While closing, broken streams are expected, not news. A peer
            # that keeps refusing our stream is worth one line every few
            # seconds, not one per reconnect.
            if self._closed:
                log.debug("peer %x unreachable: %s", peer.member_id, why)
            else:
                self._warn.warn(("down", peer.member_id), "peer %x unreachable: %s",
                                peer.member_id, why)
        if was or lost:
            self._notify(self._on_unreachable, peer.member_id)

    async def _send_snapshot(self, peer: _Peer, m: Message) -> None:
        """One MsgSnap: header, the data in chunks, then its sha256. The data
        is either bytes or a file reference (snapfile); a referenced file is
        streamed from disk and deleted afterwards, whatever the outcome."""
        data = m.snapshot.data
        path = snapfile.ref_path(data)
        ok = False
        source = None
        try:
            if path is not None:
                try:
                    source = open(path, "rb")
                    size = os.fstat(source.fileno()).st_size
                except OSError as e:
                    log.warning("snapshot to peer %x failed: cannot read %s: %s",
                                peer.member_id, path, e)
                    return
            else:
                size = len(data)
            head = Message()
            head.CopyFrom(m)
            head.snapshot.ClearField("data")
            header = peer_pb2.SnapshotHeader(from_member=self.member_id, cluster_id=self.cluster_id,
                                             to_member=peer.member_id, msg=head, total_size=size)
            timeout = SNAPSHOT_TIMEOUT_BASE + SNAPSHOT_TIMEOUT_PER_MIB * size / (1 << 20)
            dialable, why = self._dialable(peer.urls)
            if not dialable:
                log.warning("snapshot to peer %x failed: cannot dial any of its URLs (%s)",
                            peer.member_id, why)
                return
            url, target, secure = dialable[0]
            channel = self._open_channel(target, secure, SNAPSHOT_CHANNEL_OPTIONS)
            try:
                try:
                    await asyncio.wait_for(channel.channel_ready(), CONNECT_TIMEOUT)
                except asyncio.TimeoutError:
                    log.warning("snapshot to peer %x failed: no connection to %s within %ss",
                                peer.member_id, url, CONNECT_TIMEOUT)
                    return
                if secure and self.dial_check is not None:
                    refused = await self.dial_check(target)
                    if refused is not None:
                        log.warning("snapshot to peer %x failed: its certificate was refused: %s",
                                    peer.member_id, refused)
                        return
                stub = peer_pb2_grpc.PeerStub(channel)
                # The deadline bounds the whole transfer, however slow the peer.
                call = stub.SendSnapshot(timeout=timeout)
                try:
                    await call.write(peer_pb2.SnapshotChunk(header=header))
                    digest = hashlib.sha256()
                    sent = 0
                    if source is not None:
                        loop = asyncio.get_running_loop()
                        while sent < size:
                            chunk = await loop.run_in_executor(
                                None, source.read, min(SNAPSHOT_CHUNK_BYTES, size - sent))
                            if not chunk:
                                raise OSError(f"{path} shrank while being sent")
                            digest.update(chunk)
                            sent += len(chunk)
                            await call.write(peer_pb2.SnapshotChunk(data=chunk))
                    else:
                        view = memoryview(data)
                        for off in range(0, size, SNAPSHOT_CHUNK_BYTES):
                            chunk = bytes(view[off:off + SNAPSHOT_CHUNK_BYTES])
                            digest.update(chunk)
                            await call.write(peer_pb2.SnapshotChunk(data=chunk))
                    await call.write(peer_pb2.SnapshotChunk(data=digest.digest()))
                    await call.done_writing()
                    await call
                    ok = True
                    log.info("snapshot (index %d, %d bytes) sent to peer %x",
                             m.snapshot.metadata.index, size, peer.member_id)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.RpcError,
                        OSError) as e:
                    log.warning("snapshot to peer %x failed: %s", peer.member_id,
                                _describe_error(e))
                finally:
                    call.cancel()
            finally:
                await _close_channel(channel)
        finally:
            if source is not None:
                source.close()
            snapfile.discard(data)
            if not self._closed and peer.member_id in self._peers:
                if not ok:
                    self._on_unreachable(peer.member_id)
                self._on_snapshot_status(peer.member_id, ok)

    def _open_channel(self, target: str, secure: bool,
                      options: Sequence[tuple[str, Any]]) -> grpc.aio.Channel:
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
        if to_member != self.member_id:
            return f"this is member {self.member_id:x}, not {to_member:x}"
        if from_member == 0:
            return "sender has no member id"
        if from_member in self._removed:
            return f"{REMOVED_DETAILS}: member {from_member:x} was removed from the cluster"
        if from_member not in self._peers:
            # etcd: "error sender not found". A member that joined after
            # what we have applied is refused too, until we apply its entry.
            return f"{from_member:x} is not a member of this cluster (as far as {self.member_id:x} knows)"
        return None

    def _refuse(self, from_member: int, why: str) -> None:
        self.refused_streams += 1
        # Non-members pick their ids freely: one key for all of them, so a
        # flood of made-up ids is still one warning every few seconds.
        key = from_member if from_member in self._peers else "non-member"
        self._warn.warn(("refused", key), "refusing peer stream from %x: %s", from_member, why)

    def _drop_incoming(self, sender: int, why: str) -> None:
        self.dropped_incoming += 1
        self._warn.warn(("dropped", sender), "dropping a message from peer %x: %s", sender, why)

    def _receive(self, from_member: int, msgs: list[Message]) -> None:
        self.faults.filter(from_member, Direction.IN, msgs, self._deliver_in)

    def _deliver_in(self, msgs: list[Message]) -> None:
        if self._closed or not msgs:
            for m in msgs:
                if m.type == MSG_SNAP:
                    snapfile.discard(m.snapshot.data)
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
        for m in self.faults.cancel_pending():
            if getattr(m, "type", None) == MSG_SNAP:
                snapfile.discard(m.snapshot.data)
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
        return tuple(str(u) for u in urls)

    def _dialable(self, urls: Sequence[str]) -> tuple[list[tuple[str, str, bool]], str]:
        """The URLs this transport can open a channel to, as (url, target,
        secure), and why the others cannot be dialled."""
        out: list[tuple[str, str, bool]] = []
        why: list[str] = []
        for url in urls:
            try:
                target, secure = dial_target(url)
            except URLError as e:
                why.append(f"{url!r}: {e}")
                continue
            if secure and self._tls is None:
                why.append(f"{url} is https but this member has no peer TLS credentials")
                continue
            out.append((url, target, secure))
        if not urls:
            why.append("no peer URLs")
        return out, "; ".join(why)


async def fetch_members(urls: Sequence[str], timeout: float = 2.0,
                        tls: grpc.ChannelCredentials | None = None,
                        dial_check: Callable[[str], Awaitable[str | None]] | None = None,
                        ) -> peer_pb2.MembersResponse:
    """Ask the first peer that answers for the cluster's member list. A
    peer whose certificate `dial_check` refuses is not asked (as the
    transport's own dials)."""
    last: Exception | str | None = None
    for url in urls:
        target, secure = url_target(url)
        if secure and dial_check is not None:
            refused = await dial_check(target)
            if refused is not None:
                last = f"certificate of {url} refused: {refused}"
                continue
        channel = (grpc.aio.secure_channel(target, tls) if secure and tls is not None
                   else grpc.aio.insecure_channel(target))
        try:
            stub = peer_pb2_grpc.PeerStub(channel)
            return await stub.Members(peer_pb2.MembersRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as e:
            last = e
        finally:
            await channel.close()
    why = last.details() if isinstance(last, grpc.aio.AioRpcError) else last
    raise ConnectionError(f"no peer answered at {', '.join(urls)}: {why}")


async def _close_channel(channel: grpc.aio.Channel) -> None:
    """Close a channel without waiting on it forever (see close())."""
    try:
        await asyncio.wait_for(channel.close(), CLOSE_TIMEOUT)
    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 -- closing is best effort
        pass


def _describe_error(e: BaseException) -> str:
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    if isinstance(e, asyncio.IncompleteReadError):
        return "connection closed by the peer"
    return type(e).__name__ + (f": {e}" if str(e) else "")


class _Refused(Exception):
    """A peer stream refused: its gRPC status and why."""

    def __init__(self, code: grpc.StatusCode, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


class _SnapshotSpool:
    """Where the chunks of one received snapshot go: a temporary file in the
    snapshot dir (delivered as a file reference), or an anonymous temporary
    file read back as bytes once verified."""

    def __init__(self, directory: str | None, sender: int, index: int) -> None:
        self.path: str | None = None
        if directory is not None:
            fd, self.path = tempfile.mkstemp(
                prefix=f"{SNAPSHOT_TMP_PREFIX}{sender:x}-{index}-", suffix=SNAPSHOT_TMP_SUFFIX,
                dir=directory)
            self.file = os.fdopen(fd, "w+b")
        else:
            self.file = tempfile.TemporaryFile(prefix=SNAPSHOT_TMP_PREFIX)
        self.kept = False

    def write(self, data: bytes) -> None:
        self.file.write(data)

    def finish(self) -> bytes:
        """fsync, then the snapshot.data to deliver."""
        self.file.flush()
        if self.path is None:
            self.file.seek(0)
            return self.file.read()
        os.fsync(self.file.fileno())
        self.file.close()
        _fsync_dir(os.path.dirname(self.path))
        self.kept = True
        return snapfile.file_ref(self.path)

    def discard(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        if self.path is not None and not self.kept:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_partials(directory: str) -> None:
    """Spool files left by a member that died while receiving a snapshot."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(SNAPSHOT_TMP_PREFIX) and name.endswith(SNAPSHOT_TMP_SUFFIX):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


async def _frames(t: PeerTransport, request_iterator):
    """The stream's messages; a frame that does not decode ends the stream
    with INVALID_ARGUMENT and a rate-limited warning (grpc would log a
    traceback per frame)."""
    try:
        async for item in request_iterator:
            yield item
    except DecodeError as e:
        t.refused_streams += 1
        t._warn.warn(("undecodable",), "refusing peer stream: undecodable frame (%s)", e)
        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "undecodable frame") from None


_STATUS_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


class _RawStreamState:
    """A plain-TCP stream's dialer side: why it ended (None while up) and
    since when written batches wait for an ack."""

    __slots__ = ("ended", "unacked_since")

    def __init__(self) -> None:
        self.ended: str | None = None
        self.unacked_since: float | None = None


class _StreamGate:
    """The checks every received batch passes, on Peer.Stream and on the
    plain-TCP stream alike: the first batch names the stream's sender, a
    current member talking to this cluster and this member; later batches
    keep that sender; at most MAX_BATCH_MSGS messages; each message checked
    on its own (bad ones dropped, not fatal)."""

    def __init__(self, t: PeerTransport) -> None:
        self.t = t
        self.sender: int | None = None

    def admit(self, batch: peer_pb2.MessageBatch) -> tuple[grpc.StatusCode, str] | None:
        """None, or the status and why the stream must end now."""
        t = self.t
        sender = self.sender
        if sender is None:
            why = t._check_incoming(batch.from_member, batch.cluster_id, batch.to_member)
            if why is not None:
                t._refuse(batch.from_member, why)
                return REFUSED_CODE, why
            sender = self.sender = batch.from_member
        elif (batch.from_member != sender or batch.cluster_id != t.cluster_id
              or batch.to_member != t.member_id):
            why = (f"stream of {sender:x} switched to sender {batch.from_member:x} "
                   f"(cluster {batch.cluster_id:x}, to {batch.to_member:x})")
            t._refuse(sender, why)
            return grpc.StatusCode.FAILED_PRECONDITION, why
        if t._closed:
            return grpc.StatusCode.UNAVAILABLE, "transport closed"
        if sender not in t._peers:
            # Removed while its stream was open.
            why = t._check_incoming(sender, t.cluster_id, t.member_id) or "not a peer any more"
            t._refuse(sender, why)
            return REFUSED_CODE, why
        if len(batch.msgs) > MAX_BATCH_MSGS:
            why = f"batch of {len(batch.msgs)} messages (at most {MAX_BATCH_MSGS})"
            t._refuse(sender, why)
            return grpc.StatusCode.INVALID_ARGUMENT, why
        return None

    def deliver(self, batch: peer_pb2.MessageBatch, size: int) -> None:
        """An admitted batch (no await since admit): its good messages to the core."""
        t = self.t
        sender = self.sender
        t._peers[sender].received_bytes += size
        good = []
        for m in batch.msgs:
            why = check_message(m, sender, t.member_id)
            if why is None:
                good.append(m)
            else:
                t._drop_incoming(sender, why)
        if good:
            t._receive(sender, good)


async def serve_raw_stream(t: PeerTransport, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, deadline: float,
                           admitted: Callable[[], None]) -> None:
    """The receiving side of a plain-TCP stream (peerwire.PeerPort calls it
    after the MAGIC exchange): frames of MessageBatch, checked as on
    Peer.Stream; a refusal is sent back as KIND_END before closing. The
    first frame must come by `deadline` (loop time) and within
    peerwire.HELLO_LIMIT bytes; once the gate admitted it, `admitted()`."""
    loop = asyncio.get_running_loop()
    gate = _StreamGate(t)
    last_ack = -peerwire.ACK_INTERVAL
    pending_ack: asyncio.TimerHandle | None = None

    def send_ack() -> None:
        nonlocal last_ack, pending_ack
        pending_ack = None
        last_ack = loop.time()
        if not writer.is_closing():
            writer.write(peerwire.ack_frame())

    async def refuse(code: grpc.StatusCode, why: str) -> None:
        writer.write(peerwire.end_frame(code.value[0], why))
        await peerwire.linger(reader, writer)

    first = True
    try:
        while True:
            try:
                if first:
                    body = await asyncio.wait_for(peerwire.read_frame(reader, peerwire.HELLO_LIMIT),
                                                  max(0.0, deadline - loop.time()))
                else:
                    body = await peerwire.read_frame(reader, t.receive_limit)
            except asyncio.TimeoutError:
                return  # greeted, then silent: not a member's dialer
            except ValueError as e:
                t._refuse(gate.sender or 0, str(e))
                await refuse(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
                return
            except (asyncio.IncompleteReadError, OSError):
                return  # the dialer went away
            try:
                batch = peer_pb2.MessageBatch.FromString(body)
            except DecodeError as e:
                t.refused_streams += 1
                t._warn.warn(("undecodable",), "refusing peer stream: undecodable frame (%s)", e)
                await refuse(grpc.StatusCode.INVALID_ARGUMENT, "undecodable frame")
                return
            refusal = gate.admit(batch)
            if refusal is not None:
                await refuse(*refusal)
                return
            if first:
                first = False
                admitted()
            gate.deliver(batch, len(body))
            if pending_ack is None:
                wait = last_ack + peerwire.ACK_INTERVAL - loop.time()
                if wait <= 0:
                    send_ack()
                else:
                    pending_ack = loop.call_later(wait, send_ack)
    finally:
        if pending_ack is not None:
            pending_ack.cancel()


def peer_port(t: PeerTransport, grpc_port: int) -> peerwire.PeerPort:
    """The listener for a member's http peer URLs, in front of its gRPC peer
    server on 127.0.0.1:`grpc_port` (engine/transport/peerwire)."""
    return peerwire.PeerPort(lambda r, w, deadline, admitted: serve_raw_stream(t, r, w, deadline, admitted),
                             grpc_port)


class _PeerServicer(peer_pb2_grpc.PeerServicer):
    def __init__(self, transport: PeerTransport) -> None:
        self._t = transport

    async def Stream(self, request_iterator, context):
        try:
            return await self._stream(request_iterator, context)
        except _Refused as e:
            await context.abort(e.code, e.why)

    async def _stream(self, request_iterator, context):
        gate = _StreamGate(self._t)
        async for batch in _frames(self._t, request_iterator):
            refusal = gate.admit(batch)
            if refusal is not None:
                await context.abort(*refusal)
            gate.deliver(batch, batch.ByteSize())
        return peer_pb2.StreamAck()

    async def SendSnapshot(self, request_iterator, context):
        t = self._t
        if t._snapshot_receives >= MAX_SNAPSHOT_RECEIVES:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"already receiving {t._snapshot_receives} snapshots")
        t._snapshot_receives += 1
        spool: _SnapshotSpool | None = None
        try:
            try:
                spool, msg, sender = await self._receive_snapshot(request_iterator)
            except _Refused as e:
                await context.abort(e.code, e.why)
            dropped: list[Message] = []
            t.faults.filter(sender, Direction.IN, [msg], t._deliver_in, dropped.append)
            if dropped:
                snapfile.discard(msg.snapshot.data)
                # Tell the sender, so its leader reports the snapshot as failed.
                await context.abort(grpc.StatusCode.UNAVAILABLE, "dropped by fault injection")
            return peer_pb2.SnapshotAck()
        finally:
            t._snapshot_receives -= 1
            if spool is not None:
                spool.discard()

    async def _receive_snapshot(self, request_iterator):
        """Spool one snapshot stream; returns (spool, MsgSnap to deliver,
        sender). Raises _Refused; the spool is discarded on any failure."""
        t = self._t
        loop = asyncio.get_running_loop()
        header: peer_pb2.SnapshotHeader | None = None
        spool: _SnapshotSpool | None = None
        digest = hashlib.sha256()
        got = 0
        trailer = b""
        chunks = max_chunks = 0
        frames = _frames(t, request_iterator).__aiter__()
        # The header must come at once; the whole transfer gets twice the
        # time a sender gives itself (so a peer trickling bytes cannot hold
        # one of the MAX_SNAPSHOT_RECEIVES slots for ever).
        deadline = loop.time() + SNAPSHOT_TIMEOUT_BASE
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(frames.__anext__(),
                                                   max(0.0, deadline - loop.time()))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    why = "snapshot stream too slow"
                    t._refuse(header.from_member if header is not None else 0, why)
                    raise _Refused(grpc.StatusCode.DEADLINE_EXCEEDED, why) from None
                kind = chunk.WhichOneof("kind")
                if header is None:
                    if kind != "header":
                        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                                       "snapshot stream must start with a header")
                    header = chunk.header
                    sender = header.from_member
                    why = t._check_incoming(sender, header.cluster_id, header.to_member)
                    if why is not None:
                        t._refuse(sender, why)
                        raise _Refused(REFUSED_CODE, why)
                    why = check_message(header.msg, sender, t.member_id, snapshot=True)
                    if why is None and header.msg.snapshot.data:
                        why = "snapshot header carrying data"
                    if why is not None:
                        t._refuse(sender, why)
                        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, why)
                    if header.total_size > t.max_snapshot_bytes:
                        why = (f"snapshot of {header.total_size} bytes is over this member's "
                               f"limit of {t.max_snapshot_bytes}")
                        t._refuse(sender, why)
                        raise _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, why)
                    spool = await loop.run_in_executor(
                        None, _SnapshotSpool, t.snapshot_dir, sender,
                        header.msg.snapshot.metadata.index)
                    # Our sender uses SNAPSHOT_CHUNK_BYTES chunks; allow far
                    # smaller ones, but not an endless trickle of empty frames.
                    max_chunks = 16 + header.total_size // SNAPSHOT_MIN_AVG_CHUNK
                    deadline = loop.time() + 2 * (
                        SNAPSHOT_TIMEOUT_BASE
                        + SNAPSHOT_TIMEOUT_PER_MIB * header.total_size / (1 << 20))
                    continue
                if kind != "data":
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "second snapshot header")
                chunks += 1
                if chunks > max_chunks:
                    why = f"snapshot in more than {max_chunks} chunks"
                    t._refuse(sender, why)
                    raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, why)
                if t._closed:
                    raise _Refused(grpc.StatusCode.UNAVAILABLE, "transport closed")
                if sender not in t._peers:
                    why = t._check_incoming(sender, t.cluster_id, t.member_id) or "not a peer any more"
                    raise _Refused(REFUSED_CODE, why)
                data = chunk.data
                room = header.total_size - got
                body, tail = (data[:room], data[room:]) if len(data) > room else (data, b"")
                if body:
                    digest.update(body)
                    await loop.run_in_executor(None, spool.write, body)
                    got += len(body)
                if tail:
                    trailer += tail
                    if len(trailer) > SNAPSHOT_DIGEST_BYTES:
                        why = f"snapshot data exceeds announced {header.total_size} bytes"
                        t._refuse(sender, why)
                        raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, why)
            if header is None:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "empty snapshot stream")
            if got != header.total_size or len(trailer) != SNAPSHOT_DIGEST_BYTES:
                why = (f"snapshot cut short: {got} of {header.total_size} bytes, "
                       f"{len(trailer)} of {SNAPSHOT_DIGEST_BYTES} checksum bytes")
                t._refuse(sender, why)
                raise _Refused(grpc.StatusCode.DATA_LOSS, why)
            if trailer != digest.digest():
                why = "snapshot checksum mismatch"
                t._refuse(sender, why)
                raise _Refused(grpc.StatusCode.DATA_LOSS, why)
            data = await loop.run_in_executor(None, spool.finish)
            if t.snapshot_dir is None and snapfile.ref_path(data) is not None:
                # Only this member makes file references.
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT,
                               "snapshot data looks like a file reference")
            msg = Message()
            msg.CopyFrom(header.msg)
            msg.snapshot.data = data
            log.info("snapshot (index %d, %d bytes) received from peer %x",
                     msg.snapshot.metadata.index, got, sender)
            return spool, msg, sender
        except BaseException:
            if spool is not None:
                spool.discard()
            raise

    async def Probe(self, request, context):
        t = self._t
        why = t._check_incoming(request.from_member, request.cluster_id, request.to_member)
        if why is not None:
            # Not counted or logged as a refused stream: a joiner probes
            # before we apply its ADD, and its stream says the same anyway.
            await context.abort(REFUSED_CODE, why)
        # The reverse direction's faults apply to the answer: a probe over a
        # link cut this way goes unanswered, as on a real network.
        passed = asyncio.get_running_loop().create_future()
        t.faults.filter(request.from_member, Direction.IN, [True],
                        lambda _items: passed.done() or passed.set_result(True),
                        lambda _item: passed.done() or passed.set_result(False))
        if not await passed:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "link cut by fault injection")
        return peer_pb2.ProbeResponse()

    async def Members(self, request, context):
        provider = self._t.members_provider
        if provider is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "member list not available yet")
        return provider()


def add_peer_service(server: grpc.aio.Server, transport: PeerTransport) -> None:
    """Register the Peer service for `transport` on the node's peer server."""
    peer_pb2_grpc.add_PeerServicer_to_server(_PeerServicer(transport), server)
