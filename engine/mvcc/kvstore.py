"""The key-value store: etcd v3 Range/Put/DeleteRange/Txn/Compact on revisions.

Semantics are etcd 3.4's (``mvcc/kvstore*.go`` and the applier in
``etcdserver/apply.go``):

* The store starts at revision 1. Every request that changes something gets
  the next main revision; its changes get sub revisions 0, 1, ... in order.
  A request that changes nothing (a read-only txn, a delete that matched no
  key) leaves the revision where it was.
* A key's ``create_revision`` is the revision of the put that created it,
  ``version`` counts puts since then, a delete resets both (see
  key_index.KeyHistory for the generations).
* Reads at a revision below the compact revision fail with Compacted, above
  the current one with FutureRevision; a read at exactly the compact
  revision works.

Writes happen in batches (``begin_batch`` .. ``commit_batch``), one SQLite
transaction each: rows are collected in memory during the batch and written
with one executemany at commit. Everything a request can fail on is checked
before it changes anything, so a failed request leaves no trace; a failure
that is not an etcd condition (a bug, a disk error) is the caller's cue to
``abort_batch`` and reload (see apply.Applier).

Responses are etcd's protobufs with ``header.revision`` filled; the server
fills cluster_id, member_id and raft_term.

Long writes come in steps: ``txn_steps``, ``delete_range_steps`` and
``delete_keys_steps`` are generators that yield after each key they write
(and each op they check) and return the response, so the server can let
its event loop run inside one request of any size (a legal nested txn
writes ~30,000 keys). Between steps a write is half done, but invisible
to reads: its changes carry revision current_rev + 1, and current_rev
moves only when the write ends. What needs the store between batches
(compaction, defrag, pinning a reader, watch registration) must wait for
the batch to end (the server's apply lock). ``txn``/``delete_range``/
``delete_keys`` run the same steps to the end.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager
from typing import Callable, Iterator

from engine.proto import kv_pb2, rpc_pb2

from . import errors
from .backend import Backend
from .key_index import TreeIndex
from .lease import NO_LEASE, Lessor
from .revision import (
    REV_BYTES_LEN,
    is_tombstone,
    lower_bound_bytes,
    rev_to_bytes,
    tombstone_to_bytes,
)

KeyValue = kv_pb2.KeyValue
PUT = kv_pb2.Event.PUT
DELETE = kv_pb2.Event.DELETE

_RR = rpc_pb2.RangeRequest
_CMP = rpc_pb2.Compare

# Physical compaction deletes at most this many rows per batch commit, so a
# compaction of a big store never stalls one apply batch for long.
COMPACT_ROWS_PER_BATCH = 500
# The rows of an open batch go to SQLite (inside its transaction) in slices
# of this many, so a huge request (tens of thousands of writes) never ends
# in one long executemany that the event loop waits for.
PENDING_ROWS = 2048
# ... and at most about this many bytes of deleted rows per batch.
COMPACT_BYTES_PER_BATCH = 4 << 20
# ... and compacts the in-memory index this many keys per batch commit first.
COMPACT_KEYS_PER_STEP = 8192
# Bytes of stored values parsed into a range response per protobuf call.
_MERGE_SLICE = 1 << 20

# A change made by a write: (event type, KeyValue). For a delete the
# KeyValue holds the key and the deleting revision as mod_revision, which is
# exactly what a watcher's DELETE event carries.
Change = tuple[int, KeyValue]
# The changes of one committed revision, in sub-revision order.
RevisionChanges = tuple[int, list[Change]]


def mk_gte_range(range_end: bytes) -> bytes | None:
    """etcd's request range_end -> index convention (see key_index.TreeIndex)."""
    if not range_end:
        return None
    if range_end == b"\x00":
        return b""
    return range_end


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def run_steps(steps):
    """Drive a step generator to its end; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _tombstone_blob(key: bytes) -> bytes:
    # The stored value of a deletion is KeyValue{key} (field 1, bytes).
    return b"\x0a" + _varint(len(key)) + key


class _Write:
    """One write request in progress: its base revision and its changes."""

    __slots__ = ("begin_rev", "changes", "leases")

    def __init__(self, begin_rev: int) -> None:
        self.begin_rev = begin_rev
        self.changes: list[Change] = []
        # (key, lease it leaves, lease it joins), done on the lessor when
        # the write ends, with current_rev: between steps, the lessor says
        # what a read at current_rev sees (a key appears under its lease
        # in LeaseTimeToLive only once a Range can see the key).
        self.leases: list[tuple[bytes, int, int]] = []

    def read_rev(self) -> int:
        # Reads inside a write see its own earlier changes (etcd's
        # storeTxnWrite.Range).
        return self.begin_rev + 1 if self.changes else self.begin_rev


class KVStore:
    def __init__(self, backend: Backend, lessor: Lessor) -> None:
        self.backend = backend
        self.lessor = lessor
        self.index = TreeIndex()
        # Invariant: compact_rev <= current_rev; -1 until the first compaction.
        self.current_rev = 1
        self.compact_rev = -1
        self._in_batch = False
        self._pending: dict[bytes, bytes] = {}  # rows of the open batch
        # Operations served, as etcd counts them (etcd_mvcc_put_total,
        # _delete_total, _range_total, _txn_total): a put or delete-range op
        # applied, a range read by the store (in a txn too), a txn applied.
        self.put_total = 0
        self.delete_total = 0
        self.range_total = 0
        self.txn_total = 0
        self._batch_changes: list[RevisionChanges] = []
        # Compaction in progress: (compact rev, revision keys to keep; None
        # while the index is still being compacted, a slice of keys per step).
        self._compaction: tuple[int, set[bytes] | None] | None = None
        self._index_steps: Iterator[None] | None = None
        self._index_keep: set[tuple[int, int]] = set()
        self._compact_cursor = b""
        self.restore_from_backend()

    # -- open / restore -----------------------------------------------------

    def restore_from_backend(self, prebuilt: "IndexState | None" = None) -> None:
        """Rebuild the key index (and lease attachments) from the backend
        rows, or take ``prebuilt`` (build_index() of the same rows, made on
        a worker) instead of reading them here."""
        b = self.backend
        if prebuilt is None:
            prebuilt = build_index(b.iter_rows())
        self.index, live_lease, cur = prebuilt
        finished = b.get_meta("finished_compact_rev", -1)
        scheduled = b.get_meta("scheduled_compact_rev", -1)
        self.compact_rev = max(finished, scheduled)
        self.current_rev = max(cur, b.get_meta("current_rev", 1), self.compact_rev, 1)
        self.lessor.load()
        for key, lid in live_lease.items():
            if lid != NO_LEASE and self.lessor.lookup(lid) is not None:
                self.lessor.attach(lid, key)
        self._compaction = None
        if scheduled > finished:
            # A compaction was scheduled but its physical part did not finish
            # before a restart: redo it (etcd's restore does the same).
            self._schedule_compaction(scheduled)

    # -- batches ------------------------------------------------------------

    def begin_batch(self) -> None:
        if self._in_batch:
            raise RuntimeError("batch already open")
        self.backend.begin()
        self._in_batch = True
        self._pending = {}
        self._batch_changes = []

    def commit_batch(self, meta: list[tuple[str, int]] | None = None) -> list[RevisionChanges]:
        """Write the batch's rows and meta in its transaction, commit.

        Returns the batch's changes grouped by revision, for the watch hub.
        """
        b = self.backend
        if self._pending:
            b.put_rows(list(self._pending.items()))
        items = [("current_rev", self.current_rev)]
        if meta:
            items.extend(meta)
        b.set_meta(items)
        if self._compaction is not None:
            self._compact_step(COMPACT_ROWS_PER_BATCH)
        b.commit()
        self._in_batch = False
        self._pending = {}
        changes, self._batch_changes = self._batch_changes, []
        return changes

    def abort_batch(self) -> None:
        """Roll the transaction back and reload the in-memory state from disk."""
        self.backend.rollback()
        self._in_batch = False
        self._pending = {}
        self._batch_changes = []
        self.restore_from_backend()

    @property
    def in_batch(self) -> bool:
        return self._in_batch

    @contextmanager
    def batch(self) -> Iterator[None]:
        """A batch for callers without an Applier (tests, tools)."""
        self.begin_batch()
        try:
            yield
        except BaseException:
            self.abort_batch()
            raise
        self.commit_batch()

    def _auto(self, fn, *args):
        if self._in_batch:
            return fn(*args)
        with self.batch():
            return fn(*args)

    # -- write plumbing -----------------------------------------------------

    def _begin_write(self) -> _Write:
        return _Write(self.current_rev)

    def _end_write(self, w: _Write) -> int:
        lessor = self.lessor
        for key, old, new in w.leases:
            if old != NO_LEASE:
                lessor.detach(old, key)
            if new != NO_LEASE:
                lessor.attach(new, key)
        if w.changes:
            self.current_rev = w.begin_rev + 1
            self._batch_changes.append((self.current_rev, w.changes))
        return self.current_rev

    def _put(self, w: _Write, key: bytes, value: bytes, lease: int) -> int:
        rev = w.begin_rev + 1
        sub = len(w.changes)
        created, ver, old_lease = rev, 1, NO_LEASE
        h = self.index.history(key)
        if h is not None:
            got = h.get(rev)
            if got is not None:
                created, ver = got[1], got[2] + 1
                old_lease = self.lessor.lease_of(key)
        kv = KeyValue(key=key, value=value, create_revision=created, mod_revision=rev, version=ver, lease=lease)
        self._pending[rev_to_bytes(rev, sub)] = kv.SerializeToString()
        if len(self._pending) >= PENDING_ROWS:
            self._spill()
        self.index.put(key, rev, sub, h)
        w.changes.append((PUT, kv))
        if old_lease != lease:
            w.leases.append((key, old_lease, lease))
        return rev

    def _spill(self) -> None:
        """Write the open batch's rows so far (same transaction: reads of
        this connection see them, a rollback drops them)."""
        self.backend.put_rows(list(self._pending.items()))
        self._pending = {}

    def _delete(self, w: _Write, key: bytes) -> None:
        rev = w.begin_rev + 1
        self._pending[tombstone_to_bytes(rev, len(w.changes))] = _tombstone_blob(key)
        if len(self._pending) >= PENDING_ROWS:
            self._spill()
        self.index.tombstone(key, rev, len(w.changes))
        w.changes.append((DELETE, KeyValue(key=key, mod_revision=rev)))
        lid = self.lessor.lease_of(key)
        if lid != NO_LEASE:
            w.leases.append((key, lid, NO_LEASE))

    def _delete_range(self, w: _Write, key: bytes, end: bytes | None):
        """A step generator (see _steps) returning the number deleted."""
        pairs, _ = self.index.revisions(key, end, w.read_rev())
        for k, _ in pairs:
            self._delete(w, k)
            yield
        return len(pairs)

    # -- reads ----------------------------------------------------------------

    def _fetch(self, revs: list[bytes]) -> list[bytes]:
        """Stored KeyValue blobs for revision keys, from the open batch or disk."""
        pending = self._pending
        if pending:
            missing = [r for r in revs if r not in pending]
        else:
            missing = revs
        got = self.backend.get_rows(missing) if missing else {}
        if pending:
            return [pending[r] if r in pending else got[r] for r in revs]
        return [got[r] for r in revs]

    def _check_rev(self, rev: int, cur: int) -> int:
        if rev > cur:
            raise errors.FutureRevision()
        if rev <= 0:
            rev = cur
        if rev < self.compact_rev:
            raise errors.Compacted(self.compact_rev)
        return rev

    def _range_into(self, req: rpc_pb2.RangeRequest, cur: int, out: rpc_pb2.RangeResponse) -> None:
        plan = self.range_plan(req, cur, out)
        if plan is not None:
            revs, finish = plan
            finish(self._fetch(revs_to_bytes(revs)))

    def range_plan(self, req: rpc_pb2.RangeRequest, cur: int, out: rpc_pb2.RangeResponse):
        """The in-memory half of a range: check the revision, look the keys
        up in the index and fill what needs no value. None when ``out`` is
        complete; else (revisions (main, sub) to fetch, finish) where finish(blobs),
        given the stored blobs of those keys in that order, completes out.
        The fetch and finish may happen on a worker (with a Reader pinned
        when the plan was made): they touch nothing of the store."""
        g = self._range_plan(req, cur, out, False)
        try:
            next(g)
        except StopIteration as done:
            return done.value
        raise RuntimeError("range_plan yielded")

    def range_plan_steps(self, req: rpc_pb2.RangeRequest, cur: int, out: rpc_pb2.RangeResponse):
        """range_plan as a generator (its return value), reading the index a
        few thousand keys per step: drive it on the applying thread, letting
        the loop run between steps. Compacted if a compaction passes the
        range's revision meanwhile."""
        return (yield from self._range_plan(req, cur, out, True))

    def _revisions_steps(self, key: bytes, end: bytes | None, rev: int, want: int):
        g = self.index.revisions_steps(key, end, rev, want)
        while True:
            try:
                next(g)
            except StopIteration as done:
                return done.value
            yield
            if self.compact_rev > rev:
                raise errors.Compacted(self.compact_rev)

    def _range_plan(self, req: rpc_pb2.RangeRequest, cur: int, out: rpc_pb2.RangeResponse, steps: bool):
        self.range_total += 1
        rev = self._check_rev(req.revision, cur)
        limit = req.limit
        # etcd fetches everything only for an explicit sort order or a
        # revision filter; otherwise it fetches limit+1 keys in key order and
        # sorts just those (so a sort_target without sort_order sorts the
        # first limit+1 keys, not the whole range).
        fetch_all = bool(
            req.sort_order or req.min_mod_revision or req.max_mod_revision
            or req.min_create_revision or req.max_create_revision
        )
        plain = not fetch_all and not req.sort_target
        if req.count_only:
            want = 1
        elif fetch_all or limit <= 0:
            want = 0
        else:
            want = limit if plain else limit + 1
        end = mk_gte_range(req.range_end)
        if steps:
            pairs, n = yield from self._revisions_steps(req.key, end, rev, want)
        else:
            pairs, n = self.index.revisions(req.key, end, rev, want)
        out.header.revision = cur
        out.count = n
        if req.count_only or n == 0:
            return None
        revs = [r for _, r in pairs]
        if plain:
            # Index order is key order: the index applied the limit without
            # looking at any value.
            if 0 < limit < n:
                out.more = True
            return revs, lambda blobs: _finish_plain(req, out, blobs)
        return revs, lambda blobs: _finish_sorted(req, out, blobs)

    @staticmethod
    def splices(req: rpc_pb2.RangeRequest) -> bool:
        """Does a range_plan for req finish by splicing the stored values
        unchanged into the response (so kvs_wire() of them may stand in)?"""
        return not (req.keys_only or req.count_only or req.sort_order or req.sort_target
                    or req.min_mod_revision or req.max_mod_revision
                    or req.min_create_revision or req.max_create_revision)

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """A read at the current (or requested) revision; no batch needed."""
        out = rpc_pb2.RangeResponse()
        self._range_into(req, self.current_rev, out)
        return out

    def get(self, key: bytes, rev: int = 0) -> KeyValue | None:
        """The KeyValue of key as of rev (0: now), or None."""
        rev = self._check_rev(rev, self.current_rev)
        got = self.index.get(key, rev)
        if got is None:
            return None
        return KeyValue.FromString(self._fetch([rev_to_bytes(*got[0])])[0])

    # -- Put / DeleteRange ----------------------------------------------------

    def check_put(self, req: rpc_pb2.PutRequest, at_rev: int | None = None) -> None:
        """Raise what etcd would for this put, without changing anything."""
        if req.lease != NO_LEASE and self.lessor.lookup(req.lease) is None:
            raise errors.LeaseNotFound()
        if req.ignore_value or req.ignore_lease:
            if self.index.get(req.key, self.current_rev if at_rev is None else at_rev) is None:
                raise errors.KeyNotFound()

    def _put_into(self, w: _Write, req: rpc_pb2.PutRequest, out: rpc_pb2.PutResponse) -> None:
        self.put_total += 1
        key = req.key
        value, lease = req.value, req.lease
        if req.ignore_value or req.ignore_lease or req.prev_kv:
            got = self.index.get(key, w.read_rev())
            if got is not None:
                prev = KeyValue.FromString(self._fetch([rev_to_bytes(*got[0])])[0])
                if req.ignore_value:
                    value = prev.value
                if req.ignore_lease:
                    lease = prev.lease
                if req.prev_kv:
                    out.prev_kv.CopyFrom(prev)
        out.header.revision = self._put(w, key, value, lease)

    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        return self._auto(self._put_request, req)

    def _put_request(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        self.check_put(req)
        out = rpc_pb2.PutResponse()
        w = self._begin_write()
        self._put_into(w, req, out)
        self._end_write(w)
        return out

    def _delete_into(self, w: _Write, req: rpc_pb2.DeleteRangeRequest, out: rpc_pb2.DeleteRangeResponse):
        self.delete_total += 1
        end = mk_gte_range(req.range_end)
        if req.prev_kv:
            pairs, _ = self.index.revisions(req.key, end, w.read_rev())
            if pairs:
                out.MergeFromString(b"".join(
                    [b"\x1a" + _varint(len(x)) + x for x in self._fetch([rev_to_bytes(*r) for _, r in pairs])]
                ))
        n = yield from self._delete_range(w, req.key, end)
        out.deleted = n
        out.header.revision = w.begin_rev + 1 if (n or w.changes) else w.begin_rev

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        return self._auto(run_steps, self.delete_range_steps(req))

    def delete_range_steps(self, req: rpc_pb2.DeleteRangeRequest):
        """delete_range as a step generator (see _steps); inside a batch."""
        out = rpc_pb2.DeleteRangeResponse()
        w = self._begin_write()
        yield from self._delete_into(w, req, out)
        self._end_write(w)
        return out

    def delete_keys(self, keys: list[bytes]) -> int:
        """Delete the given (existing) keys in one revision; returns the revision."""
        return self._auto(run_steps, self.delete_keys_steps(keys))

    def delete_keys_steps(self, keys: list[bytes]):
        """delete_keys as a step generator (see _steps); inside a batch."""
        w = self._begin_write()
        for k in keys:
            h = self.index.history(k)
            if h is not None and h.is_live():
                self._delete(w, k)
                yield
        return self._end_write(w)

    # -- Txn ------------------------------------------------------------------

    def _compare(self, c: rpc_pb2.Compare, at_rev: int) -> bool:
        pairs, _ = self.index.revisions(c.key, mk_gte_range(c.range_end), at_rev)
        target = c.target
        if not pairs:
            # A value cannot be compared on a missing key (nil == "" on the
            # wire, so there is no way to say "missing"): always false.
            if target == _CMP.VALUE:
                return False
            return self._compare_kv(c, target, None)
        for kv in self._fetch([rev_to_bytes(*r) for _, r in pairs]):
            if not self._compare_kv(c, target, KeyValue.FromString(kv)):
                return False
        return True

    @staticmethod
    def _compare_kv(c: rpc_pb2.Compare, target: int, kv: KeyValue | None) -> bool:
        if target == _CMP.VALUE:
            a, b = (kv.value if kv is not None else b""), c.value
        elif target == _CMP.VERSION:
            a, b = (kv.version if kv is not None else 0), c.version
        elif target == _CMP.CREATE:
            a, b = (kv.create_revision if kv is not None else 0), c.create_revision
        elif target == _CMP.MOD:
            a, b = (kv.mod_revision if kv is not None else 0), c.mod_revision
        elif target == _CMP.LEASE:
            a, b = (kv.lease if kv is not None else 0), c.lease
        else:
            return True
        r = c.result
        if r == _CMP.EQUAL:
            return a == b
        if r == _CMP.NOT_EQUAL:
            return a != b
        if r == _CMP.GREATER:
            return a > b
        if r == _CMP.LESS:
            return a < b
        return True

    def _compare_to_path(self, txn: rpc_pb2.TxnRequest, at_rev: int, path: list[bool]) -> None:
        """Evaluate every compare on the taken path, before any op runs.

        Nested txns' compares see the state before the outer txn, as in
        etcd. ``path`` gets one bool per txn visited, in pre-order.
        """
        ok = all(self._compare(c, at_rev) for c in txn.compare)
        path.append(ok)
        for op in (txn.success if ok else txn.failure):
            if op.WhichOneof("request") == "request_txn":
                self._compare_to_path(op.request_txn, at_rev, path)

    def _check_txn_ops(self, txn: rpc_pb2.TxnRequest, path: Iterator[bool]):
        """A step generator (see _steps): reads only."""
        cur = self.current_rev
        for op in (txn.success if next(path) else txn.failure):
            kind = op.WhichOneof("request")
            if kind == "request_put":
                self.check_put(op.request_put)
            elif kind == "request_range":
                rev = op.request_range.revision
                if rev > 0:
                    self._check_rev(rev, cur)
            elif kind == "request_txn":
                yield from self._check_txn_ops(op.request_txn, path)
            yield

    def _txn_ops_into(self, w: _Write, txn: rpc_pb2.TxnRequest, path: Iterator[bool], out: rpc_pb2.TxnResponse):
        """A step generator (see _steps): one step per op."""
        ok = next(path)
        out.succeeded = ok
        for op in (txn.success if ok else txn.failure):
            kind = op.WhichOneof("request")
            r = out.responses.add()
            if kind == "request_range":
                self._range_into(op.request_range, w.read_rev(), r.response_range)
            elif kind == "request_put":
                self._put_into(w, op.request_put, r.response_put)
            elif kind == "request_delete_range":
                yield from self._delete_into(w, op.request_delete_range, r.response_delete_range)
            elif kind == "request_txn":
                # etcd answers a nested txn with an empty header.
                r.response_txn.header.SetInParent()
                yield from self._txn_ops_into(w, op.request_txn, path, r.response_txn)
            yield

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        return self._auto(run_steps, self.txn_steps(req))

    def txn_steps(self, req: rpc_pb2.TxnRequest):
        """txn as a step generator (see _steps); inside a batch."""
        path: list[bool] = []
        self._compare_to_path(req, self.current_rev, path)
        yield from self._check_txn_ops(req, iter(path))
        self.txn_total += 1
        out = rpc_pb2.TxnResponse()
        w = self._begin_write()
        yield from self._txn_ops_into(w, req, iter(path), out)
        out.header.revision = self._end_write(w)
        return out

    # -- compaction -----------------------------------------------------------

    def compact(self, rev: int) -> rpc_pb2.CompactionResponse:
        return self._auto(self._compact_request, rev)

    def _compact_request(self, rev: int) -> rpc_pb2.CompactionResponse:
        if rev <= self.compact_rev:
            raise errors.Compacted(self.compact_rev)
        if rev > self.current_rev:
            raise errors.FutureRevision()
        self.compact_rev = rev
        self.backend.set_meta([("scheduled_compact_rev", rev)])
        self._schedule_compaction(rev)
        out = rpc_pb2.CompactionResponse()
        out.header.revision = self.current_rev
        return out

    def _schedule_compaction(self, rev: int) -> None:
        # The index is compacted COMPACT_KEYS_PER_STEP keys per step (a whole
        # big index at once stalled the member's loop, 0.13 s per 50k keys);
        # the rows go once it is done and the keep set complete.
        self._index_keep = set()
        self._index_steps = self.index.compact_steps(rev, self._index_keep, COMPACT_KEYS_PER_STEP)
        self._compaction = (rev, None)
        self._compact_cursor = b""

    def _compact_step(self, max_rows: int) -> bool:
        """Delete up to max_rows rows no read at >= the compact rev needs.

        Runs inside the batch transaction, after the batch's rows are
        written (a row written in this batch can already be garbage).
        Returns True when the compaction is finished.
        """
        assert self._compaction is not None
        rev, keep = self._compaction
        if keep is None:
            try:
                # (A small index is done in its first step, which then goes
                # on with the rows.)
                next(self._index_steps)  # type: ignore[arg-type]
                return False
            except StopIteration:
                keep = {rev_to_bytes(m, s) for m, s in self._index_keep}
                self._compaction = (rev, keep)
                self._index_steps = None
                big = len(self._index_keep) > COMPACT_KEYS_PER_STEP
                self._index_keep = set()
                if big:
                    return False  # the rows from the next step on
        upper = lower_bound_bytes(rev + 1)
        b = self.backend
        sized = b.range_rev_sizes(self._compact_cursor, upper, max_rows)
        # Deleting a row frees its overflow pages one by one: bound a step
        # by bytes as well as rows (30 rows of 1.4 MiB took 0.2-0.5 s in
        # one step), always making progress by one row.
        revs: list[bytes] = []
        doomed = 0
        for r, size in sized:
            if revs and doomed >= COMPACT_BYTES_PER_BATCH:
                break
            revs.append(r)
            if r[:REV_BYTES_LEN] not in keep:
                doomed += size
        b.delete_rows([r for r in revs if r[:REV_BYTES_LEN] not in keep])
        if len(revs) == len(sized) and len(sized) < max_rows:
            b.set_meta([("finished_compact_rev", rev)])
            self._compaction = None
            self._compact_cursor = b""
            return True
        # Continue after the last row looked at (rows >= cursor; the
        # tombstone mark makes 18-byte keys sort after their 17-byte prefix).
        self._compact_cursor = revs[-1] + b"\x00"
        return False

    @property
    def compaction_pending(self) -> bool:
        return self._compaction is not None

    def finish_compaction(self) -> None:
        """Run the physical part of a scheduled compaction to the end, now."""
        while self._compaction is not None:
            self.begin_batch()
            self.commit_batch()

    # -- hash -----------------------------------------------------------------

    def hash_kv(self, rev: int = 0) -> rpc_pb2.HashKVResponse:
        """etcd's HashKV: a checksum of the kv rows visible up to rev.

        Rows at or below the compact revision count only if a read at rev
        could still need them (the index's keep set), so the hash does not
        depend on how far physical compaction has got. The checksum is
        zlib's CRC-32 (etcd uses CRC-32C, which the standard library lacks):
        comparable between our members, not with real etcd's numbers.
        """
        steps = self.hash_kv_steps(rev, self.backend.iter_rows)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value()

    def hash_kv_job(self, rev: int, iter_rows) -> "Callable[[], rpc_pb2.HashKVResponse]":
        """hash_kv_steps run to the end at once."""
        steps = self.hash_kv_steps(rev, iter_rows)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def hash_kv_steps(self, rev: int, iter_rows):
        """hash_kv in two halves. This generator checks rev and takes what it
        needs from the in-memory index, a few thousand keys per step (drive
        it on the applying thread, letting the loop run between steps; no
        batch may be open while it runs); it returns a function that reads
        the rows through ``iter_rows`` (a Reader pinned when the generator
        was made) and may run on a worker."""
        if self._in_batch:
            raise RuntimeError("hash_kv inside a batch")
        compact, cur = self.compact_rev, self.current_rev
        if 0 < rev <= compact:
            raise errors.Compacted(compact)
        if rev > cur:
            raise errors.FutureRevision()
        if rev <= 0:
            rev = cur
        # The keep set only matters for rows at or below the compact
        # revision (O(keys) to build): none before a compaction.
        keep_revs: set[tuple[int, int]] = set()
        if compact >= 0:
            yield from self.index.keep_steps(rev, keep_revs)
            if self.compact_rev > rev:
                # A compaction past rev was applied meanwhile: the index no
                # longer knows what a read at rev saw.
                raise errors.Compacted(self.compact_rev)
        upper = lower_bound_bytes(rev + 1)
        lower = lower_bound_bytes(compact + 1) if compact >= 0 else b""

        def run() -> rpc_pb2.HashKVResponse:
            keep = {rev_to_bytes(m, s) for m, s in keep_revs}
            h = zlib.crc32(b"key")
            crc = zlib.crc32
            for revb, blob in iter_rows():
                if revb >= upper:
                    break
                if revb < lower and revb[:REV_BYTES_LEN] not in keep:
                    continue
                h = crc(blob, crc(revb, h))
            out = rpc_pb2.HashKVResponse(hash=h & 0xFFFFFFFF, compact_revision=compact)
            out.header.revision = cur
            return out

        return run

    # -- history, for the watch hub ------------------------------------------

    def changes_since(self, min_rev: int, max_rows: int) -> tuple[list[RevisionChanges], int]:
        """Committed changes from min_rev on, in whole revisions, about max_rows of them.

        Returns (changes grouped by revision, last revision fully covered).
        Reads at least one whole revision even if it alone exceeds max_rows.
        """
        if self._in_batch:
            raise RuntimeError("history read inside a batch")
        cur = self.current_rev
        if min_rev > cur:
            return [], cur
        b = self.backend
        upper = lower_bound_bytes(cur + 1)
        rows = b.range_rows(lower_bound_bytes(min_rev), upper, max_rows)
        upto = cur
        if len(rows) >= max_rows:
            last_main = int.from_bytes(rows[-1][0][0:8], "big")
            # Finish the last revision so its events go out together.
            rows.extend(b.range_rows(rows[-1][0] + b"\x00", lower_bound_bytes(last_main + 1)))
            upto = last_main
        out: list[RevisionChanges] = []
        parse = KeyValue.FromString
        last = -1
        for revb, blob in rows:
            main = int.from_bytes(revb[0:8], "big")
            kv = parse(blob)
            if is_tombstone(revb):
                kv.mod_revision = main
                ch = (DELETE, kv)
            else:
                ch = (PUT, kv)
            if main != last:
                out.append((main, [ch]))
                last = main
            else:
                out[-1][1].append(ch)
        return out, upto


def kvs_wire(blobs: list[bytes]) -> bytes:
    """The stored KeyValues as a RangeResponse's repeated field 2, on the
    wire: what SerializeToString would write for them, without parsing."""
    return b"".join([b"\x12" + _varint(len(x)) + x for x in blobs])


def revs_to_bytes(revs: list[tuple[int, int]]) -> list[bytes]:
    return [rev_to_bytes(m, s) for m, s in revs]


def _finish_plain(req: rpc_pb2.RangeRequest, out: rpc_pb2.RangeResponse, blobs: list[bytes]) -> None:
    if req.keys_only:
        for blob in blobs:
            kv = out.kvs.add()
            kv.ParseFromString(blob)
            kv.ClearField("value")
    else:
        # Splice the stored messages straight into the response's wire
        # form (field 2, length-delimited): one parse per ~1 MiB, so a
        # worker doing this for a huge range lets go of the GIL between
        # slices (one parse of 50 MiB held it, and the loop, for 0.3 s).
        i, n = 0, len(blobs)
        while i < n:
            j, size = i, 0
            while j < n and size < _MERGE_SLICE:
                size += len(blobs[j])
                j += 1
            out.MergeFromString(b"".join([b"\x12" + _varint(len(x)) + x for x in blobs[i:j]]))
            i = j


def _finish_sorted(req: rpc_pb2.RangeRequest, out: rpc_pb2.RangeResponse, blobs: list[bytes]) -> None:
    limit = req.limit
    parse = KeyValue.FromString
    kvs = [parse(x) for x in blobs]
    if req.max_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
    if req.min_mod_revision:
        kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
    if req.max_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
    if req.min_create_revision:
        kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
    order, target = req.sort_order, req.sort_target
    if target != _RR.KEY and order == _RR.NONE:
        # etcd: results are key-ordered already, so a non-key target with
        # no order means ascending.
        order = _RR.ASCEND
    if order != _RR.NONE:
        keyf = {
            _RR.KEY: lambda kv: kv.key,
            _RR.VERSION: lambda kv: kv.version,
            _RR.CREATE: lambda kv: kv.create_revision,
            _RR.MOD: lambda kv: kv.mod_revision,
            _RR.VALUE: lambda kv: kv.value,
        }[target]
        kvs.sort(key=keyf, reverse=(order == _RR.DESCEND))
    if 0 < limit < len(kvs):
        kvs = kvs[:limit]
        out.more = True
    if req.keys_only:
        for kv in kvs:
            kv.ClearField("value")
    out.kvs.extend(kvs)


# What build_index makes: (index, key -> lease of its live put, last main revision).
IndexState = tuple[TreeIndex, dict[bytes, int], int]


def build_index(rows) -> IndexState:
    """The key index of stored rows (rev, blob) in revision order. Pure: may
    run on a worker over a file nobody else uses yet."""
    index = TreeIndex()
    live_lease: dict[bytes, int] = {}
    cur = 1
    parse = KeyValue.FromString
    for revb, blob in rows:
        main = int.from_bytes(revb[0:8], "big")
        sub = int.from_bytes(revb[9:17], "big")
        kv = parse(blob)
        key = kv.key
        h = index.history(key)
        if len(revb) > REV_BYTES_LEN:  # tombstone
            if h is not None and h.is_live():
                h.tombstone(main, sub)
            live_lease.pop(key, None)
        else:
            if h is None:
                index.restore(key, kv.create_revision, (main, sub), kv.version)
            else:
                h.put(main, sub)
            live_lease[key] = kv.lease
        cur = main
    index.finish_restore(cur)
    return index, live_lease, cur
