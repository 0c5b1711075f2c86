"""An unknown sort order/target is refused before proposing with etcd 3.5's
InvalidArgument "etcdserver: invalid sort option" (etcd 3.4.23's server
panics on it: a nil sort.Interface), in a Range and in a Txn's range ops at
any depth; nothing reaches the log."""
from __future__ import annotations

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import channel

RR = rpc_pb2.RangeRequest
BAD = [dict(sort_target=99), dict(sort_order=7), dict(sort_target=-1, sort_order=RR.ASCEND)]


def _txn(rr: RR, depth: int) -> rpc_pb2.TxnRequest:
    top = rpc_pb2.TxnRequest()
    cur = top
    for _ in range(depth):
        cur = cur.failure.add().request_txn
    cur.success.add().request_range.CopyFrom(rr)
    return top


@pytest.mark.parametrize("kw", BAD, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_unknown_sort_option_is_refused(cluster1, kw):
    with channel(cluster1.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        rev = kv.Range(RR(key=b"x"), timeout=5).header.revision
        calls = [lambda: kv.Range(RR(key=b"a", **kw), timeout=5)]
        calls += [lambda d=d: kv.Txn(_txn(RR(key=b"a", **kw), d), timeout=5) for d in (0, 3)]
        for call in calls:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert e.value.details() == "etcdserver: invalid sort option"
        # Known values still work, and nothing was written.
        assert kv.Range(RR(key=b"a", sort_target=RR.MOD, sort_order=RR.DESCEND), timeout=5).header.revision == rev
