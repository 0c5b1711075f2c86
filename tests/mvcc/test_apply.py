"""The applier: one transaction per batch, exactly-once replay, isolation of failures."""
from __future__ import annotations

import pytest

from engine.mvcc import Applier, errors
from engine.mvcc.apply import open_applier
from engine.proto import rpc_pb2
from tests.mvcc.helpers import Harness, internal, put_req, range_req, txn_req, del_req


def batch() -> list:
    return [
        internal(put_req("a", "1"), 1),
        internal(put_req("b", "2"), 2),
        internal(put_req("a", "3", prev_kv=True), 3),
        internal(del_req("b"), 4),
        internal(put_req("c", "4", lease=77), 5),      # fails: lease not found
        internal(txn_req([], [put_req("d", "5")], []), 6),
    ]


def test_batch_results_and_consistent_index(tmp_path):
    a = open_applier(str(tmp_path))
    assert (tmp_path / "member" / "snap" / "db").exists()
    res = a.apply_batch(10, batch(), indexes=[5, 6, 7, 8, 9, 10])
    assert [type(r).__name__ for r in res] == [
        "PutResponse", "PutResponse", "PutResponse", "DeleteRangeResponse", "LeaseNotFound", "TxnResponse"]
    assert res[2].prev_kv.value == b"1"
    assert a.consistent_index == 10 and a.current_revision == 6
    a.close()


def test_replay_after_reopen_is_skipped(tmp_path):
    a = open_applier(str(tmp_path))
    first = a.apply_batch(10, batch(), indexes=[5, 6, 7, 8, 9, 10])
    h1 = a.hash_kv()
    a.close()
    a = open_applier(str(tmp_path))
    assert a.consistent_index == 10
    assert a.hash_kv() == h1
    # the server replays the same committed entries after a "crash"
    assert a.apply_batch(10, batch(), indexes=[5, 6, 7, 8, 9, 10]) == [None] * 6
    assert a.hash_kv() == h1 and a.current_revision == 6
    # a replay cut differently: the first half was applied, the rest is new
    more = [internal(put_req("e", "6"), 7), internal(put_req("f", "7"), 8)]
    res = a.apply_batch(12, batch()[4:] + more, indexes=[9, 10, 11, 12])
    assert res[:2] == [None, None] and all(isinstance(r, rpc_pb2.PutResponse) for r in res[2:])
    assert a.consistent_index == 12 and a.current_revision == 8
    assert first[0].header.revision == 2
    a.close()


def test_batch_without_indexes_uses_applied_index(tmp_path):
    a = Applier(str(tmp_path / "db"))
    a.apply_batch(3, [internal(put_req("a", "1"))])
    assert a.apply_batch(3, [internal(put_req("a", "2"))]) == [None]
    assert a.apply_batch(2, [internal(put_req("a", "2"))]) == [None]
    # an entry-less batch (e.g. only conf changes) still moves the index
    assert a.apply_batch(5, []) == []
    assert a.consistent_index == 5
    assert a.kv.get(b"a").value == b"1"
    a.close()


def test_unexpected_exception_rolls_back_the_whole_batch(tmp_path):
    a = Applier(str(tmp_path / "db"))
    a.apply_batch(1, [internal(put_req("a", "1"))])

    def boom(req):
        raise RuntimeError("disk on fire")

    a.register("auth_enable", boom)
    from engine.proto import internal_pb2
    bad = internal_pb2.InternalRequest(id=9, auth_enable=rpc_pb2.AuthEnableRequest())
    from engine.mvcc.apply import ApplyRejected
    with pytest.raises(ApplyRejected) as rej:
        a.apply_batch(3, [internal(put_req("a", "2")), internal(put_req("b", "1")), bad])
    # (the request's own failure, named with its place in the batch)
    assert rej.value.position == 2 and isinstance(rej.value.cause, RuntimeError)
    # memory reloaded from disk: as if the batch never happened
    assert a.consistent_index == 1 and a.current_revision == 2
    assert a.kv.get(b"a").value == b"1" and a.kv.get(b"b") is None
    a.register("auth_enable", lambda req: rpc_pb2.AuthEnableResponse())
    res = a.apply_batch(3, [internal(put_req("a", "2")), internal(put_req("b", "1")), bad])
    assert isinstance(res[2], rpc_pb2.AuthEnableResponse)
    assert a.current_revision == 4
    a.close()


def test_unhandled_kind_is_an_error_result(tmp_path):
    from engine.proto import internal_pb2
    a = Applier(str(tmp_path / "db"))
    # Every kind has a handler now (auth's are installed by the Applier):
    # a request holding none is what no handler takes.
    (res,) = a.apply_batch(1, [internal_pb2.InternalRequest(id=1)])
    assert isinstance(res, errors.Unsupported)
    a.close()


def test_precheck_refuses_without_change(tmp_path):
    a = Applier(str(tmp_path / "db"))

    class Denied(Exception):
        pass

    a.precheck = lambda req: Denied() if req.put.key == b"secret" else None
    res = a.apply_batch(2, [internal(put_req("secret", "x")), internal(put_req("open", "y"))])
    assert isinstance(res[0], Denied) and isinstance(res[1], rpc_pb2.PutResponse)
    assert a.kv.get(b"secret") is None and a.current_revision == 2
    a.close()


def test_one_transaction_per_batch(tmp_path, monkeypatch):
    h = Harness.in_dir(tmp_path)
    commits = []
    real = h.a.backend.commit
    monkeypatch.setattr(h.a.backend, "commit", lambda: (commits.append(1), real())[1])
    h.apply(*[put_req(f"k{i}", "v") for i in range(100)])
    assert len(commits) == 1
    h.close()


def test_range_in_log_at_compacted_revision_is_an_error_result(tmp_path):
    h = Harness.in_dir(tmp_path)
    h.put("a", "1")
    h.put("a", "2")
    h.compact(3)
    (res,) = h.apply(range_req("a", revision=2))
    assert isinstance(res, errors.Compacted) and res.compact_revision == 3
    assert res.etcd_message == "etcdserver: mvcc: required revision has been compacted"
    h.close()
