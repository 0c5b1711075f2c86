"""Txn semantics: compares, branches, nesting, one revision for all ops."""
from __future__ import annotations

import pytest

from engine.mvcc import errors
from tests.mvcc.helpers import Harness, cmp, del_req, kvs, put_req, range_req, txn_req


@pytest.fixture
def h(tmp_path):
    h = Harness.in_dir(tmp_path)
    h.put("foo", "bar")       # rev 2
    h.put("foo", "baz")       # rev 3, version 2, create 2
    h.put("lk", "x")          # rev 4
    yield h
    h.close()


@pytest.mark.parametrize("target, result, value, want", [
    ("VALUE", "EQUAL", "baz", True),
    ("VALUE", "NOT_EQUAL", "baz", False),
    ("VALUE", "GREATER", "bar", True),
    ("VALUE", "LESS", "bb", True),
    ("VALUE", "LESS", "baa", False),
    ("VERSION", "EQUAL", 2, True),
    ("VERSION", "GREATER", 2, False),
    ("CREATE", "EQUAL", 2, True),
    ("CREATE", "LESS", 3, True),
    ("MOD", "EQUAL", 3, True),
    ("MOD", "NOT_EQUAL", 3, False),
    ("LEASE", "EQUAL", 0, True),
    ("LEASE", "GREATER", 0, False),
])
def test_compare_targets(h, target, result, value, want):
    r = h.txn([cmp("foo", target, result, value)], [range_req("foo")], [])
    assert r.succeeded is want


def test_compare_on_missing_key(h):
    # a value compare on a missing key is always false, even against ""
    assert not h.txn([cmp("nope", "VALUE", "EQUAL", "")]).succeeded
    assert not h.txn([cmp("nope", "VALUE", "NOT_EQUAL", "x")]).succeeded
    # other targets compare against zero
    assert h.txn([cmp("nope", "VERSION", "EQUAL", 0)]).succeeded
    assert h.txn([cmp("nope", "CREATE", "LESS", 1)]).succeeded
    assert h.txn([cmp("nope", "MOD", "EQUAL", 0)]).succeeded


def test_compare_with_range_end_must_hold_for_every_key(h):
    h.put("k1", "a")
    h.put("k2", "b")
    h.put("k2", "c")
    assert h.txn([cmp("k", "VERSION", "GREATER", 0, range_end="l")]).succeeded
    assert not h.txn([cmp("k", "VERSION", "GREATER", 1, range_end="l")]).succeeded
    assert h.txn([cmp("k", "VALUE", "LESS", "d", range_end="l")]).succeeded


def test_all_ops_share_one_revision_with_increasing_subs(h):
    r = h.txn([], [put_req("a", "1"), put_req("b", "2"), del_req("lk"), range_req("a", "c")], [])
    assert r.succeeded and r.header.revision == 5
    put_a, put_b, dele, rng = r.responses
    assert put_a.response_put.header.revision == 5
    assert put_b.response_put.header.revision == 5
    assert dele.response_delete_range.deleted == 1
    assert dele.response_delete_range.header.revision == 5
    # a range inside the txn sees the txn's own writes
    assert [kv.key for kv in rng.response_range.kvs] == [b"a", b"b"]
    assert rng.response_range.header.revision == 5
    ix = h.kv.index
    assert ix.history(b"a").generations[-1].revs == [(5, 0)]
    assert ix.history(b"b").generations[-1].revs == [(5, 1)]
    assert ix.history(b"lk").generations[0].revs == [(4, 0), (5, 2)]
    assert h.rev == 5


def test_read_only_and_noop_txns_do_not_bump_revision(h):
    r = h.txn([cmp("foo", "VALUE", "EQUAL", "baz")], [range_req("foo")], [])
    assert r.succeeded and r.header.revision == 4
    r = h.txn([], [del_req("nothing"), range_req("foo")], [])
    assert r.header.revision == 4
    assert r.responses[0].response_delete_range.header.revision == 4
    assert h.rev == 4
    r = h.txn([cmp("foo", "VALUE", "EQUAL", "no")], [put_req("x", "1")], [])
    assert not r.succeeded and not r.responses and r.header.revision == 4


def test_failure_branch(h):
    r = h.txn([cmp("foo", "VALUE", "EQUAL", "no")], [put_req("s", "1")], [put_req("f", "1"), range_req("f")])
    assert not r.succeeded and r.header.revision == 5
    assert r.responses[1].response_range.kvs[0].value == b"1"
    assert h.value("s") is None and h.value("f") == b"1"


def test_nested_txn_compares_see_state_before_the_outer_txn(h):
    r = h.txn(
        [cmp("foo", "VALUE", "EQUAL", "baz")],
        [
            put_req("n1", "a"),
            txn_req([cmp("n1", "VERSION", "EQUAL", 0)],
                    [put_req("n2", "inner-success"), range_req("n1")],
                    [put_req("n2", "inner-failure")]),
            del_req("lk", prev_kv=True),
        ],
        [],
    )
    assert r.succeeded and r.header.revision == 5
    inner = r.responses[1].response_txn
    assert inner.succeeded
    assert inner.HasField("header") and inner.header.revision == 0  # etcd leaves it empty
    assert inner.responses[1].response_range.kvs[0].value == b"a"  # but its ops see n1
    assert h.value("n2") == b"inner-success"
    assert kvs(h.get("n2")) == [(b"n2", b"inner-success", 5, 5, 1, 0)]
    assert h.kv.index.history(b"lk").generations[0].revs[-1] == (5, 2)


def test_failed_txn_leaves_no_change(h):
    before = h.a.hash_kv()
    (res,) = h.apply(txn_req([], [put_req("a", "1"), put_req("b", "2", lease=99)], []))
    assert isinstance(res, errors.LeaseNotFound)
    (res,) = h.apply(txn_req([], [put_req("a", "1"), put_req("zz", ignore_value=True)], []))
    assert isinstance(res, errors.KeyNotFound)
    (res,) = h.apply(txn_req([], [put_req("a", "1"), range_req("foo", revision=99)], []))
    assert isinstance(res, errors.FutureRevision)
    assert h.rev == 4 and h.value("a") is None
    assert h.a.hash_kv() == before


def test_compacted_range_inside_txn(h):
    h.compact(3)
    (res,) = h.apply(txn_req([], [put_req("a", "1"), range_req("foo", revision=2)], []))
    assert isinstance(res, errors.Compacted)
    assert h.value("a") is None
