"""KVServer: the one interface the client API (engine/api) uses to reach a member.

In the spirit of etcd's RaftKV / Lessor / Cluster interfaces
(server/etcdserver/v3_server.go): a handler proposes through the log, waits
for a read barrier, reads the local store, asks about leadership and the
member table, and fills its response header, all through these methods,
never through the member's fields. So the API does not change when the
member's insides do (the loop that owns the raft core, the apply task, the
housekeeping), and the import graph shows every dependency.

Each method is a thin delegation to the running Node; the values handed out
(the lessor, the watch hub, member records, raft status) are the lower
layers' own typed objects.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable, Generator

from engine.mvcc.backend import Reader
from engine.mvcc.lease import Lessor
from engine.mvcc.watch import WatchHub
from engine.proto import internal_pb2, rpc_pb2
from engine.proto import raft_pb2 as pb
from engine.raft import Status
from engine.raft.progress import Progress
from engine.server.config import MemberConfig
from engine.server.membership import MemberRecord

log = logging.getLogger("engine.server")

if TYPE_CHECKING:
    from engine.auth import AuthStore
    from engine.server.node import Node, TimelineEvent


class KVServer:
    """What a client request may ask of this member."""

    def __init__(self, node: "Node") -> None:
        self._node = node

    # -- identity, configuration, header ----------------------------------------------

    @property
    def config(self) -> MemberConfig:
        return self._node.cfg

    @property
    def member_id(self) -> int:
        return self._node.member_id

    @property
    def cluster_id(self) -> int:
        return self._node.cluster_id

    @property
    def name(self) -> str:
        return self._node.cfg.name

    @property
    def term(self) -> int:
        return self._node.term

    @property
    def current_revision(self) -> int:
        """The store's revision now (the last applied change)."""
        return self._node.applier.kv.current_rev

    def fill_header(self, header: rpc_pb2.ResponseHeader, revision: int | None = None) -> None:
        """etcd's header.fill: cluster, member and term always; the revision
        only if the response did not set one (it is the revision the answer
        is at, not the store's revision when the answer is sent)."""
        header.cluster_id = self.cluster_id
        header.member_id = self.member_id
        header.raft_term = self.term
        if not header.revision:
            header.revision = self.current_revision if revision is None else revision

    def new_header(self, revision: int = 0) -> rpc_pb2.ResponseHeader:
        """A header at exactly `revision` (0: none, as etcd's Cluster answers)."""
        return rpc_pb2.ResponseHeader(cluster_id=self.cluster_id, member_id=self.member_id,
                                      revision=revision, raft_term=self.term)

    def request_timeout(self) -> float:
        """etcd's ReqTimeout: 5 s + 2 election timeouts."""
        return 5.0 + 2 * self._node.cfg.election_timeout_ms / 1000

    # -- leadership ------------------------------------------------------------------

    @property
    def leader_id(self) -> int:
        """The leader this member knows of; 0 when none."""
        return self._node.leader_id

    @property
    def is_leader(self) -> bool:
        return self._node.is_leader

    @property
    def is_learner(self) -> bool:
        return self._node.is_learner

    async def wait_leader(self, timeout: float) -> bool:
        """True once a leader is known, False if none appeared in time."""
        return await self._node.wait_leader(timeout)

    async def ensure_leadership(self, timeout: float) -> bool:
        """Whether this member still leads, confirmed by a quorum if its loop was stuck."""
        return await self._node.ensure_leadership(timeout)

    async def transfer_leadership(self, target: int, timeout: float) -> None:
        await self._node.transfer_leadership(target, timeout)

    # -- through the log ---------------------------------------------------------------

    def next_request_id(self) -> int:
        return self._node.next_request_id()

    def admit(self, req: internal_pb2.InternalRequest) -> None:
        """The quota and alarm check before proposing a growing write
        (raises NoSpace, carrying the alarm request to propose)."""
        self._node.applier.admit(req)

    async def propose(self, req: internal_pb2.InternalRequest, timeout: float):
        """Replicate req through the log; the response applying it gave (raises its error)."""
        return await self._node.propose(req, timeout)

    async def propose_conf_change(self, cc: pb.ConfChange, timeout: float) -> None:
        """Propose a membership change and wait until it is applied here."""
        await self._node.propose_conf_change(cc, timeout)

    async def read_barrier(self, timeout: float) -> None:
        """Linearizable read point (ReadIndex): returns once this member has
        applied everything committed before the call."""
        await self._node.read_barrier(timeout)

    # -- the local store -----------------------------------------------------------------

    def between_batches(self) -> asyncio.Lock:
        """`async with server.between_batches():` waits until no apply chunk is
        half done, and holds applying off meanwhile. Needed around what must
        see the store between batches: pinning a reader, a compaction or
        defrag step, registering or cancelling a watcher, progress
        notifications. Plain reads at current_rev need not (a half-applied
        request's changes are above it)."""
        return self._node.apply_lock

    def range_steps(self, req: rpc_pb2.RangeRequest, *, raw: bool = False) -> Generator:
        """Applier.range_job_steps: drive with next() on the loop; its value
        is (response, job or None), the job to run on a worker."""
        return self._node.applier.range_job_steps(req, raw=raw)

    def hash_kv_steps(self, rev: int) -> Generator:
        """Applier.hash_kv_steps: its value is the job that hashes on a worker."""
        return self._node.applier.hash_kv_steps(rev)

    @property
    def compaction_pending(self) -> bool:
        return self._node.applier.kv.compaction_pending

    def compact_step(self) -> bool:
        """One bounded slice of a pending physical compaction; True when none is left."""
        return self._node.applier.compact_step()

    def defrag_job(self) -> tuple[Callable[[], object], Callable[[bool], bool]]:
        """(copy, finish): copy() on a worker, then finish(ok) on the loop."""
        return self._node.applier.defrag_job()

    def pin(self) -> Reader:
        """A reader pinned at the state committed now; release() it."""
        return self._node.applier.pin()

    @property
    def db_path(self) -> str:
        return self._node.applier.backend.path

    def db_size(self) -> int:
        return self._node.applier.db_size()

    def db_size_in_use(self) -> int:
        return self._node.applier.db_size_in_use()

    def peer_send_failures(self) -> dict[int, int]:
        """Messages per peer that could not be handed to it (its queue was
        full or its stream down): etcd_network_peer_sent_failures_total."""
        return {pid: p.dropped for pid, p in self._node.transport.peers().items()}

    def observe_peer_rtt(self, fn: Callable[[int, float], None] | None) -> None:
        """`fn(peer id, seconds)` for every answered peer probe (the
        transport's prober, every few seconds per peer); None detaches."""
        if fn is None:
            self._node.transport.on_peer_rtt = None
            return

        def guarded(peer: int, seconds: float) -> None:
            try:
                fn(peer, seconds)
            except Exception:  # an observer's bug must not reach the transport
                log.exception("peer round-trip observer failed")
        self._node.transport.on_peer_rtt = guarded

    def alarms(self) -> list[tuple[int, int]]:
        """Active alarms as (member id, alarm type)."""
        return self._node.applier.alarms.get()

    @property
    def lessor(self) -> Lessor:
        return self._node.applier.lessor

    async def wait_lessor_primary(self, timeout: float) -> bool:
        """On a new leader: True once its lessor keeps the leases' clock."""
        return await self._node.wait_lessor_primary(timeout)

    @property
    def watch_hub(self) -> WatchHub:
        return self._node.applier.hub

    @property
    def auth_store(self) -> "AuthStore":
        """etcd's auth store (users, roles, permissions)."""
        return self._node.applier.auth

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Return once this member applied `index`; asyncio.TimeoutError after timeout."""
        if self.applied_index >= index:
            return
        await asyncio.wait_for(self._node.wait_applied(index), timeout)

    # -- membership ------------------------------------------------------------------------

    def members(self) -> list[MemberRecord]:
        """The member table, by id."""
        return self._node.membership.sorted()

    def member(self, member_id: int) -> MemberRecord | None:
        return self._node.membership.members.get(member_id)

    def was_removed(self, member_id: int) -> bool:
        return member_id in self._node.membership.removed

    def peer_active_since(self, member_id: int) -> float | None:
        """time.time() since when the stream to that peer is up; None if it is not."""
        st = self._node.transport.peers().get(member_id)
        return st.active_since if st is not None and st.active else None

    # -- status (Maintenance.Status, Inspect) -------------------------------------------

    @property
    def serving(self) -> bool:
        """Started, and neither stopped nor failed."""
        return self._node.serving

    @property
    def stopped(self) -> bool:
        return self._node.stopped

    def raft_status(self) -> Status:
        return self._node.rn.status()

    def progress(self, member_id: int) -> Progress | None:
        """The leader's live progress record of a member (None elsewhere)."""
        return self._node.rn.raft.prs.get(member_id)

    @property
    def committed_index(self) -> int:
        return self._node.rn.raft.log.committed

    @property
    def applied_index(self) -> int:
        """The last entry applied to the store (the core's log.applied means handed to apply)."""
        return self._node.applied_index

    def log_bounds(self) -> tuple[int, int]:
        """(first, last) index of the raft log in memory."""
        rlog = self._node.rn.raft.log
        return rlog.first_index(), rlog.last_index()

    def entries(self, lo: int, hi: int) -> list[pb.Entry]:
        """Log entries [lo, hi)."""
        return self._node.rn.raft.log.slice(lo, hi)

    @property
    def persisted_index(self) -> int:
        """The last index fsynced in this member's WAL."""
        return self._node.raftlog.storage.last_index()

    def snapshot_metadata(self) -> pb.SnapshotMetadata:
        return self._node.raftlog.storage.snapshot().metadata

    @property
    def loop_lag(self) -> float:
        return self._node.loop_lag

    @property
    def loop_lag_max(self) -> float:
        return self._node.loop_lag_max

    def events(self) -> list["TimelineEvent"]:
        """The member's recent timeline (elections, transfers...), oldest first."""
        return list(self._node.events)

    def metric_counts(self) -> dict[str, int]:
        """etcd's server counters for /metrics: leader changes seen, proposals
        pending and failed, slow applies, heartbeat send failures, and live
        keys (etcd_debugging_mvcc_keys_total)."""
        node = self._node
        counts = {name: getattr(node, name) for name in
                  ("leader_changes", "proposals_pending", "proposals_failed", "slow_applies")}
        counts["heartbeat_send_failures"] = node.transport.heartbeat_send_failures
        kv = node.applier.kv
        counts["keys"] = kv.index.live_count()
        counts.update(put_total=kv.put_total, delete_total=kv.delete_total,
                      range_total=kv.range_total, txn_total=kv.txn_total)
        return counts

    def peer_traffic(self) -> dict[int, tuple[int, int]]:
        """Bytes (sent to, received from) each peer, by member id
        (etcd_network_peer_sent_bytes_total / _received_bytes_total)."""
        return {pid: (p.sent_bytes, p.received_bytes) for pid, p in self._node.transport.peers().items()}

    def request_totals(self) -> dict[str, int]:
        """Counts since start: requests proposed and applied, peer messages sent."""
        node = self._node
        return {"proposal": node.proposed_requests, "apply": node.applied_requests,
                "peer_msg_sent": sum(p.sent for p in node.transport.peers().values())}
