"""The applier: committed log entries in, etcd responses (or errors) out.

The server drives it once per batch of committed entries::

    results = applier.apply_batch(last_index, requests, indexes=entry_indexes, term=term)

which, in ONE SQLite transaction, applies each InternalRequest, records the
applied (consistent) index and commits; then hands the batch's changes to
the watch hub, and returns one result per request: the etcd response
protobuf, an ``errors.MVCCError`` for an etcd condition (nothing of that
request was applied), or None for an entry skipped because its index is not
above the stored consistent index (replay after a crash: exactly once).

A request that fails with an etcd condition never stops the batch. An
unexpected exception (a bug, a disk error) rolls the whole transaction
back, reloads the in-memory state from disk (the last committed batch) and
propagates: the server should treat it as fatal for this batch (etcd
panics); re-applying from the consistent index is safe.

Ownership: the Applier owns the backend and everything built on it: ``kv``
(KVStore), ``lessor``, ``alarms``, ``quota``, ``hub`` (WatchHub). One thread
at a time.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from engine.proto import internal_pb2, rpc_pb2

from . import errors
from .alarm import NOSPACE, AlarmStore
from .backend import Backend
from .kvstore import KVStore
from .lease import DEFAULT_MIN_TTL, Lessor
from .quota import Quota, cost
from .watch import WatchHub

InternalRequest = internal_pb2.InternalRequest
_AR = rpc_pb2.AlarmRequest
_I63 = (1 << 63) - 1

# Request kinds refused while NOSPACE is active if they would grow the db.
_GROWING = frozenset({"put", "txn", "lease_grant"})
# Request kinds refused while CORRUPT is active (etcd's applierV3Corrupt).
_CORRUPTIBLE = frozenset({"range", "put", "delete_range", "txn", "compaction", "lease_grant", "lease_revoke"})

Result = object  # an etcd response message, an Exception, or None (skipped)


class Applier:
    def __init__(
        self,
        path: str,
        *,
        member_id: int = 0,
        clock: Callable[[], float] | None = None,
        quota_bytes: int = 0,
        min_lease_ttl: int = DEFAULT_MIN_TTL,
        watch_buffer_events: int = 1024,
    ) -> None:
        self.member_id = member_id
        self.backend = Backend(path)
        self.lessor = Lessor(self.backend, min_ttl=min_lease_ttl, clock=clock)
        self.kv = KVStore(self.backend, self.lessor)
        self.alarms = AlarmStore(self.backend)
        self.quota = Quota(self.backend, quota_bytes)
        self.hub = WatchHub(self.kv, max_buffered_events=watch_buffer_events)
        self._ci = self.backend.get_meta("consistent_index")
        self.term = self.backend.get_meta("term")
        # Hooks for request kinds owned elsewhere (auth): kind -> fn(req) ->
        # response or Exception instance; and a check run before every
        # request (e.g. permissions), returning an Exception to refuse it.
        self._handlers: dict[str, Callable[[InternalRequest], Result]] = {}
        self.precheck: Callable[[InternalRequest], Exception | None] | None = None

    # -- state ----------------------------------------------------------------

    @property
    def consistent_index(self) -> int:
        """Index of the last log entry whose effects are committed here."""
        return self._ci

    @property
    def current_revision(self) -> int:
        return self.kv.current_rev

    @property
    def compact_revision(self) -> int:
        return self.kv.compact_rev

    def register(self, kind: str, handler: Callable[[InternalRequest], Result]) -> None:
        """Apply InternalRequests whose oneof is ``kind`` with handler (same txn)."""
        self._handlers[kind] = handler

    # -- the batch ------------------------------------------------------------

    def apply_batch(
        self,
        applied_index: int,
        requests: Sequence[InternalRequest],
        *,
        term: int = 0,
        indexes: Sequence[int] | None = None,
    ) -> list[Result]:
        """Apply committed requests in one transaction; see the module doc.

        ``applied_index`` is the index of the last entry of the batch (it
        may be a non-request entry, e.g. a conf change). ``indexes``, when
        given, are the log indexes of the requests, so a replayed batch cut
        differently than before a crash is still applied exactly once;
        without it every request counts as being at ``applied_index``.
        """
        ci = self._ci
        if indexes is None:
            if applied_index <= ci:
                return [None] * len(requests)
            todo = [True] * len(requests)
        else:
            if len(indexes) != len(requests):
                raise ValueError("one index per request")
            todo = [i > ci for i in indexes]
            if not any(todo) and applied_index <= ci:
                return [None] * len(requests)
        results: list[Result] = []
        kv = self.kv
        kv.begin_batch()
        try:
            for req, do in zip(requests, todo):
                results.append(self._apply_one(req) if do else None)
            new_ci = max(ci, applied_index)
            meta = [("consistent_index", new_ci)]
            if term:
                meta.append(("term", term))
            changes = kv.commit_batch(meta)
        except BaseException:
            kv.abort_batch()
            self.alarms.load()
            raise
        self._ci = new_ci
        if term:
            self.term = term
        if changes:
            self.hub.notify(changes)
        return results

    def _apply_one(self, req: InternalRequest) -> Result:
        kind = req.WhichOneof("request")
        if self.precheck is not None:
            refusal = self.precheck(req)
            if refusal is not None:
                return refusal
        alarms = self.alarms
        if alarms.corrupt and kind in _CORRUPTIBLE:
            return errors.Corrupt()
        if alarms.nospace and kind in _GROWING and cost(req) > 0:
            return errors.NoSpace()
        try:
            if kind == "put":
                return self.kv.put(req.put)
            if kind == "txn":
                return self.kv.txn(req.txn)
            if kind == "delete_range":
                return self.kv.delete_range(req.delete_range)
            if kind == "range":
                return self.kv.range(req.range)
            if kind == "compaction":
                return self.kv.compact(req.compaction.revision)
            if kind == "lease_grant":
                return self._lease_grant(req)
            if kind == "lease_revoke":
                return self._lease_revoke(req.lease_revoke)
            if kind == "lease_checkpoint":
                return self._lease_checkpoint(req.lease_checkpoint)
            if kind == "alarm":
                return self._alarm(req.alarm)
        except errors.MVCCError as e:
            return e
        handler = self._handlers.get(kind or "")
        if handler is None:
            return errors.Unsupported(f"no handler for {kind!r}")
        return handler(req)

    def _header(self, msg):
        msg.header.revision = self.kv.current_rev
        return msg

    def _lease_grant(self, req: InternalRequest) -> rpc_pb2.LeaseGrantResponse:
        g = req.lease_grant
        lid = g.ID
        if lid == 0:
            # etcd picks the id on the proposing member before proposing; if
            # a proposal still says 0, derive one from the proposal id so
            # every member picks the same.
            lid = req.id & _I63
            while lid == 0 or self.lessor.lookup(lid) is not None:
                lid = (lid + 1) & _I63
        l = self.lessor.grant(lid, g.TTL)
        return self._header(rpc_pb2.LeaseGrantResponse(ID=l.id, TTL=l.ttl))

    def _lease_revoke(self, r: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        keys = self.lessor.revoke_keys(r.ID)
        # All of the lease's keys go in one revision, in key order.
        self.kv.delete_keys(keys)
        self.lessor.remove(r.ID)
        return self._header(rpc_pb2.LeaseRevokeResponse())

    def _lease_checkpoint(self, r: rpc_pb2.LeaseCheckpointRequest) -> rpc_pb2.LeaseCheckpointResponse:
        for cp in r.checkpoints:
            self.lessor.checkpoint(cp.ID, cp.remaining_TTL)
        return self._header(rpc_pb2.LeaseCheckpointResponse())

    def _alarm(self, r: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        out = self._header(rpc_pb2.AlarmResponse())
        if r.action == _AR.GET:
            ms = self.alarms.get(r.alarm)
        elif r.action == _AR.ACTIVATE:
            if r.alarm == rpc_pb2.NONE:
                ms = []
            else:
                ms = [self.alarms.activate(r.memberID, r.alarm)]
        elif r.action == _AR.DEACTIVATE:
            m = self.alarms.deactivate(r.memberID, r.alarm)
            ms = [m] if m is not None else []
        else:
            ms = []
        for member_id, alarm in ms:
            out.alarms.add(memberID=member_id, alarm=alarm)
        return out

    # -- admission (on the proposing member, before proposing) ---------------

    def admit(self, req: InternalRequest) -> None:
        """Raise NoSpace if the request must not be proposed for lack of space.

        When the quota is what is exceeded (rather than the alarm being on
        already), the exception's ``alarm_request`` is the InternalRequest
        the server should propose to raise the NOSPACE alarm cluster-wide.
        """
        if cost(req) == 0:
            return
        if self.alarms.active(NOSPACE):
            raise errors.NoSpace()
        if not self.quota.available(req):
            e = errors.NoSpace()
            e.alarm_request = InternalRequest(  # type: ignore[attr-defined]
                alarm=rpc_pb2.AlarmRequest(action=_AR.ACTIVATE, memberID=self.member_id, alarm=NOSPACE)
            )
            raise e

    # -- maintenance ----------------------------------------------------------

    def hash_kv(self, rev: int = 0) -> rpc_pb2.HashKVResponse:
        return self.kv.hash_kv(rev)

    def db_size(self) -> int:
        return self.backend.db_size()

    def db_size_in_use(self) -> int:
        return self.backend.db_size_in_use()

    def compact_step(self) -> bool:
        """Advance a pending physical compaction by one bounded chunk, in its
        own transaction; True when none is pending. Apply batches advance it
        too; call this when idle, or until True before answering a
        CompactionRequest with physical=true."""
        if self.kv.compaction_pending:
            self.kv.begin_batch()
            try:
                self.kv.commit_batch()
            except BaseException:
                self.kv.abort_batch()
                raise
        return not self.kv.compaction_pending

    def defrag(self) -> None:
        """Finish any pending physical compaction, then VACUUM."""
        self.kv.finish_compaction()
        self.backend.defrag()

    def sync(self) -> None:
        """Make the last commit durable (before the Raft log below it is dropped)."""
        self.backend.sync()

    def snapshot_bytes(self) -> bytes:
        """A consistent copy of the whole store (SQLite file bytes)."""
        return self.backend.snapshot_bytes()

    def snapshot_to(self, path: str) -> None:
        self.backend.snapshot_to(path)

    def restore(self, data: bytes) -> None:
        """Replace the store with a snapshot from snapshot_bytes() and reload.

        Watchers survive: they are moved to the unsynced group and caught up
        from the new store (or told they are compacted).
        """
        old_rev = self.kv.current_rev
        self.backend.replace_with(data)
        self.kv.restore_from_backend()
        self.alarms.load()
        self._ci = self.backend.get_meta("consistent_index")
        self.term = self.backend.get_meta("term")
        self.hub.on_restore(old_rev)

    def close(self) -> None:
        self.backend.close()


def open_applier(data_dir: str, **kw) -> Applier:
    """The applier over ``<data-dir>/member/snap/db``, where etcd keeps its backend."""
    return Applier(os.path.join(data_dir, "member", "snap", "db"), **kw)
