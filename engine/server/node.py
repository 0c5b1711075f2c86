"""Node: one cluster member's asyncio loop around the pure Raft core.

One task (`_run`) owns the RawNode. Everything else — gRPC handlers, the
peer transport, timers — only queues work (proposals, incoming messages,
read requests) and wakes it. For each Ready the task does, in order:

  1. persist: snapshot from the leader -> store + snap file + WAL marker;
     new entries + hard state -> WAL, ONE fsync for all of them (group
     commit: every proposal queued while the previous fsync ran goes in);
  2. send the messages (votes and acknowledgements only now, after 1);
  3. apply the committed entries, a run of normal ones in ONE SQLite
     transaction; conf changes through the core and the member table;
  4. answer the waiting clients (futures by request id, read barriers);
  5. advance, then maybe snapshot + compact the log.

The fsync runs in a worker thread so the loop keeps accepting requests
meanwhile; the core is not touched until it returns.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import gc
import logging
import os
import random
import sqlite3
import time
from typing import Callable

import grpc

from engine.server.config import MemberConfig
from engine.mvcc import errors as mvcc_errors
from engine.mvcc.apply import Applier, ApplyRejected, open_applier
from engine.mvcc.backend import unlink_db
from engine.proto import internal_pb2, rpc_pb2
from engine.proto import raft_pb2 as pb
from engine.raft import Config, ProposalDroppedError, RawNode, StateType
from engine.raft import confchange
from engine.raft.confchange import ConfChangeError
from engine.raft.errors import RaftError
from engine.server import errors
from engine.server.compactor import Compactor
from engine.server.membership import MemberRecord, Membership
from engine.server.raftlog import RaftLog, open_raft_log
from engine.server.waiters import Waiters
from engine.proto import peer_pb2
from engine.transport import FaultFilter, PeerTransport, snapfile
from engine.transport.transport import fetch_members
from engine.wal import WAL, layout

log = logging.getLogger("engine.server")

# Refuse new proposals when applying lags commit by this much (etcd's maxGapBetweenApplyAndCommitIndex).
MAX_APPLY_LAG = 5000
EVENT_HISTORY = 200
# A Ready that takes longer than this (seconds) is logged.
SLOW_READY = 0.1
# The apply task lets the event loop run after this long (seconds) of
# applying, also inside one request (a nested txn of 30,000 writes), so
# heartbeats, reads and Status keep flowing: a fraction of a heartbeat.
APPLY_SLICE = 0.01
# Committed requests applied in one SQLite transaction at most (a member
# catching up applies thousands per Ready): answers go out, and what waits
# for the apply lock gets its turn, between chunks.
APPLY_CHUNK = 512
# Loop lag (the longest gap between ticker wakeups beyond the interval) is
# reported over this many seconds, and its maximum since start.
LAG_WINDOW = 5.0
# After applying the conf change that removes it, a member stops this many
# seconds later (etcd's stopWithDelay: the leader's messages carrying the
# commit still go out), then the process exits with status 0, as etcd's.
REMOVED_STOP_DELAY = 1.0
REMOVED_MESSAGE = "the member has been permanently removed from the cluster"
# Publishing our name and client URLs is retried until done or stopped,
# waiting this long (seconds) first, doubling up to the second.
PUBLISH_BACKOFF = (0.1, 2.0)
# Test-only fault injection, read once at start (see _TestFault).
TEST_FAULT_ENV = "RAFTNODE_TEST_FAULT"
# Errors that are the machine's, not the entry's: applying must stop (fatal),
# never skip the entry, or members would diverge. (Requests: only
# ApplyRejected, raised by the applier for one request's own semantics, is
# skipped; anything else out of apply_batch is fatal.)
_FATAL_APPLY_ERRORS = (OSError, MemoryError, sqlite3.Error)


@dataclasses.dataclass
class TimelineEvent:
    at: float        # unix time
    # elected, leader-lost, campaign, transfer, member, snapshot, alarm,
    # compaction, start
    kind: str
    text: str
    term: int = 0    # for the leader events: the term they are about
    leader: int = 0  # elected: the new leader; transfer: the target


class _TestFault:
    """RAFTNODE_TEST_FAULT=fail:<key> | wedge:<key> | stall:<key>, for tests
    only: when a committed entry holding <key> reaches the loop, raise out of
    the raft loop (a bug or a disk error), block the event loop for good (a
    wedged member) or for STALL seconds (a slow apply). Absent (the
    default), nothing is checked."""

    STALL = 1.0

    def __init__(self, spec: str) -> None:
        mode, _, key = spec.partition(":")
        if mode not in ("fail", "wedge", "stall") or not key:
            raise ValueError(f"{TEST_FAULT_ENV}: expected fail:<key>, wedge:<key> or stall:<key>, got {spec!r}")
        self.mode, self.key = mode, key.encode()

    @classmethod
    def from_env(cls) -> "_TestFault | None":
        spec = os.environ.get(TEST_FAULT_ENV)
        return cls(spec) if spec else None

    def check(self, entries) -> None:
        for e in entries:
            if self.key in e.data:
                if self.mode == "fail":
                    raise RuntimeError(f"test fault injected at entry {e.index} ({TEST_FAULT_ENV})")
                if self.mode == "stall":
                    log.warning("test fault: stalling the event loop %.1f s at entry %d (%s)",
                                self.STALL, e.index, TEST_FAULT_ENV)
                    time.sleep(self.STALL)
                    continue
                log.warning("test fault: wedging the event loop at entry %d (%s)", e.index, TEST_FAULT_ENV)
                time.sleep(3600)


# Snapshot files this member writes for a peer (the transport deletes each
# after sending); leftovers of a crash are removed at start.
OUT_SNAP_PREFIX = "out-snap-"


def _config_ids(cs: pb.ConfState) -> set[int]:
    """Every member of a (possibly joint) configuration."""
    return set(cs.voters) | set(cs.voters_outgoing) | set(cs.learners) | set(cs.learners_next)


def tune_gc() -> None:
    """CPython's cyclic collector at its defaults (a young collection every
    700 allocations, full ones scanning every live object) costs a member
    much of its CPU on a big apply and stops the event loop in full
    collections over the key index: applying the largest legal txn took
    0.48-0.74 s with loop stalls of 60-120 ms, 0.29-0.31 s and 30 ms with
    this. What the member allocates per request (protobufs, index entries)
    seldom forms cycles, so collecting rarely loses little memory; what
    exists once started (the index loaded from disk) is frozen out of
    collections altogether. Idempotent; process-wide."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _remove_outgoing(directory: str) -> None:
    for name in os.listdir(directory):
        if name.startswith(OUT_SNAP_PREFIX):
            _unlink_db(os.path.join(directory, name))


def _unlink_db(path: str) -> None:
    """Cleanup never stops the member: a file it cannot remove is a warning."""
    try:
        unlink_db(path)
    except OSError as e:
        log.warning("cannot remove %s: %s", path, e)


def _enum_name(enum, value: int) -> str:
    """A protobuf enum value's name, or the number for a value it does not
    define (clients may send any number)."""
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


def _metadata(member_id: int, cluster_id: int) -> bytes:
    return member_id.to_bytes(8, "big") + cluster_id.to_bytes(8, "big")


def _parse_metadata(b: bytes) -> tuple[int, int]:
    return int.from_bytes(b[:8], "big"), int.from_bytes(b[8:16], "big")


