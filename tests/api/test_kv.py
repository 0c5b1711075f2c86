"""KV through the real etcdctl and grpc stubs: options, txn, and etcd's
error texts (as etcdctl prints them), on a 3-member cluster."""
from __future__ import annotations

import json

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import channel, ctl, error_line, ok


def test_put_get_delete_with_options(cluster3):
    eps = cluster3.endpoints
    ok(eps, "put", "kv/a", "1")
    ok(eps, "put", "kv/b", "2")
    ok(eps, "put", "kv/c", "3")
    assert ok(eps, "get", "kv/", "--prefix") == "kv/a\n1\nkv/b\n2\nkv/c\n3\n"
    assert ok(eps, "get", "kv/", "--prefix", "--keys-only") == "kv/a\n\nkv/b\n\nkv/c\n\n"
    assert ok(eps, "get", "kv/", "--prefix", "--limit=2", "--print-value-only") == "1\n2\n"
    assert ok(eps, "get", "kv/", "--prefix", "--sort-by=KEY", "--order=DESCEND",
              "--print-value-only") == "3\n2\n1\n"
    assert ok(eps, "get", "kv/b", "--from-key", "--keys-only").startswith("kv/b\n\nkv/c\n")
    # Serializable reads are answered by whichever member is asked.
    for ep in eps:
        assert ok([ep], "get", "kv/a", "--consistency=s", "--print-value-only") == "1\n"
    out = json.loads(ok(eps, "get", "kv/a", "-w", "json"))
    hdr = out["header"]
    assert hdr["cluster_id"] and hdr["member_id"] and hdr["revision"] and hdr["raft_term"]
    rev = out["kvs"][0]["mod_revision"]
    ok(eps, "put", "kv/a", "1b")
    assert ok(eps, "get", "kv/a", f"--rev={rev}", "--print-value-only") == "1\n"
    assert ok(eps, "put", "kv/a", "1c", "--prev-kv") == "OK\nkv/a\n1b\n"
    assert ok(eps, "del", "kv/", "--prefix", "--prev-kv") == "3\nkv/a\n1c\nkv/b\n2\nkv/c\n3\n"
    assert ok(eps, "get", "kv/", "--prefix") == ""


def test_txn_from_stdin(cluster3):
    eps = cluster3.endpoints
    ok(eps, "put", "txn/x", "1")
    script = 'value("txn/x") = "1"\n\nput txn/y yes\nget txn/x\n\nput txn/y no\n\n'
    assert ok(eps, "txn", input=script) == "SUCCESS\n\nOK\n\ntxn/x\n1\n"
    assert ok(eps, "get", "txn/y", "--print-value-only") == "yes\n"
    script = 'value("txn/x") = "2"\n\nput txn/y yes\n\nput txn/y no\n\n'
    assert ok(eps, "txn", input=script) == "FAILURE\n\nOK\n"
    assert ok(eps, "get", "txn/y", "--print-value-only") == "no\n"


def test_etcd_error_texts(cluster3):
    eps = cluster3.endpoints
    assert error_line(eps, "put", "", "v") == "Error: etcdserver: key is not provided"
    assert error_line(eps, "get", "") == "Error: etcdserver: key is not provided"
    # 129 puts in one branch: over --max-txn-ops (128).
    script = "\n" + "".join(f"put many/{i} v\n" for i in range(129)) + "\n\n"
    assert error_line(eps, "txn", input=script) == "Error: etcdserver: too many operations in txn request"
    script = "\nput dup/k 1\nput dup/k 2\n\n\n"
    assert error_line(eps, "txn", input=script) == "Error: etcdserver: duplicate key given in txn request"
    rev = json.loads(ok(eps, "put", "cmp/k", "v", "-w", "json"))["header"]["revision"]
    ok(eps, "put", "cmp/k", "v2")
    assert ok(eps, "compaction", str(rev)) == f"compacted revision {rev}\n"
    assert error_line(eps, "get", "cmp/k", f"--rev={rev - 1}") == \
        "Error: etcdserver: mvcc: required revision has been compacted"
    assert error_line(eps, "get", "cmp/k", "--rev=100000") == \
        "Error: etcdserver: mvcc: required revision is a future revision"
    assert error_line(eps, "compaction", str(rev - 1)) == \
        "Error: etcdserver: mvcc: required revision has been compacted"
    big = "x" * (1536 * 1024 + 100)   # over --max-request-bytes, under gRPC's 2 MiB
    assert error_line(eps, "put", "big", input=big) == "Error: etcdserver: request is too large"
    assert error_line(eps, "put", "k", "v", "--lease=1234") == "Error: etcdserver: requested lease not found"


def test_grpc_codes_and_ignore_flags(cluster1):
    with channel(cluster1.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        cases = [
            (rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: value is provided"),
            (rpc_pb2.PutRequest(key=b"k", lease=5, ignore_lease=True), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: lease is provided"),
            (rpc_pb2.PutRequest(key=b"nope", ignore_value=True), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: key not found"),
        ]
        for req, code, text in cases:
            with pytest.raises(grpc.RpcError) as ei:
                kv.Put(req, timeout=5)
            assert (ei.value.code(), ei.value.details()) == (code, text)
        with pytest.raises(grpc.RpcError) as ei:
            kv.Txn(rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp()]), timeout=5)
        assert ei.value.details() == "etcdserver: key not found"
        kv.Put(rpc_pb2.PutRequest(key=b"iv", value=b"one"), timeout=5)
        got = kv.Put(rpc_pb2.PutRequest(key=b"iv", ignore_value=True, prev_kv=True), timeout=5)
        assert got.prev_kv.value == b"one"
        assert kv.Range(rpc_pb2.RangeRequest(key=b"iv"), timeout=5).kvs[0].value == b"one"
        resp = kv.Compact(rpc_pb2.CompactionRequest(revision=got.header.revision, physical=True), timeout=5)
        assert resp.header.revision == got.header.revision and resp.header.member_id
