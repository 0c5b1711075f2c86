"""Differential check: the same request script against real etcd 3.4 and our store.

Optional: skipped when /usr/bin/etcd is not installed (the other MVCC tests
never need it). Every response must be equal once the header fields only a
server fills (cluster_id, member_id, raft_term) are cleared; errors must
carry etcd's exact message.
"""
from __future__ import annotations

import shutil

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from tests.mvcc.helpers import Harness, RR, cmp, del_req, put_req, range_req, txn_req

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="real etcd not installed")

LEASE = 0x1234


def script() -> list:
    s: list = []
    add = s.append
    # generations: create, update, delete, recreate
    add(put_req("foo", "v1"))
    add(put_req("foo", "v2", prev_kv=True))
    add(put_req("bar", "b1"))
    add(del_req("foo", prev_kv=True))
    add(del_req("foo", prev_kv=True))          # deletes nothing: no new revision
    add(put_req("foo", "v3", prev_kv=True))    # new generation
    add(range_req("foo"))
    for rev in (1, 2, 3, 4, 5, 6, 7):
        add(range_req("foo", revision=rev))
    add(range_req("foo", revision=99))         # future
    # ignore_value / ignore_lease
    add(put_req("nokey", ignore_value=True))
    add(put_req("nokey", ignore_lease=True))
    add(put_req("foo", ignore_value=True, prev_kv=True))
    # a range of keys with distinct versions/values for sorting
    for i, k in enumerate(["k1", "k2", "k3", "k4", "k5"]):
        for j in range(i % 3 + 1):
            add(put_req(k, f"{'zyxwv'[i]}{j}"))
    add(range_req("k", "l"))
    add(range_req("k", "l", limit=2))
    add(range_req("k", "l", limit=5))
    add(range_req("k", "l", limit=6))
    add(range_req("k", "l", count_only=True))
    add(range_req("k", "l", keys_only=True))
    add(range_req("k", "l", keys_only=True, limit=1))
    for order in (RR.NONE, RR.ASCEND, RR.DESCEND):
        for target in (RR.KEY, RR.VERSION, RR.CREATE, RR.MOD, RR.VALUE):
            add(range_req("k", "l", sort_order=order, sort_target=target))
            add(range_req("k", "l", sort_order=order, sort_target=target, limit=2))
    add(range_req("k", "l", min_mod_revision=12))
    add(range_req("k", "l", max_mod_revision=12, limit=1))
    add(range_req("k", "l", min_create_revision=12, max_create_revision=14))
    add(range_req("k3", "\0"))                  # from key
    add(range_req("\0", "\0", count_only=True)) # everything
    add(range_req("k3", "k1"))                  # empty interval
    add(range_req("k", "l", revision=12))
    # transactions
    add(txn_req([cmp("foo", "VALUE", "EQUAL", "v3")], [put_req("t1", "a"), range_req("t1")], [put_req("t1", "b")]))
    add(txn_req([cmp("foo", "VALUE", "EQUAL", "nope")], [put_req("t1", "a")], [put_req("t2", "b"), range_req("t", "u")]))
    add(txn_req([cmp("missing", "VALUE", "EQUAL", "")], [put_req("t3", "x")], [range_req("t3")]))
    add(txn_req([cmp("missing", "VERSION", "EQUAL", 0)], [put_req("t3", "x")], []))
    add(txn_req([cmp("missing", "CREATE", "LESS", 1)], [], [put_req("t4", "y")]))
    add(txn_req([cmp("k", "VERSION", "GREATER", 0, range_end="l")], [range_req("k1")], [range_req("k2")]))
    add(txn_req([cmp("k", "VERSION", "GREATER", 1, range_end="l")], [range_req("k1")], [range_req("k2")]))
    add(txn_req([cmp("k", "MOD", "LESS", 100, range_end="l"), cmp("foo", "LEASE", "EQUAL", 0)],
                [del_req("k5"), put_req("k6", "n")], []))
    add(txn_req([cmp("foo", "VALUE", "NOT_EQUAL", "v3")], [], [range_req("foo"), range_req("bar")]))  # read-only
    add(txn_req([], [del_req("nothing"), range_req("k", "l")], []))  # deletes nothing: no bump
    add(txn_req([cmp("foo", "VALUE", "GREATER", "v2")],
                [put_req("n1", "a"),
                 txn_req([cmp("n1", "VERSION", "EQUAL", 0)],   # sees the state before the outer txn
                         [put_req("n2", "inner-success"), range_req("n1")],
                         [put_req("n2", "inner-failure")]),
                 del_req("bar", prev_kv=True)],
                []))
    add(txn_req([], [put_req("r1", "x"), put_req("r2", "y"), del_req("k1"), range_req("r", "s")], []))
    add(txn_req([], [put_req("ign", ignore_value=True)], []))  # key not found: no change
    add(range_req("\0", "\0"))
    # leases
    add(rpc_pb2.LeaseGrantRequest(ID=LEASE, TTL=1000))
    add(rpc_pb2.LeaseGrantRequest(ID=LEASE, TTL=1000))               # exists
    add(rpc_pb2.LeaseGrantRequest(ID=LEASE + 1, TTL=9_000_000_001))  # too large
    add(put_req("l1", "a", lease=LEASE))
    add(put_req("l2", "b", lease=LEASE))
    add(put_req("l3", "c", lease=LEASE + 7))                         # lease not found
    add(put_req("l1", "a2", ignore_lease=True))
    add(put_req("l2", "b2", lease=0))                                # detaches l2
    add(txn_req([cmp("l1", "LEASE", "EQUAL", LEASE)], [range_req("l", "m")], []))
    add(rpc_pb2.LeaseRevokeRequest(ID=LEASE))
    add(rpc_pb2.LeaseRevokeRequest(ID=LEASE))                        # not found
    add(range_req("l", "m"))
    # compaction
    add(rpc_pb2.CompactionRequest(revision=10))
    add(range_req("foo", revision=9))
    add(range_req("foo", revision=10))
    add(range_req("\0", "\0", revision=11))
    add(rpc_pb2.CompactionRequest(revision=10))
    add(rpc_pb2.CompactionRequest(revision=5))
    add(rpc_pb2.CompactionRequest(revision=1000))
    add(txn_req([], [range_req("foo", revision=3)], []))             # compacted inside a txn
    add(txn_req([], [range_req("foo", revision=1000)], []))          # future inside a txn
    add(range_req("\0", "\0"))
    return s


