"""Merged key-range permissions against a model of etcd's interval tree.

The model is etcd's pkg/adt algorithm written out plainly: the tree's
Visit yields the stored intervals overlapping the query in begin order,
``Contains`` walks them checking they are contiguous and span the query,
``Intersects`` asks for any overlap. Keys come from a tiny alphabet so that
touching, nested and "from key" ranges are common.
"""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from engine.auth.rangeperm import IntervalSet, UnifiedPerms, perm_interval
from engine.proto import auth_pb2

P = auth_pb2.Permission


def _cmp(a: bytes, b: bytes) -> int:
    # etcd's BytesAffineComparable: the empty key sorts after everything.
    if not a:
        return 0 if not b else 1
    if not b:
        return -1
    return (a > b) - (a < b)


def _overlaps(q, x) -> bool:
    # adt.Interval.Compare == 0
    qb, qe = q
    xb, xe = x
    if _cmp(qb, xb) < 0 and _cmp(qe, xb) <= 0:
        return False
    if _cmp(qb, xe) >= 0:
        return False
    return True


def _sort_key(iv):
    b = iv[0]
    return (1, b"") if not b else (0, b)


def model_contains(ivs, q) -> bool:
    visited = sorted((x for x in ivs if _overlaps(q, x)), key=_sort_key)
    if not visited:
        return False
    min_begin, max_end = visited[0]
    for b, e in visited[1:]:
        if _cmp(max_end, b) < 0:
            return False
        if _cmp(e, max_end) > 0:
            max_end = e
    return _cmp(max_end, q[1]) >= 0 and _cmp(min_begin, q[0]) <= 0


def model_intersects(ivs, key: bytes) -> bool:
    return any(_overlaps((key, key + b"\x00"), x) for x in ivs)


keys = st.text(alphabet="ab\x00", max_size=3).map(str.encode)
ends = st.one_of(st.just(b""), st.just(b"\x00"), keys)
perms = st.lists(st.tuples(st.sampled_from([P.READ, P.WRITE, P.READWRITE]), keys.filter(bool), ends),
                 max_size=6)


def _model_intervals(ps, write: bool):
    out = []
    for typ, k, e in ps:
        if typ == P.READWRITE or typ == (P.WRITE if write else P.READ):
            iv = perm_interval(k, e)
            if iv is not None:
                out.append((iv[0], iv[1] or b""))
    return out


@settings(max_examples=200, deadline=None)
@given(perms, keys.filter(bool), ends, st.booleans())
def test_merged_sets_answer_as_etcds_tree(ps, key, range_end, write):
    u = UnifiedPerms(P(permType=t, key=k, range_end=e) for t, k, e in ps)
    ivs = _model_intervals(ps, write)
    if not range_end:
        want = model_intersects(ivs, key)
    else:
        want = model_contains(ivs, (key, b"" if range_end == b"\x00" else range_end))
    assert u.permitted(key, range_end, write) == want


def test_runs_merge_touching_and_overlapping():
    s = IntervalSet([(b"a", b"c"), (b"c", b"e"), (b"b", b"d"), (b"x", None), (b"y", b"z")])
    assert s.runs() == [(b"a", b"e"), (b"x", None)]
    assert s.covers(b"a", b"e") and not s.covers(b"a", b"f")
    assert s.covers(b"x", None) and s.contains_key(b"zzzz")
    assert not s.contains_key(b"e") and s.contains_key(b"d\xff")


def test_prefix_and_point_permissions():
    u = UnifiedPerms([P(permType=P.READ, key=b"foo"), P(permType=P.READ, key=b"dir/", range_end=b"dir0")])
    assert u.permitted(b"foo", b"", False)
    assert u.permitted(b"foo", b"foo\x00", False)  # the range holding foo alone
    assert not u.permitted(b"foo0", b"", False)
    assert not u.permitted(b"foo", b"", True)
    assert u.permitted(b"dir/x", b"dir/y", False)
    assert not u.permitted(b"dir/", b"\x00", False)  # from key: runs past the prefix
