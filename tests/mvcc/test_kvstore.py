"""KV semantics, with the numbers real etcd 3.4 gives for the same sequences.

(test_vs_etcd.py checks these against a live etcd when one is installed;
these tests pin the same behaviour without it.)
"""
from __future__ import annotations

import pytest

from engine.mvcc import errors
from engine.proto import rpc_pb2
from tests.mvcc.helpers import RR, Harness, kvs, range_req


@pytest.fixture
def h(tmp_path):
    h = Harness.in_dir(tmp_path)
    yield h
    h.close()


def test_fresh_store_is_at_revision_1(h):
    r = h.get("anything")
    assert r.header.revision == 1 and r.count == 0 and not r.kvs


def test_generations_versions_create_and_mod_revisions(h):
    assert h.put("foo", "v1").header.revision == 2
    r = h.put("foo", "v2", prev_kv=True)
    assert r.header.revision == 3
    assert (r.prev_kv.value, r.prev_kv.version, r.prev_kv.mod_revision) == (b"v1", 1, 2)
    assert kvs(h.get("foo")) == [(b"foo", b"v2", 2, 3, 2, 0)]
    d = h.delete("foo", prev_kv=True)
    assert d.deleted == 1 and d.header.revision == 4
    assert [kv.value for kv in d.prev_kvs] == [b"v2"]
    # deleting nothing does not advance the revision
    d = h.delete("foo", prev_kv=True)
    assert d.deleted == 0 and d.header.revision == 4 and not d.prev_kvs
    assert h.rev == 4
    # recreate: a new generation, version 1 again, new create_revision
    r = h.put("foo", "v3", prev_kv=True)
    assert r.header.revision == 5 and not r.HasField("prev_kv")
    assert kvs(h.get("foo")) == [(b"foo", b"v3", 5, 5, 1, 0)]
    # history
    assert h.value("foo", 1) is None
    assert h.value("foo", 2) == b"v1"
    assert h.value("foo", 3) == b"v2"
    assert h.value("foo", 4) is None
    assert h.value("foo", 5) == b"v3"
    assert h.get("foo", revision=3).header.revision == 5  # header = current revision
    with pytest.raises(errors.FutureRevision):
        h.get("foo", revision=6)


def test_ignore_value_and_ignore_lease(h):
    with pytest.raises(errors.KeyNotFound):
        h.put("k", ignore_value=True)
    with pytest.raises(errors.KeyNotFound):
        h.put("k", ignore_lease=True)
    assert h.rev == 1
    h.put("k", "v")
    r = h.put("k", ignore_value=True, prev_kv=True)
    assert r.prev_kv.value == b"v"
    assert kvs(h.get("k")) == [(b"k", b"v", 2, 3, 2, 0)]


@pytest.fixture
def ks(h):
    """k1..k5 with versions 1,2,3,1,2 and values z0, y1, x2, w0, v1 (revisions 2..10)."""
    for i, k in enumerate(["k1", "k2", "k3", "k4", "k5"]):
        for j in range(i % 3 + 1):
            h.put(k, f"{'zyxwv'[i]}{j}")
    assert h.rev == 10
    return h


def keys(resp) -> list[bytes]:
    return [kv.key for kv in resp.kvs]


def test_range_limit_more_count(ks):
    r = ks.get("k", "l", limit=2)
    assert keys(r) == [b"k1", b"k2"] and r.more and r.count == 5
    r = ks.get("k", "l", limit=5)
    assert len(r.kvs) == 5 and not r.more and r.count == 5
    r = ks.get("k", "l", count_only=True)
    assert not r.kvs and r.count == 5 and not r.more
    r = ks.get("k", "l", keys_only=True, limit=1)
    assert keys(r) == [b"k1"] and r.kvs[0].value == b"" and r.kvs[0].version == 1 and r.more


def test_range_prefix_from_key_and_all(ks):
    ks.put("kz", "x")
    ks.put("l", "x")
    assert keys(ks.get("k", "l")) == [b"k1", b"k2", b"k3", b"k4", b"k5", b"kz"]
    assert keys(ks.get("k3", "\0")) == [b"k3", b"k4", b"k5", b"kz", b"l"]
    assert ks.get("\0", "\0", count_only=True).count == 7
    assert keys(ks.get("k3", "k1")) == []


@pytest.mark.parametrize("order, target, limit, want", [
    (RR.NONE, RR.KEY, 0, ["k1", "k2", "k3", "k4", "k5"]),
    (RR.DESCEND, RR.KEY, 2, ["k5", "k4"]),
    (RR.ASCEND, RR.VERSION, 0, ["k1", "k4", "k2", "k5", "k3"]),
    (RR.DESCEND, RR.VERSION, 0, ["k3", "k2", "k5", "k1", "k4"]),
    (RR.ASCEND, RR.VALUE, 2, ["k5", "k4"]),
    (RR.DESCEND, RR.MOD, 1, ["k5"]),
    (RR.ASCEND, RR.CREATE, 3, ["k1", "k2", "k3"]),
    # etcd quirk: a target without an order sorts only the first limit+1 keys
    (RR.NONE, RR.VALUE, 2, ["k3", "k2"]),
    (RR.NONE, RR.VERSION, 2, ["k1", "k2"]),
])
def test_range_sort(ks, order, target, limit, want):
    r = ks.get("k", "l", sort_order=order, sort_target=target, limit=limit)
    assert keys(r) == [k.encode() for k in want]
    assert r.count == 5
    assert r.more == (0 < limit < 5)


