"""Review of cba8af3 (a committed request whose apply raises is skipped):
the skip works, but its cost is the db's size, on every member's loop.

A legal-looking Txn whose range op has a sort_target etcd does not define
(proto3 enums take any number) passes validation (etcd refuses it before
proposing: v3rpc checkRangeRequest, InvalidArgument "etcdserver: invalid
sort option"), is committed, and raises KeyError in kvstore._finish_sorted
on every member. The applier's abort_batch() then rebuilds the key index
from every row (restore_from_backend), on the event loop, and
Node._apply_one_by_one does it a second time for the culprit: with 50k
small keys every member's loop stalled 2-3.5 s and the cluster changed
leader. One request per few seconds keeps a cluster without a leader.

(The same Range sent to KV.Range answers UNKNOWN "99", the KeyError's text.)
"""
from __future__ import annotations

import time

import grpc

from engine.proto import inspect_pb2, inspect_pb2_grpc, rpc_pb2, rpc_pb2_grpc

KEYS = 20000
RR = rpc_pb2.RangeRequest


def _lags(c) -> list[int]:
    out = []
    for ep in c.endpoints:
        with grpc.insecure_channel(ep) as ch:
            out.append(inspect_pb2_grpc.InspectStub(ch).RaftStatus(
                inspect_pb2.RaftStatusRequest(), timeout=5).loop_lag_ms)
    return out


def test_txn_with_unknown_sort_target_neither_proposed_nor_stalls(hard_cluster_factory):
    c = hard_cluster_factory(3)
    lead = c.wait_leader()
    with grpc.insecure_channel(c.members[lead].endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(0, KEYS, 128):
            kv.Txn(rpc_pb2.TxnRequest(success=[
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%08d" % j, value=b"x" * 100))
                for j in range(i, min(KEYS, i + 128))]), timeout=30)
        time.sleep(5.5)  # the loaded members' lag window (5 s) empties
        before = _lags(c)
        bad = RR(key=b"k", range_end=b"l", sort_order=RR.ASCEND, sort_target=99, limit=1)
        code = details = None
        try:
            kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=bad)]), timeout=20)
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        time.sleep(0.3)
        after = _lags(c)
    assert max(after) < 200, (f"one Txn stalled the members' loops: lag {after} ms (before: {before}); "
                              f"its answer: {code} {details!r}")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "etcdserver: invalid sort option", \
        (code, details)
