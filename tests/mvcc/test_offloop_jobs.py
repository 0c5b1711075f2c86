"""The off-loop halves of Range and HashKV (Applier.range_job / hash_kv_job)
answer exactly what the on-loop calls answer, from the state pinned when
the job was made, whatever the owner writes meanwhile."""
from __future__ import annotations

import threading

import pytest

from engine.mvcc.apply import Applier
from engine.proto import internal_pb2, rpc_pb2

IR = internal_pb2.InternalRequest
RR = rpc_pb2.RangeRequest


@pytest.fixture
def a(tmp_path):
    ap = Applier(str(tmp_path / "db"))
    for base in range(0, 3000, 500):
        ops = [rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%05d" % i, value=b"v%d" % i))
               for i in range(base, base + 500)]
        ap.apply_batch(ap.consistent_index + 1, [IR(txn=rpc_pb2.TxnRequest(success=ops))])
    yield ap
    ap.close()


def on_worker(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


REQS = [
    RR(key=b"k", range_end=b"l"),
    RR(key=b"k", range_end=b"l", limit=1500),
    RR(key=b"k", range_end=b"l", keys_only=True),
    RR(key=b"k", range_end=b"l", sort_order=RR.DESCEND, sort_target=RR.VALUE, limit=1200),
    RR(key=b"k", range_end=b"l", min_mod_revision=3),
    RR(key=b"k", range_end=b"l", count_only=True),
    RR(key=b"k00001"),
]


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("i", range(len(REQS)))
def test_range_job_matches_range_and_is_pinned(a, i, raw):
    req = REQS[i]
    want = a.kv.range(req)
    out, job = a.range_job(req, min_rows=1000, raw=raw)
    # Written after the job was made: not in its answer.
    a.apply_batch(a.consistent_index + 1, [IR(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k", range_end=b"l"))])
    wire = on_worker(job) if job is not None else None
    got = rpc_pb2.RangeResponse.FromString(out.SerializeToString() + wire) if wire is not None else out
    assert got == want
    assert (job is not None) == (want.count >= 1000 and not req.count_only)


def test_hash_kv_job_matches_and_is_pinned(a):
    want = a.hash_kv(0)
    job = a.hash_kv_job(0)
    a.apply_batch(a.consistent_index + 1, [IR(put=rpc_pb2.PutRequest(key=b"new", value=b"x"))])
    assert on_worker(job) == want
    assert a.hash_kv(0).hash != want.hash
    # After a compaction (the keep set matters) too.
    a.apply_batch(a.consistent_index + 1, [IR(compaction=rpc_pb2.CompactionRequest(revision=4))])
    want = a.hash_kv(0)
    assert on_worker(a.hash_kv_job(0)) == want


def _drive(steps, between=lambda: None):
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        between()


def test_hash_kv_steps_with_writes_between_steps(a):
    from engine.mvcc import key_index
    a.apply_batch(a.consistent_index + 1, [IR(compaction=rpc_pb2.CompactionRequest(revision=3))])
    want = a.hash_kv(0)
    n = [0]

    def write():
        n[0] += 1
        a.apply_batch(a.consistent_index + 1, [
            IR(put=rpc_pb2.PutRequest(key=b"k%05d" % (n[0] * 7), value=b"changed")),
            IR(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k%05d" % (n[0] * 11))),
            IR(put=rpc_pb2.PutRequest(key=b"new%d" % n[0], value=b"x"))])

    orig = key_index.TreeIndex.keep_steps
    key_index.TreeIndex.keep_steps = lambda self, r, av, chunk=100: orig(self, r, av, chunk)
    try:
        job = _drive(a.hash_kv_steps(0), write)
    finally:
        key_index.TreeIndex.keep_steps = orig
    assert n[0] >= 10  # it really was interleaved
    assert on_worker(job) == want


def test_hash_kv_steps_refuse_when_compacted_past_rev_meanwhile(a):
    from engine.mvcc import errors
    a.apply_batch(a.consistent_index + 1, [IR(compaction=rpc_pb2.CompactionRequest(revision=3))])
    rev = a.current_revision - 3
    steps = a.hash_kv_steps(rev)
    next(steps)
    a.apply_batch(a.consistent_index + 1, [IR(compaction=rpc_pb2.CompactionRequest(revision=rev + 2))])
    with pytest.raises(errors.Compacted):
        _drive(steps)


@pytest.mark.parametrize("i", range(len(REQS)))
def test_range_job_steps_with_writes_between_steps(a, i, monkeypatch):
    from engine.mvcc import key_index
    req = REQS[i]
    want = a.kv.range(req)
    orig = key_index.TreeIndex.revisions_steps
    monkeypatch.setattr(key_index.TreeIndex, "revisions_steps",
                        lambda self, k, e, r, lim=0, chunk=8192: orig(self, k, e, r, lim, 7))
    n = [0]

    def write():
        n[0] += 1
        a.apply_batch(a.consistent_index + 1, [
            IR(put=rpc_pb2.PutRequest(key=b"k%05d" % (n[0] * 13 % 3000), value=b"changed")),
            IR(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k%05d" % (n[0] * 17 % 3000))),
            IR(put=rpc_pb2.PutRequest(key=b"k%05d-new" % (n[0] * 19 % 3000), value=b"x"))])
        if n[0] == 5:
            a.apply_batch(a.consistent_index + 1, [IR(compaction=rpc_pb2.CompactionRequest(revision=3))])

    out, job = _drive(a.range_job_steps(req, min_rows=1000, raw=True), write)
    wire = on_worker(job) if job is not None else None
    got = rpc_pb2.RangeResponse.FromString(out.SerializeToString() + wire) if wire is not None else out
    assert got == want
    if req.key != b"k00001" or req.range_end:
        assert n[0] >= 5 or want.count < 50


def test_range_job_steps_refused_when_compacted_past_its_revision(a, monkeypatch):
    from engine.mvcc import errors, key_index
    orig = key_index.TreeIndex.revisions_steps
    monkeypatch.setattr(key_index.TreeIndex, "revisions_steps",
                        lambda self, k, e, r, lim=0, chunk=8192: orig(self, k, e, r, lim, 100))
    rev = a.current_revision
    steps = a.range_job_steps(RR(key=b"k", range_end=b"l", revision=rev))
    now = a.range_job_steps(RR(key=b"k", range_end=b"l"))
    next(steps)
    next(now)
    a.apply_batch(a.consistent_index + 1, [IR(put=rpc_pb2.PutRequest(key=b"k00007", value=b"1"))])
    a.apply_batch(a.consistent_index + 1, [IR(compaction=rpc_pb2.CompactionRequest(revision=a.current_revision))])
    with pytest.raises(errors.Compacted):
        _drive(steps)  # at a given revision: compacted, as etcd would say
    out, job = _drive(now)  # at "now": started again at the new now
    on_worker(job)
    assert out.header.revision == a.current_revision and out.count == 3000
    assert [kv.value for kv in out.kvs if kv.key == b"k00007"] == [b"1"]