class Node:
    def __init__(self, cfg: MemberConfig) -> None:
        self.cfg = cfg
        self.member_id = cfg.member_id
        self.cluster_id = cfg.cluster_id
        self.faults = FaultFilter()
        self.events: collections.deque[TimelineEvent] = collections.deque(maxlen=EVENT_HISTORY)
        self.leader_id = 0
        self.started_at = time.time()
        # (request id, serialized request, leader term): the id lets the
        # loop drop a proposal whose caller gave up before it reaches raft;
        # a leader term (housekeeping's revokes) lets it drop one whose
        # leader is no longer (never forwarded to another leader).
        self._proposals: list[tuple[int, bytes, int]] = []
        self._conf_changes: list[pb.ConfChange] = []
        # Request ids handed to raft (proposed): a timeout on one of these is
        # indeterminate ("request timed out"); on any other it never was.
        self._handed: set[int] = set()
        self._incoming: list[pb.Message] = []
        self._local_calls: list[Callable[[], None]] = []
        self._read_waiters: list[asyncio.Future] = []
        self._reads_in_flight: dict[bytes, tuple[float, list[asyncio.Future]]] = {}
        self._waiters = Waiters()
        self._wake = asyncio.Event()
        # Committed entries go from the Ready loop to the apply task (etcd's
        # apply goroutine): the loop keeps ticking, sending and persisting
        # while a long batch applies. See _apply_loop.
        self._to_apply: collections.deque[list[pb.Entry]] = collections.deque()
        self._apply_wake = asyncio.Event()
        self._apply_idle = asyncio.Event()
        self._apply_idle.set()
        # Held by the apply task while a chunk of requests is applied (its
        # SQLite transaction open, the task possibly yielding inside one
        # long request). Whatever needs the store between batches holds it
        # too: a compaction or defrag step, pinning a reader for a hash,
        # registering or cancelling a watcher, a progress notification.
        self.apply_lock = asyncio.Lock()
        # The last entry applied to the store (etcd's appliedi). The core's
        # own log.applied moves as soon as entries are handed to the apply
        # task, so it is never the answer to "what has been applied".
        self.applied_index = 0
        # Set by the apply task when the store is synced at an index due
        # for a snapshot: (index, conf state there); the Ready loop then
        # writes the snapshot and compacts the log (it owns the WAL).
        self._snapshot_due: tuple[int, pb.ConfState] | None = None
        self._leader_changed = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task] = []
        self._bg_tasks: set[asyncio.Task] = set()
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wal")
        # Snapshot files (writing one for a peer, checking one from the
        # leader): O(db size), never on the loop, never behind a WAL fsync.
        self._snap_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="snap")
        # Checked snapshots from the leader, by their snapshot.data (a file
        # reference): the fresh db prepare_restore() made, installed (a quick
        # swap) when raft hands the snapshot back in a Ready.
        self._prepared: dict[bytes, str] = {}
        # The highest snapshot index received so far: an older snapshot still
        # waiting for the (one) preparing thread is skipped, not prepared.
        self._newest_snapshot_seen = 0
        # Snapshots from the leader being checked off the loop right now.
        self._preparing = 0
        self._req_seq = (int(time.time() * 1000) & 0xFFFF_FFFF) << 8
        self._snapshot_index = 0
        self._fatal: BaseException | None = None
        # Set when the member cannot go on (the raft loop or a task it needs
        # failed): the process stops serving and exits non-zero.
        self.failed = asyncio.Event()
        # Set once the member table holds our name and client URLs (published
        # through the log, or already there from an earlier run): etcd serves
        # clients only from then on (its ReadyNotify).
        self.published = asyncio.Event()
        # Set with `failed` when the member stops because it was removed
        # from the cluster: the process exits 0 then (etcd), not 1.
        self.removed_from_cluster = False
        self._test_fault = _TestFault.from_env()
        self._revoking = False  # a confirmation round for expired leases is running
        self.dropped_peer_messages = 0
        self._peer_warned_at = -1e9
        self._peer_tb_at = -1e9
        self.peer_invariant_failures = 0
        # Loop lag: (time, lag seconds) per ticker wakeup over LAG_WINDOW.
        self._lags: collections.deque[tuple[float, float]] = collections.deque()
        # When the raft loop last processed a tick (etcd's latestTickTs): a
        # loop stuck in a slow fsync stops processing them.
        self._last_tick = time.monotonic()
        self.loop_lag_max = 0.0
        self.compactor = Compactor(cfg.auto_compaction_period_seconds, cfg.auto_compaction_revisions)
        # Rates for the console (Inspect).
        self.applied_requests = 0
        self.proposed_requests = 0

    # -- start / stop -------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.cfg
        joining = cfg.initial_cluster_state == "existing" and not WAL.exists(layout.wal_dir(cfg.data_dir))
        if joining:
            await self._learn_ids_from_cluster()
        self.raftlog: RaftLog = open_raft_log(cfg.data_dir, _metadata(self.member_id, self.cluster_id))
        if not self.raftlog.is_new:
            # The WAL says who we are: a member added by `member add` has the
            # id the cluster gave it, not one derived from our flags.
            self.member_id, self.cluster_id = _parse_metadata(self.raftlog.metadata)
        self.applier: Applier = open_applier(cfg.data_dir, member_id=self.member_id,
                                             quota_bytes=cfg.quota_backend_bytes, clock=time.monotonic)
        self.membership = Membership(self.applier.backend)
        self.applier.register("member_attributes", self._apply_member_attributes)
        storage = self.raftlog.storage
        self._snapshot_index = storage.snapshot().metadata.index
        self.applied_index = self._snapshot_index
        election_ticks = max(2, cfg.election_timeout_ms // cfg.heartbeat_interval_ms)
        self.rn = RawNode(Config(
            id=self.member_id, storage=storage, election_tick=election_ticks, heartbeat_tick=1,
            # Pre-vote on (etcd 3.5's default; 3.4 had it off): a member back
            # from a partition must not depose a healthy leader.
            pre_vote=True, check_quorum=True, max_inflight_msgs=512,
            max_size_per_msg=1 << 20, max_committed_size_per_ready=64 << 20,
            rng=random.Random(self.member_id ^ int(time.time())),
        ))
        if self.raftlog.is_new and cfg.initial_cluster_state == "new":
            peers = []
            for m in cfg.initial_cluster:
                rec = MemberRecord(m.id, m.name, list(m.peer_urls), [])
                ctx = internal_pb2.ConfChangeContext(member=rec.to_pb())
                peers.append((m.id, ctx.SerializeToString()))
            self.rn.bootstrap(peers)
        self._snap_dir = str(layout.member_dir(cfg.data_dir) / "peer-snap")
        os.makedirs(self._snap_dir, mode=0o700, exist_ok=True)
        _remove_outgoing(self._snap_dir)
        self.transport = PeerTransport(self.member_id, self.cluster_id, self._on_messages,
                                       self._on_unreachable, self._on_snapshot_status,
                                       faults=self.faults, tls=self._peer_credentials(),
                                       snapshot_dir=self._snap_dir,
                                       # The store cannot grow much past its quota.
                                       max_snapshot_bytes=max(cfg.quota_backend_bytes * 11 // 10, 64 << 20))
        self.transport.members_provider = self._members_response
        self.transport.on_removed = self._on_removed_by_peer
        for m in cfg.initial_cluster:
            if m.id != self.member_id and m.id not in self.membership.removed:
                self._add_peer(m.id, list(m.peer_urls))
        for m in self.membership.sorted():
            if m.id != self.member_id:
                self._add_peer(m.id, m.peer_urls)
        self._sync_peers()   # refuse removed members' streams as removed (it tells them)
        self._note("start", f"member {self.member_id:x} started, term {self.rn.raft.term}, "
                            f"commit {self.rn.raft.log.committed}")
        if self._attributes_published():
            # Restarted with the same name and client URLs: serve clients at
            # once (a member restarted alone in a cluster without quorum can
            # still answer Status and serializable reads).
            self.published.set()
        loop = asyncio.get_running_loop()
        if self.member_id in self.membership.removed:
            # Our own store says so (applied before a crash or a restart).
            loop.call_soon(self._stop_removed, "this member's store records its removal")
        tune_gc()
        self._tasks = [loop.create_task(self._run(), name="raft-loop"),
                       loop.create_task(self._apply_loop(), name="apply"),
                       loop.create_task(self._ticker(), name="raft-ticker"),
                       loop.create_task(self._housekeeping(), name="housekeeping")]
        for t in self._tasks:
            t.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        """Every task of self._tasks runs until stop(): one that ends
        earlier means the member cannot go on."""
        if self._stopped or task.cancelled():
            return
        exc = task.exception()
        self._fail(f"{task.get_name()} failed" if exc else f"{task.get_name()} ended",
                   exc or RuntimeError(f"{task.get_name()} ended unexpectedly"))

    def _fail(self, what: str, exc: BaseException) -> None:
        """Fatal: log why, answer every waiting client, and tell the process
        (engine/cli) to stop serving and exit non-zero (`failed`)."""
        if self._fatal is not None or self._stopped:
            return
        log.critical("%s: %r -- this member stops serving and exits", what, exc,
                     exc_info=(type(exc), exc, exc.__traceback__))
        self._halt(exc)

    def _halt(self, exc: BaseException) -> None:
        """Stop taking work: answer every waiter, drop what is queued, and
        tell the process (engine/cli) to stop serving (`failed`)."""
        self._fatal = exc
        self._fail_waiters()
        self._fail_reads(errors.Stopped())
        self._proposals.clear()
        self._conf_changes.clear()
        self.failed.set()

    def _on_removed_by_peer(self, peer: int) -> None:
        """A peer refused our stream as from a removed member. It says so
        only once it has applied our removal (a committed entry; member ids
        are never reused), so its word is enough, as in etcd's rafthttp;
        a peer that has not applied our ADD yet answers "not a member",
        which never lands here."""
        self._stop_removed(f"peer {peer:x} refused our stream as from a removed member")

    def _stop_removed(self, why: str) -> None:
        """This member is no longer in the cluster: stop serving and let the
        process exit (status 0, etcd's). Its data dir must not be reused."""
        if self._fatal is not None or self._stopped:
            return
        log.error("%s (%s)", REMOVED_MESSAGE, why)
        log.warning("the data-dir used by this member must be removed")
        self._note("member", f"{REMOVED_MESSAGE}: stopping")
        self.removed_from_cluster = True
        self._halt(RuntimeError(REMOVED_MESSAGE))

    def _peer_credentials(self):
        """Client credentials for talking to peers over https (--peer-*-file)."""
        cfg = self.cfg
        if not cfg.peer_tls:
            return None

        def read(path: str) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()
        return grpc.ssl_channel_credentials(root_certificates=read(cfg.peer_trusted_ca_file),
                                            private_key=read(cfg.peer_key_file),
                                            certificate_chain=read(cfg.peer_cert_file))

    async def _learn_ids_from_cluster(self) -> None:
        """--initial-cluster-state existing on an empty data dir: ask the
        running members who we are (the id `member add` gave our peer URLs)."""
        cfg = self.cfg
        mine = set(cfg.initial_advertise_peer_urls)
        urls = [u for m in cfg.initial_cluster if not mine & set(m.peer_urls) for u in m.peer_urls]
        deadline = time.monotonic() + 10
        while True:
            try:
                info = await fetch_members(urls, tls=self._peer_credentials())
                break
            except ConnectionError as e:
                if time.monotonic() > deadline:
                    raise SystemExit(f"raftnode: cannot join: {e}") from None
                await asyncio.sleep(0.3)
        me = [m for m in info.members if mine & set(m.peer_urls)]
        if not me:
            raise SystemExit(f"raftnode: no member with peer URLs {','.join(sorted(mine))} in the "
                             f"existing cluster; add it first (etcdctl member add)")
        self.member_id, self.cluster_id = me[0].id, info.cluster_id

    def _members_response(self) -> peer_pb2.MembersResponse:
        out = peer_pb2.MembersResponse(cluster_id=self.cluster_id)
        for m in self.membership.sorted():
            out.members.add(id=m.id, name=m.name, peer_urls=m.peer_urls, client_urls=m.client_urls,
                            is_learner=m.is_learner)
        return out

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        tasks = [*self._tasks, *self._bg_tasks]
        for t in tasks:
            t.cancel()
        if tasks:
            # Bounded, like the transport's close: stopping must not hang.
            await asyncio.wait(tasks, timeout=2.0)
        await self.transport.close()
        self._fail_waiters()
        self._fail_reads(errors.Stopped())
        # A failed member may have its WAL thread stuck (a dead disk): do
        # not wait for it, the process exits anyway.
        self._io.shutdown(wait=self._fatal is None)
        self._snap_io.shutdown(wait=False, cancel_futures=True)
        for fresh in self._prepared.values():
            _unlink_db(fresh)
        self._prepared.clear()
        for close in (self.raftlog.close, self.applier.close):
            try:
                close()
            except Exception as e:  # after a fatal error, closing may fail too
                log.warning("closing after stop: %r", e)

    def _fail_waiters(self) -> None:
        """Answer every waiting proposal as the member stops. One raft
        already has may still commit (here before we stopped, or through
        the others): indeterminate, etcd's "request timed out". Only one
        never handed to raft gets the definite "server stopped"."""
        for rid in list(self._handed):
            self._waiters.trigger(rid, errors.Timeout())
        self._waiters.fail_all(errors.Stopped())

    def _fail_reads(self, exc: Exception) -> None:
        pending = self._read_waiters + [f for _, fs in self._reads_in_flight.values() for f in fs]
        self._read_waiters, self._reads_in_flight = [], {}
        for f in pending:
            if not f.done():
                f.set_exception(exc)

    def _note(self, kind: str, text: str, term: int = 0, leader: int = 0) -> None:
        self.events.append(TimelineEvent(time.time(), kind, text, term, leader))
        log.info("%s: %s", kind, text)

    # -- what handlers call ----------------------------------------------------------

    def next_request_id(self) -> int:
        self._req_seq += 1
        return ((self.member_id & 0xFFFF) << 48) | (self._req_seq & ((1 << 48) - 1))

    @property
    def is_leader(self) -> bool:
        return self.rn.raft.state is StateType.LEADER

    @property
    def is_learner(self) -> bool:
        return self.rn.raft.is_learner

    @property
    def term(self) -> int:
        return self.rn.raft.term

    async def propose(self, req: internal_pb2.InternalRequest, timeout: float, *, leader_term: int = 0):
        """Replicate a request through the log and return what applying it
        gave (an etcd response), raising its error.

        While there is no leader the request waits in a queue, up to the
        timeout; a request whose caller gave up (timeout, cancelled) is
        dropped from that queue before it reaches raft. So, as with etcd,
        a timeout before raft saw it is definite (DeadlineExceeded: "context
        deadline exceeded", never proposed) and only one after is
        indeterminate ("request timed out").

        With ``leader_term``, the request is a leader's own decision in that
        term (an expired lease's revoke): it reaches raft only while this
        member leads in that term, else its caller gets NotLeader (never
        proposed) -- a follower would forward it to the new leader."""
        self._check_running()
        if self.rn.raft.log.committed - self.applied_index > MAX_APPLY_LAG:
            raise errors.TooManyRequests()
        if not req.id:
            req.id = self.next_request_id()
        rid = req.id
        fut = self._waiters.register(rid)
        self._proposals.append((rid, req.SerializeToString(), leader_term))
        self.proposed_requests += 1
        self._wake.set()
        try:
            result = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise self._timeout_error(rid) from None
        finally:
            # Whatever ended the wait (answer, timeout, cancelled caller), the
            # loop must not propose this request any more.
            self._waiters.forget(rid)
            self._handed.discard(rid)
        if isinstance(result, Exception):
            raise result
        return result

    def _timeout_error(self, rid: int) -> errors.ServerError:
        if rid in self._handed:
            return errors.Timeout()
        return errors.DeadlineExceeded()

    async def read_barrier(self, timeout: float) -> None:
        """Linearizable read point (ReadIndex): returns once this member has
        applied everything committed before the call."""
        self._check_running()
        fut = asyncio.get_running_loop().create_future()
        self._read_waiters.append(fut)
        self._wake.set()
        deadline = time.monotonic() + timeout
        try:
            index = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            # etcd: a linearizable read without quorum answers "request timed out".
            raise errors.Timeout() from None
        if self.applied_index >= index:
            return
        try:
            await asyncio.wait_for(self._waiters.wait_applied(index), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise errors.TimeoutWaitAppliedIndex() from None

    async def propose_conf_change(self, cc: pb.ConfChange, timeout: float) -> None:
        """Propose a membership change and wait until it is applied here.
        Same rule as propose(): dropped before raft if the caller gave up."""
        self._check_running()
        cc.id = self.next_request_id()
        rid = cc.id
        fut = self._waiters.register(rid)
        self._conf_changes.append(cc)
        self._wake.set()
        try:
            result = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise self._timeout_error(rid) from None
        finally:
            self._waiters.forget(rid)
            self._handed.discard(rid)
        if isinstance(result, Exception):
            raise result

    async def transfer_leadership(self, target: int, timeout: float) -> None:
        if not self.is_leader:
            raise errors.NotLeader()
        if target not in self.rn.raft.voters or target == self.member_id:
            raise errors.BadLeaderTransferee()
        self._note("transfer", f"moving leadership to {target:x} in term {self.term}", self.term, target)
        self._local_calls.append(lambda: self.rn.transfer_leader(target))
        self._wake.set()
        deadline = time.monotonic() + timeout
        while self.leader_id != target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.Timeout()
            self._leader_changed.clear()
            try:
                await asyncio.wait_for(self._leader_changed.wait(), min(left, 0.1))
            except asyncio.TimeoutError:
                pass

    async def wait_leader(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.leader_id:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._leader_changed.clear()
            try:
                await asyncio.wait_for(self._leader_changed.wait(), min(left, 0.1))
            except asyncio.TimeoutError:
                pass
        return True

    async def wait_lessor_primary(self, timeout: float) -> bool:
        """On a new leader: wait until its lessor is primary (it has applied
        the first entry of its term). False if that did not happen in time
        or this member is not the leader any more."""
        deadline = time.monotonic() + timeout
        while not self.applier.lessor.primary:
            if not self.is_leader or time.monotonic() >= deadline or self._stopped:
                return False
            fut = self._waiters.wait_applied(self.applied_index + 1)
            try:
                await asyncio.wait_for(fut, min(0.05, max(0.0, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                pass
        return True

    def _check_running(self) -> None:
        if self._stopped:
            raise errors.Stopped()
        if self._fatal is not None:
            raise errors.Stopped()

    # -- transport callbacks ---------------------------------------------------------

    def _on_messages(self, msgs: list[pb.Message]) -> None:
        for m in msgs:
            if m.type == pb.MsgSnap and snapfile.ref_path(m.snapshot.data) is not None:
                self._newest_snapshot_seen = max(self._newest_snapshot_seen, m.snapshot.metadata.index)
                # A snapshot spooled to a file by the transport: checked off
                # the loop before raft sees it (an invalid one never does).
                self._background(self._check_incoming_snapshot(m))
            else:
                self._incoming.append(m)
        self._wake.set()

    async def _check_incoming_snapshot(self, m: pb.Message) -> None:
        path = snapfile.ref_path(m.snapshot.data)
        md = m.snapshot.metadata

        def prepare():
            # Preparing takes ~0.5-1 s per 5 MB; a leader may send a newer
            # snapshot meanwhile (it probes, we still reject, its log has
            # moved on). Preparing every queued one in turn installed older
            # and older snapshots, falling further behind each time (found by
            # the crash-cycle soak): skip a snapshot a newer one superseded.
            if md.index < self._newest_snapshot_seen:
                return None
            return self.applier.prepare_restore(path)
        self._preparing += 1
        try:
            fresh = await asyncio.get_running_loop().run_in_executor(self._snap_io, prepare)
        except mvcc_errors.InvalidSnapshot as e:
            log.error("snapshot at index %d from %x refused, not installed: %s", md.index, m.from_, e)
            return
        except Exception as e:
            log.error("snapshot at index %d from %x could not be read, not installed: %r",
                      md.index, m.from_, e)
            return
        finally:
            self._preparing -= 1
            snapfile.discard(m.snapshot.data)   # the spooled file is ours: done with it
        if fresh is None:
            log.info("snapshot at index %d from %x skipped: a newer one arrived while it waited",
                     md.index, m.from_)
            return
        if self._stopped or self._fatal is not None:
            _unlink_db(fresh)
            return
        old = self._prepared.pop(m.snapshot.data, None)
        if old is not None:
            _unlink_db(old)
        self._prepared[bytes(m.snapshot.data)] = fresh
        self._incoming.append(m)
        self._wake.set()

    def _on_unreachable(self, peer: int) -> None:
        self._local_calls.append(lambda: self.rn.report_unreachable(peer))
        self._wake.set()

    def _on_snapshot_status(self, peer: int, ok: bool) -> None:
        self._local_calls.append(lambda: self.rn.report_snapshot(peer, ok))
        self._wake.set()

    # -- the loop ------------------------------------------------------------------

    async def _ticker(self) -> None:
        interval = self.cfg.heartbeat_interval_ms / 1000
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self._record_lag(now, now - last - interval)
            last = now
            self._local_calls.append(self._tick)
            self._wake.set()

    def _tick(self) -> None:
        self._last_tick = time.monotonic()
        self.rn.tick()

    def is_active(self) -> bool:
        """The loop processed a tick within 3 heartbeat intervals (etcd's
        isActive): it is not stuck (a slow fsync, a blocked loop), so what
        the core believes about its leadership is current."""
        return time.monotonic() - self._last_tick < 3 * self.cfg.heartbeat_interval_ms / 1000

    async def ensure_leadership(self, timeout: float) -> bool:
        """Whether this member still leads (etcd's ensureLeadership, #16822):
        at once while the loop is active; otherwise only after a ReadIndex
        round confirmed by a quorum, still leader in the same term. A leader
        stuck in fsync may have been deposed meanwhile without knowing."""
        if not self.is_leader:
            return False
        if self.is_active():
            return True
        term = self.term
        try:
            await self.read_barrier(timeout)
        except (errors.ServerError, mvcc_errors.MVCCError) as e:
            log.warning("leadership of term %d not confirmed: %s", term, e)
            return False
        if not (self.is_leader and self.term == term):
            log.warning("not the leader of term %d any more (term %d, leader %x)",
                        term, self.term, self.leader_id)
            return False
        return True

    def _record_lag(self, now: float, lag: float) -> None:
        """Loop lag: how much later than asked the ticker woke up. A lag of
        half an election timeout means heartbeats are late enough for the
        followers to start elections."""
        lag = max(0.0, lag)
        lags = self._lags
        lags.append((now, lag))
        while lags and lags[0][0] < now - LAG_WINDOW:
            lags.popleft()
        if lag > self.loop_lag_max:
            self.loop_lag_max = lag
        if lag * 1000 > self.cfg.election_timeout_ms / 2:
            log.warning("event loop lag %.0f ms (election timeout %d ms): something blocked the loop",
                        lag * 1000, self.cfg.election_timeout_ms)

    @property
    def loop_lag(self) -> float:
        """The longest ticker lag (seconds) over the last LAG_WINDOW seconds."""
        return max((lag for _, lag in self._lags), default=0.0)

    async def _run(self) -> None:
        try:
            while not self._stopped:
                await self._wake.wait()
                self._wake.clear()
                self._feed_core()
                while self.rn.has_ready() and not self._stopped:
                    await self._handle_ready(self.rn.ready())
                    # Requests that came in meanwhile join the next Ready.
                    self._feed_core()
                self._compact_log_if_due()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a bug or a disk error: stop serving, loudly, and exit
            self._fail("raft loop failed", e)

    def _feed_core(self) -> None:
        rn = self.rn
        calls, self._local_calls = self._local_calls, []
        for call in calls:
            call()
        msgs, self._incoming = self._incoming, []
        for m in msgs:
            why = self._implausible(m)
            if why is not None:
                self._warn_peer(m, why)
                continue
            if m.type == pb.MsgApp and self._preparing and m.index > rn.raft.log.last_index():
                # An append past our log while the leader's snapshot is still
                # being checked: rejecting it now would make the leader send
                # another snapshot (it believes the first one arrived). Left
                # unanswered, it probes again on its next heartbeat, when the
                # snapshot is in (etcd's follower answers only after its
                # snapshot is applied, likewise).
                continue
            try:
                rn.step(m)
            except ProposalDroppedError:
                pass
            except RaftError as e:
                # The core's own refusals of a message (compacted, ...).
                self._warn_peer(m, repr(e))
            except Exception as e:
                # A core invariant failed on a peer's message. Without peer
                # TLS the peer port has no authentication: anyone who claims
                # a member's id can send what the core asserts never comes
                # (an append conflicting with committed entries, ...), so
                # this cannot be told from a local bug by the message
                # alone. Never fatal (a forged message must not kill a
                # member); dropped and logged at ERROR.
                self._warn_peer(m, f"core invariant failed: {e!r} (a forged or corrupt message, "
                                   f"or a bug)", level=logging.ERROR, exc=e)
        # Once after the whole batch: a second checked snapshot in it must
        # still have its prepared file when it is stepped.
        if self._prepared and any(m.type == pb.MsgSnap for m in msgs):
            self._drop_unused_snapshots()
        props, self._proposals = self._proposals, []
        waiting = self._waiters.waiting
        # A proposal whose caller gave up is dropped here, before raft sees it.
        props = [p for p in props if waiting(p[0])]
        if any(p[2] for p in props):
            props = self._drop_stale_leader_proposals(props)
        if props:
            try:
                rn.propose_many([p[1] for p in props])
            except ProposalDroppedError:
                # No leader known yet: keep them for when there is one (the
                # waiting clients' own deadlines bound how long).
                self._proposals = props + self._proposals
            else:
                self._handed.update(p[0] for p in props)
        ccs, self._conf_changes = self._conf_changes, []
        ccs = [cc for cc in ccs if waiting(cc.id)]
        for i, cc in enumerate(ccs):
            try:
                rn.propose_conf_change(cc)
            except ProposalDroppedError:
                self._conf_changes.extend(ccs[i:])
                break
            self._handed.add(cc.id)
        self._start_read_round()

    def _drop_stale_leader_proposals(self, props: list[tuple[int, bytes, int]]) -> list[tuple[int, bytes, int]]:
        """Leader-only proposals (housekeeping's revokes, confirmed in their
        term) whose term is not this member's leadership any more: the loop
        may have stepped down (a stalled fsync, then the new leader's
        messages) between the confirmation and now. Proposing them would
        forward them to the new leader, which would apply them (#15247).
        Checked here, right before raft sees them, on the loop."""
        r = self.rn.raft
        leading = r.state is StateType.LEADER
        keep = []
        for p in props:
            if p[2] and not (leading and r.term == p[2]):
                log.warning("dropped a leader-only proposal of term %d (now term %d, %s): never proposed",
                            p[2], r.term, "leader" if leading else "not leader")
                self._waiters.trigger(p[0], errors.NotLeader())
            else:
                keep.append(p)
        return keep

    def _implausible(self, m: pb.Message) -> str | None:
        """What a peer's message claims that no correct member sends, checked
        before the core sees it (the core asserts on some of it)."""
        r = self.rn.raft
        last = r.log.last_index()
        if m.type == pb.MsgHeartbeat and m.commit > last and m.term >= r.term:
            # A leader never sends a commit past what the follower holds
            # (min(match, commit)); only a lying peer does.
            return f"heartbeat commit {m.commit} past our last index {last}"
        if (m.type == pb.MsgAppResp and not m.reject and m.index > last and m.term == r.term
                and r.state is StateType.LEADER):
            # An acknowledgement of entries this leader never had: counted,
            # it would commit (and apply) indexes past its log.
            return f"acknowledges index {m.index} past our last index {last}"
        return None

    def _warn_peer(self, m: pb.Message, why: str, level: int = logging.WARNING,
                   exc: BaseException | None = None) -> None:
        """Dropped a peer's message: logged at most once per second (an
        ERROR-level drop always, with its traceback once per minute)."""
        self.dropped_peer_messages += 1
        now = time.monotonic()
        name = pb.MessageType.Name(m.type) if m.type in pb.MessageType.values() else str(m.type)
        if level >= logging.ERROR:
            self.peer_invariant_failures += 1
            with_tb = now - self._peer_tb_at >= 60.0
            if with_tb:
                self._peer_tb_at = now
            if with_tb or now - self._peer_warned_at >= 1.0:
                self._peer_warned_at = now
                log.error("dropped %s from peer %x (term %d, index %d): %s (%d dropped so far)",
                          name, m.from_, m.term, m.index, why, self.dropped_peer_messages,
                          exc_info=exc if with_tb else None)
            return
        if now - self._peer_warned_at < 1.0:
            return
        self._peer_warned_at = now
        log.log(level, "dropped %s from peer %x: %s (%d dropped so far)", name, m.from_, why,
                self.dropped_peer_messages)

    def _start_read_round(self) -> None:
        now = time.monotonic()
        # A ReadIndex request can be lost (leader change, dropped message):
        # retry rounds older than an election timeout.
        stale = [c for c, (t, _) in self._reads_in_flight.items()
                 if now - t > self.cfg.election_timeout_ms / 1000]
        for c in stale:
            _, futs = self._reads_in_flight.pop(c)
            self._read_waiters = futs + self._read_waiters
        if not self._read_waiters or self._reads_in_flight:
            return
        ctx = self.next_request_id().to_bytes(8, "big")
        waiters, self._read_waiters = self._read_waiters, []
        try:
            self.rn.read_index(ctx)
        except ProposalDroppedError:
            self._read_waiters = waiters
            return
        self._reads_in_flight[ctx] = (now, waiters)

    async def _handle_ready(self, rd) -> None:
        t0 = time.monotonic()
        rl = self.raftlog
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        # A leader sends before it persists (thesis §10.2.1; etcd does the
        # same): its appends then travel while its own fsync runs. Safe
        # because nothing it sends promises its own durability, and it
        # applies and answers clients only in a later Ready, after this
        # fsync. Anyone else's messages (votes, acks) wait for the fsync.
        leader_sends_early = self.rn.raft.state is StateType.LEADER and rd.snapshot is None
        if leader_sends_early and rd.messages:
            self._send(rd.messages)
        # 1. persist
        if rd.snapshot is not None:
            # Everything committed before it is applied first (it is below
            # the snapshot; the store is then replaced).
            await self._apply_idle.wait()
            self._install_snapshot(rd.snapshot)
        if rd.entries or rd.hard_state is not None:
            # A Ready carrying a snapshot is always synced (etcd #10219): its
            # hard state holds the commit index the snapshot moved, and the
            # snapshot's WAL marker without it is a member that cannot start.
            if rd.must_sync or rd.snapshot is not None:
                await asyncio.get_running_loop().run_in_executor(self._io, rl.wal.save, rd.hard_state, rd.entries)
                rl.remember(rd.hard_state, rd.entries)
            else:
                # Only the commit index moved: write it, no fsync (etcd's MustSync).
                rl.save(rd.hard_state, rd.entries, sync=False)
        t1 = time.monotonic()
        # 2. send
        if rd.messages and not leader_sends_early:
            self._send(rd.messages)
        # 3. apply: handed to the apply task
        if rd.committed_entries:
            self._to_apply.append(rd.committed_entries)
            self._apply_idle.clear()
            self._apply_wake.set()
            if any(confchange.is_conf_change(e) for e in rd.committed_entries):
                # As etcd: a conf change is applied before the next Ready, so
                # votes, quorums and peers follow the new configuration.
                await self._apply_idle.wait()
        t2 = time.monotonic()
        if t2 - t0 > SLOW_READY:
            # etcd warns likewise: a slow disk delays heartbeats and every
            # waiting client.
            log.warning("slow ready: persist %.0f ms (%d entries), then %.0f ms (%d committed entries)",
                        (t1 - t0) * 1000, len(rd.entries), (t2 - t1) * 1000, len(rd.committed_entries))
        # 4. answer reads
        for rs in rd.read_states:
            _, futs = self._reads_in_flight.pop(rs.request_ctx, (0, []))
            for f in futs:
                if not f.done():
                    f.set_result(rs.index)
        self.rn.advance(rd)
        if rd.read_states:
            self._start_read_round()
        # 5. snapshot + compact, once the apply task has the store synced
        self._compact_log_if_due()

    def _on_soft_state(self, ss) -> None:
        r = self.rn.raft
        if ss.lead != self.leader_id:
            old = self.leader_id
            self.leader_id = ss.lead
            self._leader_changed.set()
            if ss.lead:
                self._note("elected", f"leader is {ss.lead:x} in term {r.term}"
                           + (f" (was {old:x})" if old else ""), r.term, ss.lead)
            else:
                self._note("leader-lost", f"no leader (term {r.term})", r.term)
        # The lessor becomes primary only when this leader applies the first
        # entry of its own term (see _apply), after every entry of the
        # previous terms (etcd's applyEntryNormal): a lease granted just
        # before the election exists by then. Losing leadership demotes now.
        if ss.state is not StateType.LEADER:
            self.applier.lessor.demote()
        if ss.state in (StateType.CANDIDATE, StateType.PRE_CANDIDATE):
            term = r.term + (ss.state is StateType.PRE_CANDIDATE)
            self._note("campaign", f"{ss.state.value} for term {term}", term)

    def _send(self, msgs: list[pb.Message]) -> None:
        out = []
        for m in msgs:
            if m.type == pb.MsgSnap:
                self._send_snapshot(m)
            else:
                out.append(m)
        self.transport.send(out)

    def _send_snapshot(self, m: pb.Message) -> None:
        """The core asks to send its last snapshot; like etcd we send the
        store as it is now instead (the snap file holds no data), with the
        raft metadata of the applied index it is pinned at. The copy is
        written to a file off the loop and the transport streams it from
        there (and deletes it)."""
        r = self.rn.raft
        reader = self.applier.pin()       # the store as applied now, on the loop
        index = reader.consistent_index
        try:
            term = r.log.term(index) or m.snapshot.metadata.term
        except Exception:  # compacted below: the core's own snapshot term
            term = m.snapshot.metadata.term
        conf = r.conf_state()
        self._background(self._send_snapshot_file(m, reader, index, term, conf))

    async def _send_snapshot_file(self, m: pb.Message, reader, index: int, term: int, conf) -> None:
        path = os.path.join(self._snap_dir, f"{OUT_SNAP_PREFIX}{m.to:x}-{index}-{self.next_request_id():x}")
        try:
            try:
                size = await asyncio.get_running_loop().run_in_executor(self._snap_io, reader.backup_to, path)
            finally:
                reader.release()
        except Exception as e:
            log.error("cannot write the snapshot at %d for %x: %r", index, m.to, e)
            _unlink_db(path)
            self._on_snapshot_status(m.to, False)
            return
        out = pb.Message()
        out.CopyFrom(m)
        out.snapshot.data = snapfile.file_ref(path)
        md = out.snapshot.metadata
        md.index = index
        md.term = term
        md.conf_state.CopyFrom(conf)
        if self._stopped or self._fatal is not None:
            _unlink_db(path)
            return
        self._note("snapshot", f"sending snapshot at {index} ({size} bytes) to {m.to:x}")
        self.transport.send([out])

    def _drop_unused_snapshots(self) -> None:
        """Checked snapshots raft did not take (stale, or replaced by a newer one)."""
        taking = self.rn.raft.log.unstable.snapshot
        keep = bytes(taking.data) if taking is not None else None
        for data in [d for d in self._prepared if d != keep]:
            _unlink_db(self._prepared.pop(data))

    def _install_snapshot(self, snap: pb.Snapshot) -> None:
        md = snap.metadata
        fresh = self._prepared.pop(bytes(snap.data), None)
        if fresh is not None:
            self.applier.install_prepared(fresh)
        elif snapfile.ref_path(snap.data) is not None:  # not checked beforehand (not expected)
            try:
                self.applier.restore_file(snapfile.ref_path(snap.data))
            finally:
                snapfile.discard(snap.data)
        else:
            self.applier.restore(snap.data)
        self.membership.reload()
        self._sync_peers()
        self.raftlog.save_snapshot(snap)
        self._snapshot_index = md.index
        self._snapshot_due = None
        self._note("snapshot", f"installed snapshot at {md.index} (term {md.term}) from the leader")
        self._set_applied(md.index)

    def _snapshot_if_due(self) -> None:
        """Apply task, between batches: once snapshot_count entries were
        applied since the last snapshot, make the store durable (before the
        log below it is dropped) and ask the Ready loop to compact."""
        applied = self.applied_index
        if self._snapshot_due is None and applied - self._snapshot_index >= self.cfg.snapshot_count:
            self.applier.sync()
            conf = pb.ConfState()
            conf.CopyFrom(self.rn.raft.conf_state())
            self._snapshot_due = (applied, conf)
            self._wake.set()

    def _compact_log_if_due(self) -> None:
        """Ready loop (it owns the WAL): write the snapshot the apply task
        asked for and drop the log below it."""
        due, self._snapshot_due = self._snapshot_due, None
        if due is None or due[0] <= self._snapshot_index:
            return
        applied, conf = due
        # Keep entries for slow followers to catch up from, whatever the
        # snapshot count (etcd: 5000). Keeping fewer than a follower falls
        # behind while it installs one snapshot is a livelock under steady
        # writes: the log it must continue from is gone again by the time it
        # has installed, so it gets snapshot after snapshot (found by the
        # crash-cycle soak with --snapshot-count=50, when keep was capped at
        # the snapshot count). Tests that want snapshots sent lower it with
        # --experimental-snapshot-catchup-entries.
        keep = self.cfg.snapshot_catchup_entries
        self._snapshot_index = self.raftlog.compact(applied, conf, keep)
        self._note("snapshot", f"snapshot at {applied}, log compacted")

    # -- applying ------------------------------------------------------------------

    async def _apply_loop(self) -> None:
        """The apply task: committed entries in the order the Ready loop
        handed them, each chunk of requests under the apply lock."""
        while not self._stopped:
            if not self._to_apply:
                self._apply_idle.set()
                await self._apply_wake.wait()
                self._apply_wake.clear()
                continue
            ents = self._to_apply[0]
            if self._test_fault is not None:
                self._test_fault.check(ents)
            await self._apply(ents)
            self._to_apply.popleft()
            self._snapshot_if_due()

    def _set_applied(self, index: int) -> None:
        self.applied_index = max(self.applied_index, index)
        self._waiters.applied_to(index)

    async def _drive(self, steps):
        """Run a step generator (applier.apply_batch_steps) to its end,
        letting the event loop run after each APPLY_SLICE of work."""
        budget = time.monotonic() + APPLY_SLICE
        n = 0
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            n += 1
            if not n & 63 and time.monotonic() > budget:
                await asyncio.sleep(0)
                budget = time.monotonic() + APPLY_SLICE

    async def _apply(self, ents: list[pb.Entry]) -> None:
        term = self.rn.raft.term
        batch: list[internal_pb2.InternalRequest] = []
        indexes: list[int] = []
        last_index = 0

        async def flush() -> None:
            nonlocal last_index
            if not last_index:
                return
            start = 0
            while True:
                reqs, idxs = batch[start:start + APPLY_CHUNK], indexes[start:start + APPLY_CHUNK]
                start += APPLY_CHUNK
                upto = last_index if start >= len(batch) else idxs[-1]
                async with self.apply_lock:
                    try:
                        results = await self._drive(
                            self.applier.apply_batch_steps(upto, reqs, term=term, indexes=idxs))
                    except ApplyRejected as e:  # the applier rolled the chunk back: find the culprit
                        log.error("applying %d entries up to %d failed (%r): applying them one by one",
                                  len(reqs), upto, e)
                        results = self._apply_one_by_one(upto, reqs, idxs, term)
                for req, res in zip(reqs, results):
                    if res is not None:
                        self._after_apply(req, res)
                        self._waiters.trigger(req.id, res)
                self.applied_requests += len(reqs)
                self._set_applied(upto)
                if start >= len(batch):
                    break
            batch.clear()
            indexes.clear()
            last_index = 0

        for e in ents:
            if confchange.is_conf_change(e):
                await flush()
                async with self.apply_lock:
                    self._apply_conf_change(e)
                self._set_applied(e.index)
                continue
            last_index = e.index
            if not e.data:
                # The empty entry a leader appends on election: once it is
                # applied here, so is everything of the previous terms.
                if e.term == term and self.is_leader and not self.applier.lessor.primary:
                    await flush()
                    last_index = e.index
                    self.applier.lessor.promote(time.monotonic(), extend=self.cfg.election_timeout_ms / 1000)
                    log.info("lessor promoted at index %d (first entry of term %d)", e.index, e.term)
                continue
            req = internal_pb2.InternalRequest()
            try:
                req.ParseFromString(e.data)
            except Exception:
                log.error("undecodable entry at %d, skipped", e.index)
                continue
            batch.append(req)
            indexes.append(e.index)
        await flush()
        self._set_applied(ents[-1].index)

    def _apply_one_by_one(self, last_index: int, batch, indexes: list[int], term: int) -> list:
        """Apply a batch that raised, request by request: one whose apply
        raises (a bug its content triggers: the same on every member) is
        logged loudly and skipped, its client told so, and the applied index
        still moves past it. Only ApplyRejected (raised while applying the
        request's own semantics) is skipped; anything else -- a db or disk
        error, a failure in a compaction step run with the commit, in
        notifying watchers -- is this member's, not the entry's: fatal (the
        loop fails, the process exits, replay after a restart re-applies)."""
        results = []
        for req, idx in zip(batch, indexes):
            try:
                results.extend(self.applier.apply_batch(idx, [req], term=term, indexes=[idx]))
            except ApplyRejected as e:
                log.error("entry %d (%s) cannot be applied: skipped (as on every member): %r",
                          idx, req.WhichOneof("request"), e.cause, exc_info=e.cause)
                self.applier.apply_batch(idx, [], term=term)
                results.append(errors.ApplyFailed())
        self.applier.apply_batch(last_index, [], term=term)
        return results

    def _after_apply(self, req: internal_pb2.InternalRequest, res) -> None:
        """Timeline notes for an applied request: display only, so nothing
        here may stop the loop (a client's enum value we have no name for
        is shown as its number)."""
        try:
            kind = req.WhichOneof("request")
            if kind == "member_attributes":
                pass
            elif (kind == "alarm" and not isinstance(res, Exception)
                  and req.alarm.action != rpc_pb2.AlarmRequest.GET):  # a GET changes nothing
                self._note("alarm", f"alarm {_enum_name(rpc_pb2.AlarmRequest.AlarmAction, req.alarm.action)} "
                                    f"{_enum_name(rpc_pb2.AlarmType, req.alarm.alarm)}")
            elif kind == "compaction" and not isinstance(res, Exception):
                self._note("compaction", f"compacted to revision {req.compaction.revision}")
        except Exception as e:
            log.error("noting an applied request failed (ignored): %r", e, exc_info=True)

    def _apply_member_attributes(self, req: internal_pb2.InternalRequest):
        m = req.member_attributes
        self.membership.set_attributes(m.ID, m.name, list(m.clientURLs))
        return rpc_pb2.MemberUpdateResponse()

    def _apply_conf_change(self, e: pb.Entry) -> None:
        """A committed conf change, v1 (etcdctl's, with the member record in
        its context) or v2 (joint consensus: the leader's own auto-leave is
        an empty one). Whatever it holds, it never stops the member: one
        that cannot take effect is logged loudly and skipped the same way on
        every member (and on replay), and the applied index still moves
        past it."""
        already = e.index <= self.applier.consistent_index
        v1 = e.type == pb.EntryConfChange
        ctx = internal_pb2.ConfChangeContext()
        cc = None
        try:
            cc = confchange.decode(e)
            if v1 and cc.context:
                ctx.ParseFromString(cc.context)
        except Exception as ex:  # undecodable: the same on every member
            refusal = f"undecodable ({ex!r})"
        else:
            refusal = self._conf_change_refusal(cc, ctx) if v1 else None
        rid = cc.id if v1 and cc is not None else 0
        if refusal is not None:
            # Checks that depend only on the entry: every member, and every
            # replay, refuses it alike; raft's config does not change.
            log.error("conf change at index %d refused and skipped: %s", e.index, refusal)
            self._skip_conf_change(e, already, rid, errors.BadURLs() if "URL" in refusal else errors.MemberNotFound())
            return
        before = _config_ids(self.rn.raft.conf_state())
        try:
            conf = self.rn.apply_conf_change(cc)
        except ConfChangeError as ex:
            # The core's config cannot take it (a leader never proposes
            # one; a forged or corrupt entry): skipped alike everywhere.
            log.error("conf change at index %d refused by the raft core and skipped: %s", e.index, ex)
            self._skip_conf_change(e, already, rid, errors.MemberNotFound())
            return
        if not already:
            try:
                if v1:
                    self._conf_change_effects(cc, ctx)
                else:
                    self._joint_change_effects(before, conf)
            except _FATAL_APPLY_ERRORS:
                raise
            except Exception as ex:
                log.error("conf change at index %d (%s): its member-table effect failed and was skipped: %r",
                          e.index, confchange.describe_changes(cc), ex, exc_info=True)
            # The member table and the applied index move together.
            self.applier.apply_batch(e.index, [], term=self.rn.raft.term)
        self._sync_peers()
        if self.member_id in before and self.member_id not in _config_ids(conf):
            self._note("member", "this member was removed from the cluster")
            asyncio.get_running_loop().call_later(
                REMOVED_STOP_DELAY, self._stop_removed, f"applied its removal at index {e.index}")
        if rid:
            self._waiters.trigger(rid, None)

    def _skip_conf_change(self, e: pb.Entry, already: bool, rid: int, err: Exception) -> None:
        if not already:
            self.applier.apply_batch(e.index, [], term=self.rn.raft.term)
        if rid:
            self._waiters.trigger(rid, err)

    def _joint_change_effects(self, before: set[int], conf: pb.ConfState) -> None:
        """The member table after a v2 change, from the config it left: ids
        gone are removed (outgoing voters go when the joint config is left),
        voters promoted, learners (a demotion completes at the leave)
        demoted. A v2 change carries no member records: one that adds an id
        the table does not know adds it unnamed, without URLs (loudly)."""
        after = _config_ids(conf)
        voters = set(conf.voters) | set(conf.voters_outgoing)
        for mid in sorted(before - after):
            if mid in self.membership.members:
                self.membership.remove(mid)
                self._note("member", f"member {mid:x} removed")
        for mid in sorted(after):
            learner = mid not in voters
            rec = self.membership.members.get(mid)
            if rec is None:
                if mid in self.membership.removed:
                    log.error("conf change adds member %x, which was removed before: member table unchanged", mid)
                    continue
                log.error("conf change adds member %x without a member record: added unnamed, without URLs", mid)
                self.membership.add(MemberRecord(mid, "", [], [], is_learner=learner))
            elif rec.is_learner and not learner:
                self.membership.promote(mid)
                self._note("member", f"member {mid:x} promoted to voter")
            elif learner and not rec.is_learner:
                self.membership.demote(mid)
                self._note("member", f"member {mid:x} demoted to learner")

    @staticmethod
    def _conf_change_refusal(cc: pb.ConfChange, ctx) -> str | None:
        """Why a conf change cannot be applied at all, judged from the entry
        alone (deterministic), or None."""
        if cc.type not in (pb.ConfChangeAddNode, pb.ConfChangeAddLearnerNode,
                           pb.ConfChangeRemoveNode, pb.ConfChangeUpdateNode):
            return f"unknown type {cc.type}"
        if cc.node_id == 0:
            return "no member id"
        if cc.type == pb.ConfChangeUpdateNode and not ctx.member.peerURLs:
            return "UpdateNode without peer URLs"
        return None

    def _conf_change_effects(self, cc: pb.ConfChange, ctx) -> None:
        t = cc.type
        if t in (pb.ConfChangeAddNode, pb.ConfChangeAddLearnerNode):
            if cc.node_id in self.membership.removed:
                log.error("conf change adds member %x, which was removed before: member table unchanged",
                          cc.node_id)
            elif t == pb.ConfChangeAddNode and cc.node_id in self.membership.members:
                self.membership.promote(cc.node_id)
                self._note("member", f"member {cc.node_id:x} promoted to voter")
            elif t == pb.ConfChangeAddLearnerNode and cc.node_id in self.membership.members:
                # A voter made a learner (the core demotes it; etcd's API
                # never proposes it): its record stays, as a learner's.
                self.membership.demote(cc.node_id)
                self._note("member", f"member {cc.node_id:x} demoted to learner")
            else:
                rec = MemberRecord.from_pb(ctx.member)
                rec.id = cc.node_id
                rec.is_learner = t == pb.ConfChangeAddLearnerNode
                self.membership.add(rec)
                self._note("member", f"member {cc.node_id:x} ({rec.name or 'unnamed'}) added"
                                     + (" as learner" if rec.is_learner else ""))
        elif t == pb.ConfChangeRemoveNode:
            self.membership.remove(cc.node_id)
            self._note("member", f"member {cc.node_id:x} removed")
        elif t == pb.ConfChangeUpdateNode:
            if cc.node_id not in self.membership.members:
                log.error("conf change updates unknown member %x: skipped", cc.node_id)
                return
            self.membership.update_peer_urls(cc.node_id, list(ctx.member.peerURLs))
            self._note("member", f"member {cc.node_id:x} peer URLs now {','.join(ctx.member.peerURLs)}")

    def _add_peer(self, mid: int, urls: list[str]) -> None:
        """Tell the transport about a member; a URL it cannot use makes an
        unreachable peer, never an exception out of apply or start."""
        try:
            self.transport.add_peer(mid, list(urls))
        except Exception as ex:
            log.error("member %x: cannot use peer URLs %s: %s; it stays unreachable",
                      mid, ",".join(urls), ex)

    def _sync_peers(self) -> None:
        for m in self.membership.sorted():
            if m.id != self.member_id:
                self._add_peer(m.id, m.peer_urls)
        peers = self.transport.peers()
        for mid in self.membership.removed:
            # Also ids never added as peers here (a restart, a snapshot):
            # their streams are refused as removed, which tells them.
            if mid in peers or not self.transport.is_removed(mid):
                try:
                    self.transport.remove_peer(mid)
                except Exception as ex:
                    log.error("removing peer %x: %r", mid, ex)

    # -- periodic work -------------------------------------------------------------

    async def _housekeeping(self) -> None:
        """Lease expiry (leader), catching up unsynced watchers, publishing
        our client URLs once."""
        published = False
        while True:
            await asyncio.sleep(0.02 if self.applier.hub.unsynced_count else 0.1)
            if self._stopped:
                return
            try:
                self._maybe_auto_compact()
                hub = self.applier.hub
                # The store between batches only (no await below until done).
                between_batches = not self.apply_lock.locked()
                # Catch up watchers that started in the past (or fell
                # behind) in bounded slices, yielding to the loop between them.
                budget = time.monotonic() + 0.02
                while (between_batches and hub.unsynced_count and hub.sync_unsynced(max_events=1000)
                       and time.monotonic() < budget):
                    pass
                if between_batches and self.applier.kv.compaction_pending:
                    self.applier.compact_step()
                if self.is_leader and not self._revoking:
                    expired = self.applier.lessor.expired(time.monotonic())
                    if expired:
                        self._revoking = True
                        self._background(self._revoke_expired(expired, self.term))
                if not published and self.leader_id:
                    published = True
                    self._background(self._publish())
            except Exception:
                log.exception("housekeeping failed")

    async def _revoke_expired(self, lease_ids: list[int], term: int) -> None:
        """Propose revoking expired leases, but only as a confirmed leader
        (etcd #15247, fixed by #16822's ensureLeadership): a leader that was
        stalled (a slow fsync) still believes it leads while clients keep
        their leases alive on the new leader. A ReadIndex round confirms
        leadership with a quorum; then we must still be leader, in the term
        the leases expired in, with a primary lessor."""
        try:
            try:
                await self.read_barrier(self._request_timeout())
            except (errors.ServerError, mvcc_errors.MVCCError) as e:
                log.warning("not revoking %d expired lease(s): leadership not confirmed (%s)",
                            len(lease_ids), e)
                return
            if not self._still_leading(term):
                log.warning("not revoking %d expired lease(s): no longer the leader of term %d",
                            len(lease_ids), term)
                return
            lessor = self.applier.lessor
            now = time.monotonic()
            for lid in lease_ids:
                lease = lessor.lookup(lid)
                if lease is None or lease.remaining(now) > 0:
                    continue  # revoked meanwhile, or renewed
                if not self._still_leading(term):
                    return
                req = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lid))
                # Tagged with the term: dropped by the loop if it no longer
                # leads in it when the revoke would reach raft.
                self._background(self.propose(req, self._request_timeout(), leader_term=term))
        finally:
            self._revoking = False

    def _still_leading(self, term: int) -> bool:
        return self.is_leader and self.term == term and self.applier.lessor.primary

    def _request_timeout(self) -> float:
        """etcd's ReqTimeout: 5 s + 2 election timeouts."""
        return 5.0 + 2 * self.cfg.election_timeout_ms / 1000

    def _maybe_auto_compact(self) -> None:
        c = self.compactor
        if not c.enabled:
            return
        if not self.is_leader:
            c.reset()
            return
        kv = self.applier.kv
        rev = c.due(time.monotonic(), kv.current_rev, max(kv.compact_rev, 0))
        if rev is not None:
            self._note("compaction", f"auto-compaction to revision {rev}")
            req = internal_pb2.InternalRequest(compaction=rpc_pb2.CompactionRequest(revision=rev))
            self._background(self.propose(req, 5.0))

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(self._quiet(coro))
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)

    def _attributes_published(self) -> bool:
        me = self.membership.members.get(self.member_id)
        return (me is not None and me.client_urls == list(self.cfg.advertise_client_urls)
                and me.name == self.cfg.name)

    async def _publish(self) -> None:
        if self._attributes_published():
            self.published.set()
            return
        rec = MemberRecord(self.member_id, self.cfg.name, list(self.cfg.initial_advertise_peer_urls),
                           list(self.cfg.advertise_client_urls))
        req = internal_pb2.InternalRequest(member_attributes=rec.to_pb())
        # Until published or stopped (etcd's publish retries until stop),
        # backing off 0.1 s doubling to 2 s between tries.
        delay, longest = PUBLISH_BACKOFF
        while not self._stopped and self._fatal is None:
            try:
                await self.propose(req, 5.0)
                self.published.set()
                return
            except (errors.ServerError, mvcc_errors.MVCCError) as e:
                log.info("publish failed, retrying in %.1f s: %s", delay, e)
                req.id = 0
            await asyncio.sleep(delay)  # a retry pause, not a synchronisation
            delay = min(delay * 2, longest)

    @staticmethod
    async def _quiet(coro) -> None:
        try:
            await coro
        except Exception as e:
            log.debug("background proposal failed: %s", e)
