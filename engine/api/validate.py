"""etcd's request checks for KV (etcdserver/api/v3rpc/key.go, v3.4.23),
made before anything is proposed. Each raises an errors.APIError.

The duplicate-key check follows etcd's interval rules exactly, quirks
included: a delete's range is the half-open [key, range_end) compared as
byte strings where an empty end means "+infinity"; a put is the point
[key, key+"\\0"). So a from-key delete (range_end "\\0") overlaps nothing,
in etcd as here.
"""
from __future__ import annotations

from engine.proto import rpc_pb2

from . import errors


def check_range(r: rpc_pb2.RangeRequest) -> None:
    if not r.key:
        raise errors.EmptyKey()


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


def check_txn(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    """Op count (the largest of compare/success/failure, and nested txns
    count against what their parent left), empty keys, empty ops; then
    put/delete overlaps in each branch."""
    _check_txn_ops(r, max_txn_ops)
    _check_intervals(r.success)
    _check_intervals(r.failure)


def _check_txn_ops(r: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_txn_ops:
        raise errors.TooManyOps()
    for c in r.compare:
        if not c.key:
            raise errors.EmptyKey()
    for op in (*r.success, *r.failure):
        _check_op(op, max_txn_ops - opc)


def _check_op(op: rpc_pb2.RequestOp, max_txn_ops: int) -> None:
    kind = op.WhichOneof("request")
    if kind == "request_range":
        check_range(op.request_range)
    elif kind == "request_put":
        check_put(op.request_put)
    elif kind == "request_delete_range":
        check_delete(op.request_delete_range)
    elif kind == "request_txn":
        _check_txn_ops(op.request_txn, max_txn_ops)
    else:
        raise errors.EmptyRequestOp()


# An interval is (begin, end); end b"" means +infinity (etcd's "affine" strings).
Interval = tuple[bytes, bytes]


def _before(a: bytes, b: bytes) -> bool:
    """a < b where b"" is +infinity (a begin is never empty here)."""
    if not b:
        return bool(a)
    if not a:
        return False
    return a < b


def _point(key: bytes) -> Interval:
    return key, key + b"\x00"


def _overlaps(dels: list[Interval], key: bytes) -> bool:
    pb, pe = _point(key)
    return any(_before(b, pe) and _before(pb, e) for b, e in dels)


def _check_intervals(ops) -> tuple[set[bytes], list[Interval]]:
    """(puts, deletes) of one branch, or DuplicateKey."""
    dels: list[Interval] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.append((d.key, d.range_end) if d.range_end else _point(d.key))
    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = _check_intervals(op.request_txn.success)
        puts_else, dels_else = _check_intervals(op.request_txn.failure)
        for k in puts_then:
            if k in puts or _overlaps(dels, k):
                raise errors.DuplicateKey()
            puts.add(k)
        for k in puts_else:
            # then and else exclude each other: the same key in both is fine.
            if (k in puts and k not in puts_then) or _overlaps(dels, k):
                raise errors.DuplicateKey()
            puts.add(k)
        # etcd merges only the child intervals that reach past "\0".
        dels.extend(iv for iv in (*dels_then, *dels_else) if _before(b"\x00", iv[1]))
    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        k = op.request_put.key
        if k in puts or _overlaps(dels, k):
            raise errors.DuplicateKey()
        puts.add(k)
    return puts, dels
