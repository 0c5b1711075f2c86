"""Property tests: random op sequences against a reference model and between replicas.

* Every read at every revision still readable equals a plain-dict model of
  etcd's semantics (revisions, create/mod revision, version, lease).
* The same sequence applied in different batch cuts (two replicas) gives the
  same results, the same HashKV and the same reads.
* After reopening, the rebuilt key index equals the live one and the hash
  is unchanged.
"""
from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

import engine.mvcc.kvstore as kvstore
from engine.mvcc import errors
from engine.proto import rpc_pb2
from tests.mvcc.helpers import Harness, cmp, del_req, put_req, range_req, txn_req

KEYS = ["a", "ab", "b", "c", "d"]
LEASES = [1, 2, 3]

key = st.sampled_from(KEYS)
value = st.sampled_from(["", "x", "y", "zz"])
lease = st.sampled_from([0, 0, 0] + LEASES)
write = st.one_of(
    st.tuples(st.just("put"), key, value, lease),
    st.tuples(st.just("del"), key, st.sampled_from([None, "b", "c", "e", "\0"])),
)
op = st.one_of(
    write,
    write,
    st.tuples(st.just("txn"), key, value, st.lists(write, max_size=3), st.lists(write, max_size=3)),
    st.tuples(st.just("compact"), st.integers(0, 5)),
    st.tuples(st.just("grant"), st.sampled_from(LEASES)),
    st.tuples(st.just("revoke"), st.sampled_from(LEASES)),
)


def _dedupe(ops):
    """etcd refuses txns touching one key twice; keep the first write per key."""
    seen, out = set(), []
    for o in ops:
        if o[1] in seen or (o[0] == "del" and o[2] is not None):
            continue
        seen.add(o[1])
        out.append(o)
    return out


def to_request(o, model):
    kind = o[0]
    if kind == "put":
        return put_req(o[1], o[2], lease=o[3])
    if kind == "del":
        return del_req(o[1], o[2] or "")
    if kind == "txn":
        succ, fail = _dedupe(o[3]), _dedupe(o[4])
        return txn_req([cmp(o[1], "VALUE", "EQUAL", o[2])],
                       [to_request(w, model) for w in succ] + [range_req("a", "\0")],
                       [to_request(w, model) for w in fail])
    if kind == "compact":
        # between the compact revision and the current one, sometimes invalid
        return rpc_pb2.CompactionRequest(revision=max(model.compact, 0) + o[1])
    if kind == "grant":
        return rpc_pb2.LeaseGrantRequest(ID=o[1], TTL=100)
    return rpc_pb2.LeaseRevokeRequest(ID=o[1])


class Model:
    """etcd's MVCC semantics with dicts: state per revision."""

    def __init__(self) -> None:
        self.rev = 1
        self.compact = -1
        self.states = {1: {}}
        self.leases: set[int] = set()

    @property
    def now(self) -> dict:
        return self.states[self.rev]

    def _in(self, k, key, end):
        if end is None:
            return k == key
        if end == "\0":
            return k >= key
        return key <= k < end

    def _write(self, state, rev, w) -> bool:
        if w[0] == "put":
            _, k, v, l = w
            prev = state.get(k)
            state[k] = (v, prev[1] if prev else rev, rev, prev[3] + 1 if prev else 1, l)
            return True
        _, k, end = w
        gone = [x for x in state if self._in(x, k, end)]
        for x in gone:
            del state[x]
        return bool(gone)

    def _commit(self, state, changed):
        if changed:
            self.rev += 1
            self.states[self.rev] = state

    def apply(self, o):
        kind = o[0]
        if kind in ("put", "del"):
            if kind == "put" and o[3] and o[3] not in self.leases:
                return errors.LeaseNotFound
            st_ = dict(self.now)
            self._commit(st_, self._write(st_, self.rev + 1, o))
            return None
        if kind == "txn":
            cur = self.now.get(o[1])
            ok = cur is not None and cur[0] == o[2]
            ws = _dedupe(o[3] if ok else o[4])
            if any(w[0] == "put" and w[3] and w[3] not in self.leases for w in ws):
                return errors.LeaseNotFound
            st_ = dict(self.now)
            changed = False
            for w in ws:
                changed |= self._write(st_, self.rev + 1, w)
            self._commit(st_, changed)
            return None
        if kind == "compact":
            r = max(self.compact, 0) + o[1]
            if r <= self.compact:
                return errors.Compacted
            if r > self.rev:
                return errors.FutureRevision
            self.compact = r
            return None
        if kind == "grant":
            if o[1] in self.leases:
                return errors.LeaseExists
            self.leases.add(o[1])
            return None
        lid = o[1]
        if lid not in self.leases:
            return errors.LeaseNotFound
        self.leases.discard(lid)
        st_ = dict(self.now)
        gone = [k for k, v in st_.items() if v[4] == lid]
        for k in gone:
            del st_[k]
        self._commit(st_, bool(gone))
        return None


def read_all(h, rev):
    r = h.get("\0", "\0", revision=rev)
    return {kv.key.decode(): (kv.value.decode(), kv.create_revision, kv.mod_revision, kv.version, kv.lease)
            for kv in r.kvs}


def index_shape(h):
    return {hist.key: [(list(g.revs), g.created if g.revs else 0, g.ver if g.revs else 0)
                       for g in hist.generations]
            for hist in h.kv.index}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=40), cuts=st.lists(st.integers(1, 6), min_size=1, max_size=40),
       compact_rows=st.sampled_from([1, 3, 10_000]))
def test_random_sequences(ops, cuts, compact_rows):
    old = kvstore.COMPACT_ROWS_PER_BATCH
    kvstore.COMPACT_ROWS_PER_BATCH = compact_rows  # physical compaction spread over batches
    try:
        with tempfile.TemporaryDirectory() as d:
            _check(ops, cuts, d)
    finally:
        kvstore.COMPACT_ROWS_PER_BATCH = old


def _check(ops, cuts, d):
    model = Model()
    one = Harness(os.path.join(d, "one", "db"))   # one request per batch
    cut = Harness(os.path.join(d, "cut", "db"))   # random batch cuts
    reqs, want = [], []
    for o in ops:
        reqs.append(to_request(o, model))
        want.append(model.apply(o))
    got_one = [one.apply(r)[0] for r in reqs]
    got_cut, i, c = [], 0, 0
    while i < len(reqs):
        n = cuts[c % len(cuts)]
        got_cut += cut.apply(*reqs[i:i + n])
        i += n
        c += 1
    for w, g1, g2 in zip(want, got_one, got_cut):
        if w is None:
            assert not isinstance(g1, Exception), g1
        else:
            assert isinstance(g1, w), (w, g1)
        assert g1 == g2
    assert one.rev == cut.rev == model.rev
    assert one.kv.compact_rev == cut.kv.compact_rev == model.compact
    for r in range(max(model.compact, 1), model.rev + 1):
        assert read_all(one, r) == model.states[r], r
        assert read_all(cut, r) == model.states[r], r
    assert one.a.hash_kv() == cut.a.hash_kv()
    # rebuilt from disk: same index, same hash, same reads
    shape, h = index_shape(one), one.a.hash_kv()
    one.kv.finish_compaction()
    one.reopen()
    one.kv.finish_compaction()
    assert one.a.hash_kv() == h
    for r in range(max(model.compact, 1), model.rev + 1):
        assert read_all(one, r) == model.states[r], r
    assert index_shape(one) == shape
    one.close()
    cut.close()