def _clean(resp):
    """Clear what the server (not the store) fills in, in every nested header."""
    r = type(resp)()
    r.CopyFrom(resp)

    def walk(m):
        for fd, val in m.ListFields():
            if fd.name == "header":
                val.cluster_id = 0
                val.member_id = 0
                val.raft_term = 0
            elif fd.message_type is not None:
                if fd.is_repeated:
                    for v in val:
                        walk(v)
                else:
                    walk(val)
    walk(r)
    return r


def _etcd_call(kv, lease, req):
    if isinstance(req, rpc_pb2.RangeRequest):
        return kv.Range(req)
    if isinstance(req, rpc_pb2.PutRequest):
        return kv.Put(req)
    if isinstance(req, rpc_pb2.DeleteRangeRequest):
        return kv.DeleteRange(req)
    if isinstance(req, rpc_pb2.TxnRequest):
        return kv.Txn(req)
    if isinstance(req, rpc_pb2.CompactionRequest):
        return kv.Compact(rpc_pb2.CompactionRequest(revision=req.revision, physical=True))
    if isinstance(req, rpc_pb2.LeaseGrantRequest):
        return lease.LeaseGrant(req)
    if isinstance(req, rpc_pb2.LeaseRevokeRequest):
        return lease.LeaseRevoke(req)
    raise TypeError(req)


def test_same_answers_as_etcd(real_etcd, tmp_path):
    h = Harness.in_dir(tmp_path)
    ch = grpc.insecure_channel(real_etcd.endpoints[0])
    kv, lease = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.LeaseStub(ch)
    mismatches = []
    try:
        for i, req in enumerate(script()):
            try:
                theirs = _clean(_etcd_call(kv, lease, req))
            except grpc.RpcError as e:
                theirs = ("error", e.details())
            (ours,) = h.apply(req)
            if isinstance(ours, Exception):
                ours = ("error", ours.etcd_message)
            elif not isinstance(ours, tuple):
                ours = _clean(ours)
            if ours != theirs:
                mismatches.append(f"#{i} {type(req).__name__} {req}\n  etcd: {theirs}\n  ours: {ours}")
    finally:
        ch.close()
        h.close()
    assert not mismatches, "\n".join(mismatches)
