"""Requests grpc cannot decode: grpc-go's status (as etcd answers), never a
Python exception's text, and the member keeps serving."""
from __future__ import annotations

import grpc

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import channel

# A field 1 (key) length-delimited with a length far past the end of the message.
GARBAGE = b"\x0a\xff\xff\xff\x0f" + b"k"


def _raw_unary(ch, method: str):
    return ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _deep_txn(levels: int) -> rpc_pb2.TxnRequest:
    top = rpc_pb2.TxnRequest()
    cur = top
    for _ in range(levels):
        cur = cur.success.add().request_txn
    cur.success.add().request_range.key = b"deep"
    return top


def _assert_refused(e: grpc.RpcError) -> None:
    assert e.code() == grpc.StatusCode.INTERNAL, (e.code(), e.details())
    assert e.details().startswith("grpc: error unmarshalling request: "), e.details()
    assert "<class" not in e.details() and "Traceback" not in e.details()


def test_garbage_bytes_get_grpc_gos_status(cluster1):
    with channel(cluster1.endpoints[0]) as ch:
        for method in ("/etcdserverpb.KV/Put", "/etcdserverpb.KV/Range", "/etcdserverpb.KV/Txn",
                       "/etcdserverpb.Lease/LeaseGrant", "/etcdserverpb.Maintenance/Status"):
            try:
                _raw_unary(ch, method)(GARBAGE, timeout=5)
            except grpc.RpcError as e:
                _assert_refused(e)
            else:
                raise AssertionError(f"{method} accepted garbage")
        # Still serving.
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"after-garbage", value=b"v"), timeout=5)


def test_txn_nested_past_the_decoder_limit(cluster1):
    with channel(cluster1.endpoints[0]) as ch:
        try:
            rpc_pb2_grpc.KVStub(ch).Txn(_deep_txn(60), timeout=5)
        except grpc.RpcError as e:
            _assert_refused(e)
        else:
            raise AssertionError("a 60-deep txn decoded: the runtime's limit moved; revisit this test")


def test_garbage_in_a_watch_stream_ends_it_with_a_status(cluster1):
    with channel(cluster1.endpoints[0]) as ch:
        call = ch.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=lambda b: b,
                                response_deserializer=rpc_pb2.WatchResponse.FromString)
        try:
            list(call(iter([GARBAGE]), timeout=5))
        except grpc.RpcError as e:
            _assert_refused(e)
        else:
            raise AssertionError("the watch stream ended without a status")


def test_garbage_in_a_keepalive_stream_ends_it_with_a_status(cluster1):
    with channel(cluster1.endpoints[0]) as ch:
        call = ch.stream_stream("/etcdserverpb.Lease/LeaseKeepAlive", request_serializer=lambda b: b,
                                response_deserializer=rpc_pb2.LeaseKeepAliveResponse.FromString)
        try:
            list(call(iter([GARBAGE]), timeout=5))
        except grpc.RpcError as e:
            _assert_refused(e)
        else:
            raise AssertionError("the keepalive stream ended without a status")
