"""The key index compacted a slice of keys per batch (COMPACT_KEYS_PER_STEP)
gives exactly what compacting it at once gave: the property test's random
sequences, with one key per step so every compaction spans many batches with
writes, reads, other compactions and hashes in between."""
from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

import engine.mvcc.kvstore as kvstore
from tests.mvcc.helpers import Harness
from tests.mvcc.test_property import Model, index_shape, op, read_all, to_request


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=40), cuts=st.lists(st.integers(1, 6), min_size=1, max_size=40),
       keys_per_step=st.sampled_from([1, 2]))
def test_stepwise_index_compaction_is_invisible(ops, cuts, keys_per_step):
    old = kvstore.COMPACT_KEYS_PER_STEP
    kvstore.COMPACT_KEYS_PER_STEP = keys_per_step
    try:
        with tempfile.TemporaryDirectory() as d:
            _check(ops, cuts, d)
    finally:
        kvstore.COMPACT_KEYS_PER_STEP = old


def _check(ops, cuts, d):
    model = Model()
    step = Harness(os.path.join(d, "step", "db"))
    reqs, want = [], []
    for o in ops:
        reqs.append(to_request(o, model))
        want.append(model.apply(o))
    got, i, c = [], 0, 0
    while i < len(reqs):
        n = cuts[c % len(cuts)]
        got += step.apply(*reqs[i:i + n])
        i += n
        c += 1
        # Reads and a hash between the steps of a compaction.
        for r in range(max(step.kv.compact_rev, 1), step.rev + 1):
            read_all(step, r)
        step.a.hash_kv()
    for w, g in zip(want, got):
        if w is None:
            assert not isinstance(g, Exception), g
        else:
            assert isinstance(g, w), (w, g)
    assert step.rev == model.rev and step.kv.compact_rev == model.compact
    for r in range(max(model.compact, 1), model.rev + 1):
        assert read_all(step, r) == model.states[r], r
    h = step.a.hash_kv()
    step.kv.finish_compaction()
    assert step.a.hash_kv() == h
    shape = index_shape(step)
    step.reopen()
    step.kv.finish_compaction()
    assert index_shape(step) == shape and step.a.hash_kv() == h
    for r in range(max(model.compact, 1), model.rev + 1):
        assert read_all(step, r) == model.states[r], r
    step.close()
