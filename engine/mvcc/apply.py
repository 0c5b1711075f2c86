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
(KVStore), ``lessor``, ``alarms``, ``quota``, ``hub`` (WatchHub), ``auth``
(engine/auth's AuthStore, with its handlers and precheck installed). One
thread at a time.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from typing import Callable, Sequence, Union

from google.protobuf.message import Message

from engine.auth import AuthStore, new_token_provider
from engine.auth.apply import AuthApplier
from engine.auth.tokens import DEFAULT_TTL as DEFAULT_AUTH_TOKEN_TTL
from engine.proto import internal_pb2, rpc_pb2
from engine.wal import fsutil

from . import errors
from .alarm import NOSPACE, AlarmStore
from .backend import Backend, file_rows, unlink_db
from .kvstore import KVStore, build_index, kvs_wire, revs_to_bytes
from .kvstore import run_steps
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

# What applying one request gives: etcd's response message, the Exception
# its client gets (an etcd condition: nothing of the request was applied), or
# None for an entry skipped as already applied (replay).
Result = Union[Message, Exception, None]


class ApplyRejected(Exception):
    """apply_batch: applying ONE request's own semantics raised (a bug its
    content triggers: the same on every member). The batch was rolled back;
    the server may skip that request alike everywhere. Any other exception
    out of apply_batch (sqlite3.Error, OSError, MemoryError, a failure while
    committing or notifying) is this member's, never the entry's: fatal."""

    def __init__(self, position: int, cause: BaseException) -> None:
        super().__init__(f"request {position} of the batch: {cause!r}")
        self.position, self.cause = position, cause


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
        auth_token: str = "simple",
        auth_token_ttl: float = DEFAULT_AUTH_TOKEN_TTL,
    ) -> None:
        """auth_token, auth_token_ttl: etcd's --auth-token and --auth-token-ttl
        (engine.auth.new_token_provider raises on a bad one: a start-up error)."""
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
        # Auth (engine/auth): users, roles and permissions live in this db and
        # change inside the batch transaction; the store's requests are
        # applied by its handlers, and every request is re-checked against it
        # first (the precheck: etcd's authApplierV3). Simple tokens are named
        # after the index of the Authenticate entry (applying_index).
        self.applying_index = 0
        self.auth = AuthStore(lambda: self.backend.connection,
                              tokens=new_token_provider(auth_token or "simple", auth_token_ttl or DEFAULT_AUTH_TOKEN_TTL))
        AuthApplier(self.auth, lease_keys=self._lease_keys,
                    applying_index=lambda: self.applying_index).install(self)

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
        Runs apply_batch_steps to its end.
        """
        return run_steps(self.apply_batch_steps(applied_index, requests, term=term, indexes=indexes))

    def apply_batch_steps(
        self,
        applied_index: int,
        requests: Sequence[InternalRequest],
        *,
        term: int = 0,
        indexes: Sequence[int] | None = None,
    ):
        """apply_batch as a generator that yields inside long requests (a
        step per key written: see kvstore) and returns the results. The
        caller may run other work between steps, but nothing that needs the
        store between batches (kvstore's doc). Closing it half way rolls
        the batch back, as an exception does.

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
            for pos, (req, do) in enumerate(zip(requests, todo)):
                self.applying_index = indexes[pos] if indexes is not None else applied_index
                try:
                    results.append((yield from self._apply_one(req)) if do else None)
                except (sqlite3.Error, OSError, MemoryError):
                    raise  # the member's disk or db, not the entry
                except Exception as e:
                    raise ApplyRejected(pos, e) from e
            new_ci = max(ci, applied_index)
            meta = [("consistent_index", new_ci)]
            if term:
                meta.append(("term", term))
            changes = kv.commit_batch(meta)
        except BaseException:
            kv.abort_batch()
            self.alarms.load()
            self.auth.load()
            raise
        self._ci = new_ci
        if term:
            self.term = term
        if changes:
            self.hub.notify(changes)
        return results

    def _apply_one(self, req: InternalRequest):
        """One request, as a step generator returning its Result."""
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
                return (yield from self.kv.txn_steps(req.txn))
            if kind == "delete_range":
                return (yield from self.kv.delete_range_steps(req.delete_range))
            if kind == "range":
                return self.kv.range(req.range)
            if kind == "compaction":
                return self.kv.compact(req.compaction.revision)
            if kind == "lease_grant":
                return self._lease_grant(req)
            if kind == "lease_revoke":
                return (yield from self._lease_revoke(req.lease_revoke))
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

    def _lease_keys(self, lease_id: int):
        """Keys attached to a lease (none if there is no such lease)."""
        lease = self.lessor.lookup(lease_id)
        return lease.keys if lease is not None else ()

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

    def _lease_revoke(self, r: rpc_pb2.LeaseRevokeRequest):
        """A step generator returning the LeaseRevokeResponse."""
        keys = self.lessor.revoke_keys(r.ID)
        # All of the lease's keys go in one revision, in key order.
        yield from self.kv.delete_keys_steps(keys)
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

    # Off-loop jobs: each *_job call runs on the applying thread (cheap: it
    # checks the request, reads the in-memory index and pins a Reader) and
    # returns a function to run on a worker thread, which reads the db
    # through that Reader only.

    def hash_kv_job(self, rev: int = 0) -> Callable[[], rpc_pb2.HashKVResponse]:
        steps = self.hash_kv_steps(rev)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def hash_kv_steps(self, rev: int = 0):
        """A generator: drive it with next() on the applying thread (the loop
        may run between steps: each reads a few thousand keys of the index);
        its return value (StopIteration.value) is the job for a worker,
        hashing the rows of the state pinned when this was called."""
        reader = self.backend.reader()
        ok = False
        try:
            run = yield from self.kv.hash_kv_steps(rev, reader.iter_rows)
            ok = True
        finally:
            if not ok:
                reader.release()

        def job() -> rpc_pb2.HashKVResponse:
            try:
                return run()
            finally:
                reader.release()
        return job

    def range_job_steps(self, req: rpc_pb2.RangeRequest, min_rows: int = 1000, *, raw: bool = False):
        """range_job as a generator (its return value is (response, job)):
        drive it with next() on the applying thread, the loop running
        between steps (the index is read a few thousand keys per step)."""
        kv = self.kv
        for attempt in range(3):
            out = rpc_pb2.RangeResponse()
            try:
                plan = yield from kv.range_plan_steps(req, kv.current_rev, out)
            except errors.Compacted:
                # A compaction passed the revision being read. A read of
                # "now" starts again at the new now (still a valid answer);
                # a read at a given revision is compacted, as etcd says.
                if req.revision or attempt == 2:
                    raise
                continue
            return self._range_job(req, out, plan, min_rows, raw)
        raise AssertionError("unreachable")

    def range_job(self, req: rpc_pb2.RangeRequest, min_rows: int = 1000, *, raw: bool = False):
        """(response, None) when the range was small enough to answer here;
        (response, job) when ``job()`` must still fetch its values (on a
        worker) to complete it. With ``raw``, a job for a range whose values
        go out as stored returns their wire bytes (kvstore.kvs_wire) instead
        of parsing them into the response: the answer on the wire is then
        ``response.SerializeToString() + job()``; other jobs return None."""
        kv = self.kv
        out = rpc_pb2.RangeResponse()
        return self._range_job(req, out, kv.range_plan(req, kv.current_rev, out), min_rows, raw)

    def _range_job(self, req, out, plan, min_rows: int, raw: bool):
        # Pinned only now, after the index was read: the rows of what a read
        # at the range's revision sees stay until a compaction passes it,
        # and the plan is refused (Compacted) if one did.
        kv = self.kv
        if plan is None:
            return out, None
        revs, finish = plan
        if len(revs) < min_rows or kv.in_batch:
            finish(kv._fetch(revs_to_bytes(revs)))
            return out, None
        reader = self.backend.reader()
        splice = raw and kv.splices(req)

        def job():
            keys = revs_to_bytes(revs)
            try:
                got = reader.get_rows(keys)
            finally:
                reader.release()
            blobs = [got[r] for r in keys]
            if splice:
                return kvs_wire(blobs)
            finish(blobs)
            return None
        return out, job

    def defrag_job(self):
        """An off-loop defrag: returns (copy, finish); run ``copy()`` on a
        worker, then ``finish(ok)`` here (ok=False to abort after a failed
        copy). The loop goes on applying while the copy is made; finish
        replays what was written meanwhile and swaps the copy in. Finish
        any pending physical compaction before (compact_step())."""
        copy, token = self.backend.defrag_begin()

        def finish(ok: bool = True) -> bool:
            if not ok:
                self.backend.defrag_abort(token)
                return False
            return self.backend.defrag_finish(token)
        return copy, finish

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
        """A consistent copy of the whole store (SQLite file bytes), in RAM:
        for tests and the simulator; members use snapshot_to_file."""
        return self.backend.snapshot_bytes()

    def snapshot_to(self, path: str) -> int:
        return self.snapshot_to_file(path)

    def snapshot_to_file(self, path: str) -> int:
        """Write a consistent copy of the store to ``path`` (created 0600,
        fsynced; a single SQLite file, no -wal); return its size in bytes.

        Thread-safe: it reads through its own read-only connection, so it
        may run on a worker while the loop keeps applying. The copy holds
        the state committed when its read transaction starts; to pin the
        state of one exact moment (e.g. right after applying index X), call
        ``pin()`` on the loop then and ``write_to(path)`` on the worker.
        """
        return self.backend.snapshot_to(path)

    def pin(self):
        """A Reader (backend.Reader) pinned at the state committed now: its
        ``consistent_index``, ``backup_to(path) -> size``, ``iter_rows()``,
        ``get_rows(revs)``; usable from one worker thread; ``release()`` it.
        Call on the applying thread, between batches."""
        return self.backend.reader()

    def restore_file(self, path: str) -> None:
        """Replace the store with the snapshot file at ``path`` (written by
        snapshot_to_file, possibly on another member) and reload everything
        built on it. ``path`` is only read; the caller deletes it.

        The file is untrusted: opened read-only and immutable with
        trusted_schema=OFF, its schema must be exactly ours, every row is
        type-checked and copied into a fresh database with our own schema,
        which is then swapped in. Anything else raises
        ``errors.InvalidSnapshot`` and leaves the live store untouched.

        Equivalent to ``install_prepared(prepare_restore(path))``: the
        prepare half (O(size): checking and copying) is pure file work and
        may run on a worker thread; install_prepared (the swap and the
        reload of the in-memory index) runs on the applying thread.
        """
        self.install_prepared(self.prepare_restore(path))

    def prepare_restore(self, path: str) -> str:
        """Check and copy the snapshot at ``path`` into a fresh db beside the
        store's, and build its key index; returns that file (a str carrying
        the index) for install_prepared(). Any thread. Raises
        errors.InvalidSnapshot."""
        fresh = self.backend.prepare(path)
        try:
            prepared = Prepared(fresh)
            prepared.index_state = build_index(file_rows(fresh))
        except BaseException:
            unlink_db(fresh)
            raise
        return prepared

    def install_prepared(self, fresh: str) -> None:
        """Swap in a file from prepare_restore() and reload (applying thread).

        Watchers survive: they are moved to the unsynced group and caught up
        from the new store (or told they are compacted).
        """
        old_rev = self.kv.current_rev
        swapped = False
        try:
            self.backend.install(fresh)
            swapped = True
        finally:
            # The index built by prepare_restore (on a worker) when the
            # swap happened; rebuilt from whatever is there otherwise.
            self.kv.restore_from_backend(getattr(fresh, "index_state", None) if swapped else None)
            self.alarms.load()
            self.auth.load()
            self._ci = self.backend.get_meta("consistent_index")
            self.term = self.backend.get_meta("term")
            self.hub.on_restore(old_rev)

    def restore(self, data: bytes) -> None:
        """restore_file() for snapshot bytes in RAM (tests, the simulator):
        same checks, same errors."""
        d = os.path.dirname(os.path.abspath(self.backend.path))
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.restore_file(tmp)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def close(self) -> None:
        self.auth.close()  # simple tokens die with the member, as etcd's
        self.backend.close()


class Prepared(str):
    """prepare_restore()'s answer: the prepared file's path, with the key
    index built from it (index_state), so the swap needs no rebuild."""

    index_state = None


def open_applier(data_dir: str, **kw) -> Applier:
    """The applier over ``<data-dir>/member/snap/db``, where etcd keeps its
    backend. Directories it creates are 0700, the db 0600; an existing data
    dir more open than 0700 gets etcd's warning."""
    if os.path.isdir(data_dir):
        fsutil.check_dir_permission(data_dir)
        fsutil.make_private(os.path.join(data_dir, "member"))
        fsutil.make_private(os.path.join(data_dir, "member", "snap"))
    return Applier(os.path.join(data_dir, "member", "snap", "db"), **kw)
