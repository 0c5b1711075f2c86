"""Node: one cluster member around the pure Raft core: its state, start and
stop, and what the API calls (engine/server/kvserver.py is the API's one
way in). Its jobs live in three mixins, each in its own module:

  ready_loop.py    the task that owns the RawNode: persist -> send -> hand
                   committed entries over -> answer reads -> advance; and
                   the transport's callbacks that feed it;
  applying.py      the apply task: committed entries into the store and the
                   member table, answers to the waiting clients;
  housekeeping.py  lease expiry, watcher catch-up, auto-compaction,
                   publishing our client URLs.

Everything outside the loop (gRPC handlers, the transport, the ticker) only
queues work and wakes it; the fsync and every O(db size) job run on worker
threads.
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
import time
from typing import Callable

import grpc

from engine.server.config import MemberConfig
from engine.mvcc.apply import Applier, open_applier
from engine.proto import internal_pb2
from engine.proto import raft_pb2 as pb
from engine.raft import Config, RawNode, StateType
from engine.server import errors
from engine.server.applying import Applying, TestFaultHook
from engine.server.compactor import Compactor
from engine.server.housekeeping import Housekeeping
from engine.server.membership import MemberRecord, Membership
from engine.server.raftlog import RaftLog, open_raft_log
from engine.server.ready_loop import OUT_SNAP_PREFIX, ReadyLoop, unlink_quietly
from engine.server.waiters import Waiters
from engine.proto import peer_pb2
from engine.transport import FaultFilter, PeerTransport, certcheck
from engine.transport.transport import fetch_members
from engine.wal import WAL, layout

log = logging.getLogger("engine.server")

# Refuse new proposals when applying lags commit by this much (etcd's maxGapBetweenApplyAndCommitIndex).
MAX_APPLY_LAG = 5000
EVENT_HISTORY = 200
REMOVED_MESSAGE = "the member has been permanently removed from the cluster"


@dataclasses.dataclass
class TimelineEvent:
    at: float        # unix time
    # elected, leader-lost, campaign, transfer, member, snapshot, alarm,
    # compaction, start
    kind: str
    text: str
    term: int = 0    # for the leader events: the term they are about
    leader: int = 0  # elected: the new leader; transfer: the target


def tune_gc() -> None:
    """CPython's cyclic collector at its defaults (a young collection every
    700 allocations, full ones scanning every live object) costs a member
    much of its CPU on a big apply and stops the event loop in full
    collections over the key index: applying the largest legal txn took
    0.48-0.74 s with loop stalls of 60-120 ms, 0.29-0.31 s and 30 ms with
    this. What the member allocates per request (protobufs, index entries)
    seldom forms cycles, so collecting rarely loses little memory; what
    exists once started (the index loaded from disk) is frozen out of
    collections altogether. Once per process."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()   # (garbage frozen now would never be freed)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


_gc_tuned = False


def _remove_outgoing(directory: str) -> None:
    for name in os.listdir(directory):
        if name.startswith(OUT_SNAP_PREFIX):
            unlink_quietly(os.path.join(directory, name))


def _metadata(member_id: int, cluster_id: int) -> bytes:
    return member_id.to_bytes(8, "big") + cluster_id.to_bytes(8, "big")


def _parse_metadata(b: bytes) -> tuple[int, int]:
    return int.from_bytes(b[:8], "big"), int.from_bytes(b[8:16], "big")


class Node(ReadyLoop, Applying, Housekeeping):
    """One cluster member: its state, start and stop, and what the API
    calls (through engine/server/kvserver.py). Its jobs are in the mixins:
    the Ready loop around the core (ready_loop.py), applying committed
    entries (applying.py), periodic work (housekeeping.py)."""

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
        self._test_fault = TestFaultHook.from_env()
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
        # etcd's server metrics (engine/http reads them through KVServer):
        # leader changes seen, proposals waiting for their result, proposals
        # that failed (no result: deadline, cancel, stop), chunks whose apply
        # took over SLOW_APPLY (etcd counts requests over 100 ms).
        self.leader_changes = 0
        self.proposals_pending = 0
        # Election ticks fast-forwarded at start (etcd's adjustTicks), 0 if none.
        self.boot_ticks_advanced = 0
        self.proposals_failed = 0
        self.slow_applies = 0

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
                                             auth_token=cfg.auth_token, auth_token_ttl=cfg.auth_token_ttl,
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
            # A leader takes no new proposal past 64 MiB of appended, unapplied
            # entries (etcd-io/raft MaxUncommittedEntriesSize; they wait,
            # bounded by their clients' deadlines); one proposal is always
            # taken when nothing is pending. In-flight bytes per follower
            # (MaxInflightBytes) stay unlimited, as etcd's server leaves them:
            # at 32 MiB, etcdctl check perf --load=s failed on its slowest
            # request (0.91-1.19 s in 3 runs vs 0.34-0.49 s in 6 without, same
            # machine and load); the cause is not understood yet.
            max_inflight_bytes=0, max_uncommitted_entries_size=64 << 20,
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
        self.transport.dial_check = certcheck.peer_dial_check(cfg)
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
        self._background(self._advance_ticks_at_boot())

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
                info = await fetch_members(urls, tls=self._peer_credentials(),
                                           dial_check=certcheck.peer_dial_check(cfg))
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
            unlink_quietly(fresh)
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
        self.proposals_pending += 1
        self._wake.set()
        try:
            result = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.proposals_failed += 1
            raise self._timeout_error(rid) from None
        except BaseException:
            self.proposals_failed += 1
            raise
        finally:
            self.proposals_pending -= 1
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

    @property
    def serving(self) -> bool:
        """Started, and neither stopped nor failed."""
        return hasattr(self, "rn") and not self._stopped and self._fatal is None

    @property
    def stopped(self) -> bool:
        return self._stopped

    def wait_applied(self, index: int) -> asyncio.Future:
        """A future resolved once the store has applied ``index``."""
        return self._waiters.wait_applied(index)

    def _check_running(self) -> None:
        if self._stopped:
            raise errors.Stopped()
        if self._fatal is not None:
            raise errors.Stopped()

    # -- transport callbacks ---------------------------------------------------------





    # -- the loop ------------------------------------------------------------------






















    # -- applying ------------------------------------------------------------------















    # -- periodic work -------------------------------------------------------------









