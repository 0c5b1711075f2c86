"""etcd's request checks for KV (etcdserver/api/v3rpc/key.go, v3.4.23),
made before anything is proposed. Each raises an errors.APIError.

The duplicate-key check follows etcd's interval rules exactly, quirks
included: a delete's range is the half-open [key, range_end) compared as
byte strings where an empty end means "+infinity"; a put is the point
[key, key+"\\0"). So a from-key delete (range_end "\\0") overlaps nothing,
in etcd as here.
"""
from __future__ import annotations

from sortedcontainers import SortedList, SortedSet

from engine.proto import rpc_pb2

from . import errors


_SORT_ORDERS = frozenset(rpc_pb2.RangeRequest.SortOrder.values())
_SORT_TARGETS = frozenset(rpc_pb2.RangeRequest.SortTarget.values())


def check_range(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise errors.EmptyKey()
    # etcd 3.5's checkRangeRequest. etcd 3.4.23 has no such check and its
    # server panics on an unknown sort target (nil sort.Interface): measured.
    if r.sort_order not in _SORT_ORDERS or r.sort_target not in _SORT_TARGETS:
        raise errors.InvalidSortOption()


def check_put(r: rpc_pb2.PutRequest) -> None:
    if not r.key:
        raise errors.EmptyKey()
    if r.ignore_value and r.value:
        raise errors.ValueProvided()
    if r.ignore_lease and r.lease:
        raise errors.LeaseProvided()


def check_delete(r: rpc_pb2.DeleteRangeRequest) -> None:
    if not r.key:
        raise errors.EmptyKey()


# python-protobuf (upb) decodes at most 100 message levels. A txn level is two
# (TxnRequest > RequestOp) and the log entry wraps it in an InternalRequest:
# 49 txn levels with a request at the bottom still decode on apply, 50 do
# not. etcd (Go) would take up to its op budget (~128 levels); we refuse
# deeper ones before proposing, with etcd's op-count error, rather than
# propose an entry no member could decode.
MAX_TXN_DEPTH = 49


def check_txn(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """Op count (the largest of compare/success/failure, and nested txns
    count against what their parent left), nesting depth, empty keys, empty
    ops; then put/delete overlaps in each branch."""
    _check_txn_ops(r, max_txn_ops)
    _check_intervals(r.success)
    _check_intervals(r.failure)


def _check_txn_ops(r: rpc_pb2.TxnRequest, max_txn_ops: int, depth: int = 1) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops or depth > MAX_TXN_DEPTH:
        raise errors.TooManyOps()
    for c in r.compare:
        if not c.key:
            raise errors.EmptyKey()
    for op in (*r.success, *r.failure):
        _check_op(op, max_txn_ops - opc, depth)


def _check_op(op: rpc_pb2.RequestOp, max_txn_ops: int, depth: int = 1) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete(op.request_delete_range)
    elif kind == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops, depth + 1)
    else:
        raise errors.EmptyRequestOp()


# -- the put/delete overlap check ---------------------------------------------
#
# etcd (key.go checkIntervals) walks each branch bottom-up: a level's deletes
# go into an interval tree first; then, child txn by child txn, the child's
# then- and else-puts are checked against the puts seen so far and against
# the deletes gathered so far (this level's and those of earlier children),
# and the child's deletes are merged in (only intervals reaching past "\0",
# which are exactly the non-empty ones); last, this level's own puts.
# A put is the point [k, k+"\0"); a delete [key, range_end) with an empty end
# meaning +infinity, or the point of its key. A point hits an interval iff
# begin <= k < end, so only the UNION of the deletes matters: it is kept as
# disjoint sorted intervals (_Cover), and sets are merged small into large.
# That keeps the check O(n log^2 n) on any nesting, where the list scan it
# replaces was quadratic (24 x 24 nested txns of 24 puts + 24 deletes took
# 16 s on the member's loop).

_INF = None  # an interval end meaning +infinity (etcd's empty "affine" string)


class _Cover:
    """A union of half-open byte-string intervals, as disjoint sorted runs."""

    __slots__ = ("begins", "ends")

    def __init__(self) -> None:
        self.begins = SortedList()
        self.ends: dict[bytes, bytes | None] = {}

    def __len__(self) -> int:
        return len(self.begins)

    def add(self, b: bytes, e: bytes | None) -> None:
        if e is not _INF and e <= b:
            return  # empty: overlaps nothing (etcd's from-key "\0" quirk too)
        begins, ends = self.begins, self.ends
        i = begins.bisect_right(b) - 1
        if i >= 0:
            pe = ends[begins[i]]
            if pe is _INF or pe >= b:
                # Touches or overlaps the run before: extend that one.
                b = begins[i]
                if pe is _INF or (e is not _INF and pe >= e):
                    return
            else:
                i += 1
        else:
            i = 0
        # Swallow every run that starts inside [b, e].
        while i < len(begins):
            nb = begins[i]
            if e is not _INF and nb > e:
                break
            ne = ends.pop(nb)
            del begins[i]
            if e is not _INF and (ne is _INF or ne > e):
                e = ne
        begins.add(b)
        ends[b] = e

    def hits(self, k: bytes) -> bool:
        begins = self.begins
        i = begins.bisect_right(k) - 1
        if i < 0:
            return False
        e = self.ends[begins[i]]
        return e is _INF or k < e

    def runs(self):
        ends = self.ends
        return ((b, ends[b]) for b in self.begins)

    def hits_any(self, keys: SortedSet) -> bool:
        """Does any of ``keys`` fall inside the cover? Walks the smaller side."""
        if len(keys) <= len(self.begins):
            return any(self.hits(k) for k in keys)
        for b, e in self.runs():
            j = keys.bisect_left(b)
            if j < len(keys) and (e is _INF or keys[j] < e):
                return True
        return False

    def merge(self, other: "_Cover") -> "_Cover":
        """The union of both (the larger one is reused and returned)."""
        big, small = (self, other) if len(self) >= len(other) else (other, self)
        for b, e in small.runs():
            big.add(b, e)
        return big


def _disjoint(a: SortedSet, b: SortedSet) -> bool:
    small, big = (a, b) if len(a) <= len(b) else (b, a)
    return not any(k in big for k in small)


def _union(a: SortedSet, b: SortedSet) -> SortedSet:
    big, small = (a, b) if len(a) >= len(b) else (b, a)
    if small:
        big.update(small)
    return big


def _check_intervals(ops) -> tuple[SortedSet, _Cover]:
    """(puts, deletes) of one branch, or DuplicateKey."""
    dels = _Cover()
    children = []
    own_puts = []
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_delete_range":
            d = op.request_delete_range
            # A range end is used verbatim (so "\0" makes an empty interval).
            dels.add(d.key, d.range_end if d.range_end else d.key + b"\x00")
        elif kind == "request_txn":
            children.append(op.request_txn)
        elif kind == "request_put":
            own_puts.append(op.request_put.key)
    puts = SortedSet()
    for t in children:
        puts_then, dels_then = _check_intervals(t.success)
        puts_else, dels_else = _check_intervals(t.failure)
        # then and else exclude each other: the same key in both is fine,
        # but neither may meet a put already seen at this level.
        if not _disjoint(puts, puts_then) or dels.hits_any(puts_then):
            raise errors.DuplicateKey()
        if not _disjoint(puts, puts_else) or dels.hits_any(puts_else):
            raise errors.DuplicateKey()
        puts = _union(_union(puts, puts_then), puts_else)
        dels = dels.merge(dels_then).merge(dels_else)
    for k in own_puts:
        if k in puts or dels.hits(k):
            raise errors.DuplicateKey()
        puts.add(k)
    return puts, dels