def test_range_min_max_revisions(ks):
    # mod revisions: k1 2, k2 4, k3 7, k4 8, k5 10; create: 2, 3, 5, 8, 9
    assert keys(ks.get("k", "l", min_mod_revision=7)) == [b"k3", b"k4", b"k5"]
    r = ks.get("k", "l", max_mod_revision=7, limit=1)
    assert keys(r) == [b"k1"] and r.more and r.count == 5
    assert keys(ks.get("k", "l", min_create_revision=3, max_create_revision=8)) == [b"k2", b"k3", b"k4"]


def test_range_at_old_revision_sees_old_keys(ks):
    ks.delete("k", "l")
    assert ks.rev == 11
    assert ks.get("k", "l").count == 0
    r = ks.get("k", "l", revision=8)
    assert keys(r) == [b"k1", b"k2", b"k3", b"k4"] and r.header.revision == 11
    assert [kv.value for kv in r.kvs] == [b"z0", b"y1", b"x2", b"w0"]


def test_delete_range_one_revision_many_subs(ks):
    d = ks.delete("k2", "k5", prev_kv=True)
    assert d.deleted == 3 and d.header.revision == 11
    assert [kv.key for kv in d.prev_kvs] == [b"k2", b"k3", b"k4"]
    # all three tombstones at revision 11, sub 0..2
    assert [list(g.revs) for g in ks.kv.index.history(b"k4").generations] == [[(8, 0), (11, 2)], []]


def test_compaction_errors_and_reads(ks):
    ks.compact(5)
    assert ks.kv.compact_rev == 5
    with pytest.raises(errors.Compacted):
        ks.get("k1", revision=4)
    assert ks.value("k2", 5) == b"y1"  # reading at the compact revision works
    assert ks.value("k3", 6) == b"x1"
    with pytest.raises(errors.Compacted):
        ks.compact(5)
    with pytest.raises(errors.Compacted):
        ks.compact(3)
    with pytest.raises(errors.FutureRevision):
        ks.compact(11)
    r = ks.compact(10)
    assert r.header.revision == 10
    assert ks.rev == 10  # compaction does not bump the revision


def test_physical_compaction_removes_old_rows_and_tombstones(h):
    for i in range(10):
        h.put("a", str(i))
    h.put("b", "1")
    h.delete("b")
    h.put("c", "1")
    before = h.a.backend.row_count()
    assert before == 13
    h.compact(h.rev)
    # kept: the latest a and c; b's generation ended in a tombstone: gone
    assert h.a.backend.row_count() == 2
    assert h.kv.index.history(b"b") is None
    assert h.value("a") == b"9" and h.value("c") == b"1"
    h.reopen()
    assert h.value("a") == b"9" and h.value("c") == b"1"
    assert h.kv.compact_rev == h.rev == 14


def test_hash_kv_same_before_and_after_physical_compaction(tmp_path):
    import engine.mvcc.kvstore as kvstore
    hs = [Harness.in_dir(tmp_path / "one"), Harness.in_dir(tmp_path / "two")]
    for h in hs:
        for i in range(50):
            h.put(f"k{i % 7}", str(i))
            if i % 5 == 0:
                h.delete(f"k{i % 3}")
    old = kvstore.COMPACT_ROWS_PER_BATCH
    kvstore.COMPACT_ROWS_PER_BATCH = 5
    try:
        hs[0].compact(30)
        hs[1].compact(30)
        assert hs[0].kv.compaction_pending
        hs[1].kv.finish_compaction()
        assert not hs[1].kv.compaction_pending
        assert hs[0].a.backend.row_count() > hs[1].a.backend.row_count()
        assert hs[0].a.hash_kv() == hs[1].a.hash_kv()
        assert hs[0].a.hash_kv(40) == hs[1].a.hash_kv(40)
        # a restart in the middle of a physical compaction resumes it
        hs[0].reopen()
        assert hs[0].kv.compaction_pending
        hs[0].kv.finish_compaction()
        assert hs[0].a.backend.row_count() == hs[1].a.backend.row_count()
        assert hs[0].a.hash_kv() == hs[1].a.hash_kv()
    finally:
        kvstore.COMPACT_ROWS_PER_BATCH = old
    r = hs[0].a.hash_kv()
    assert r.compact_revision == 30 and r.header.revision == hs[0].rev
    with pytest.raises(errors.Compacted):
        hs[0].a.hash_kv(30)
    with pytest.raises(errors.FutureRevision):
        hs[0].a.hash_kv(hs[0].rev + 1)
    for h in hs:
        h.close()


def test_hash_kv_depends_on_content(tmp_path):
    a, b = Harness.in_dir(tmp_path / "a"), Harness.in_dir(tmp_path / "b")
    a.put("k", "1")
    b.put("k", "2")
    assert a.a.hash_kv().hash != b.a.hash_kv().hash
    assert a.a.hash_kv().compact_revision == -1


def test_range_through_the_log_is_a_read(h):
    h.put("x", "1")
    (r,) = h.apply(range_req("x"))
    assert isinstance(r, rpc_pb2.RangeResponse) and r.kvs[0].value == b"1"
    assert h.rev == 2


def test_compact_step_finishes_a_physical_compaction_when_idle(tmp_path, monkeypatch):
    import engine.mvcc.kvstore as kvstore
    monkeypatch.setattr(kvstore, "COMPACT_ROWS_PER_BATCH", 4)
    h = Harness.in_dir(tmp_path)
    for i in range(20):
        h.put("k", str(i))
    h.compact(h.rev)
    steps = 1
    while not h.a.compact_step():
        steps += 1
    assert steps > 3 and h.a.backend.row_count() == 1
    assert h.a.backend.get_meta("finished_compact_rev") == h.rev
    h.close()
