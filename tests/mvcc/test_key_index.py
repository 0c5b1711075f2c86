"""The key index and the revision encoding, after etcd's key_index_test.go."""
from __future__ import annotations

import pytest

from engine.mvcc.key_index import KeyHistory, TreeIndex
from engine.mvcc.revision import (
    Revision, bytes_to_rev, is_tombstone, rev_to_bytes, tombstone_to_bytes,
)


def test_revision_bytes_sort_like_revisions():
    revs = [(1, 0), (1, 1), (2, 0), (255, 3), (256, 0), (2**40, 7), (2**40, 2**33)]
    enc = [rev_to_bytes(*r) for r in revs]
    assert sorted(enc) == enc
    assert [bytes_to_rev(b) for b in enc] == [Revision(*r) for r in revs]
    assert len(enc[0]) == 17 and enc[0][8:9] == b"_"
    t = tombstone_to_bytes(5, 1)
    assert is_tombstone(t) and not is_tombstone(rev_to_bytes(5, 1))
    assert bytes_to_rev(t) == Revision(5, 1)
    # a tombstone sorts between its own revision and the next sub revision
    assert rev_to_bytes(5, 1) < t < rev_to_bytes(5, 2)


def history() -> KeyHistory:
    """foo: put 2, 4, 6(t); put 8, 10, 12(t); put 14, 14.1, 16 (etcd's example)."""
    h = KeyHistory(b"foo")
    h.put(2, 0)
    h.put(4, 0)
    h.tombstone(6, 0)
    h.put(8, 0)
    h.put(10, 0)
    h.tombstone(12, 0)
    h.put(14, 0)
    h.put(14, 1)
    h.tombstone(16, 0)
    return h


@pytest.mark.parametrize("at, want", [
    (1, None), (2, ((2, 0), 2, 1)), (3, ((2, 0), 2, 1)), (4, ((4, 0), 2, 2)), (5, ((4, 0), 2, 2)),
    (6, None), (7, None), (8, ((8, 0), 8, 1)), (11, ((10, 0), 8, 2)), (12, None), (13, None),
    (14, ((14, 1), 14, 2)), (15, ((14, 1), 14, 2)), (16, None), (17, None),
])
def test_get_at_revision(at, want):
    assert history().get(at) == want


def test_put_must_ascend_and_tombstone_needs_live_key():
    h = KeyHistory(b"k")
    with pytest.raises(KeyError):
        h.tombstone(1, 0)
    h.put(3, 0)
    with pytest.raises(AssertionError):
        h.put(2, 0)
    h.tombstone(4, 0)
    with pytest.raises(KeyError):
        h.tombstone(5, 0)


def gens(h: KeyHistory) -> list[list[tuple[int, int]]]:
    return [list(g.revs) for g in h.generations]


@pytest.mark.parametrize("at, want_gens, want_avail", [
    (1, [[(2, 0), (4, 0), (6, 0)], [(8, 0), (10, 0), (12, 0)], [(14, 0), (14, 1), (16, 0)], []], set()),
    (2, [[(2, 0), (4, 0), (6, 0)], [(8, 0), (10, 0), (12, 0)], [(14, 0), (14, 1), (16, 0)], []], {(2, 0)}),
    (5, [[(4, 0), (6, 0)], [(8, 0), (10, 0), (12, 0)], [(14, 0), (14, 1), (16, 0)], []], {(4, 0)}),
    (6, [[(8, 0), (10, 0), (12, 0)], [(14, 0), (14, 1), (16, 0)], []], set()),
    (9, [[(8, 0), (10, 0), (12, 0)], [(14, 0), (14, 1), (16, 0)], []], {(8, 0)}),
    (12, [[(14, 0), (14, 1), (16, 0)], []], set()),
    (14, [[(14, 1), (16, 0)], []], {(14, 1)}),
    (16, [[]], set()),
    (17, [[]], set()),
])
def test_compact(at, want_gens, want_avail):
    h = history()
    avail: set = set()
    h.compact(at, avail)
    assert gens(h) == want_gens
    assert avail == want_avail
    kept: set = set()
    history().keep(at, kept)
    assert kept == want_avail
    # reads at or after the compact revision are unchanged
    for r in range(at, 18):
        assert h.get(r) == history().get(r)


def test_compaction_keeps_versions_and_create_revision():
    h = KeyHistory(b"k")
    for r in range(2, 10):
        h.put(r, 0)
    h.compact(7, set())
    assert h.get(7) == ((7, 0), 2, 6)
    assert h.get(9) == ((9, 0), 2, 8)


def test_index_ranges():
    ix = TreeIndex()
    for i, k in enumerate([b"a", b"b", b"ba", b"c", b"d"]):
        ix.put(k, 2 + i, 0)
    ix.tombstone(b"c", 7, 0)
    keys = lambda key, end, at=10: [k for k, _ in ix.revisions(key, end, at)[0]]
    assert keys(b"b", None) == [b"b"]
    assert keys(b"b", b"c") == [b"b", b"ba"]
    assert keys(b"b", b"") == [b"b", b"ba", b"d"]
    assert keys(b"b", b"", 6) == [b"b", b"ba", b"c", b"d"]
    assert keys(b"c", b"b") == []
    assert keys(b"zz", None) == []
    assert ix.revisions(b"", b"", 10)[1] == 4
    assert ix.revisions(b"", b"", 6)[1] == 5
    assert ix.revisions(b"", b"", 10, limit=2) == ([(b"a", (2, 0)), (b"b", (3, 0))], 4)
    assert ix.revisions(b"", b"", 6, limit=2) == ([(b"a", (2, 0)), (b"b", (3, 0))], 5)
    avail = ix.compact(8)
    assert ix.history(b"c") is None
    assert avail == {(2, 0), (3, 0), (4, 0), (6, 0)}
