"""The linearizability checker (tests/support/linearizability.py) on hand-made
histories: it must accept the linearizable ones and reject each anomaly,
with a counterexample that names the operations involved."""
from __future__ import annotations

import random

import pytest

from tests.support import linearizability as lin


class H:
    """Build a history: h.op(process, f, key, value, start, end, status, **completion fields)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._id = 0

    def op(self, p, f, key, value, start, end=None, status="ok", **done):
        self._id += 1
        oid = self._id
        inv_value = None if f == "read" else value
        self.events.append(dict(id=oid, type="invoke", process=p, f=f, key=key, value=inv_value, time=start))
        if end is not None:
            self.events.append(dict(id=oid, type=status, process=p, f=f, key=key, value=value,
                                    time=end, **done))
        return oid

    def read(self, p, key, value, start, end, status="ok"):
        return self.op(p, "read", key, value, start, end, status)

    def write(self, p, key, value, start, end=None, status="ok"):
        return self.op(p, "write", key, value, start, end, status)

    def cas(self, p, key, old, new, start, end=None, status="ok", swapped=True, current=None):
        done = {}
        if end is not None and status == "ok":
            done["swapped"] = swapped
            if not swapped and current is not None:
                done["current"] = current
        return self.op(p, "cas", key, [old, new], start, end, status, **done)

    def check(self, **kw):
        self.events.sort(key=lambda e: e["time"])
        return lin.check(self.events, **kw)


def ok(h: H) -> None:
    v = h.check()
    assert v.valid is True, v.report()


def bad(h: H, key="x") -> lin.KeyVerdict:
    v = h.check()
    assert v.valid is False, v.report()
    kv = v.keys[key]
    assert kv.valid is False
    assert kv.counterexample, "a counterexample must be given"
    assert f"key {key!r}: NOT LINEARIZABLE" in kv.report
    return kv


def ids(kv: lin.KeyVerdict) -> set:
    return {o.id for o in kv.counterexample}


# ---------------------------------------------------------------- linearizable


def test_empty_and_sequential():
    ok(H())
    h = H()
    h.read(1, "x", None, 0, 1)
    h.write(1, "x", "a", 2, 3)
    h.read(2, "x", "a", 4, 5)
    h.cas(1, "x", "a", "b", 6, 7)
    h.cas(2, "x", "a", "c", 8, 9, swapped=False, current="b")
    h.read(1, "x", "b", 10, 11)
    ok(h)


def test_concurrent_overlapping_writes_either_order():
    # w(a) and w(b) overlap; reads after both may see either, but then agree.
    for final in ("a", "b"):
        h = H()
        h.write(1, "x", "a", 0, 10)
        h.write(2, "x", "b", 2, 8)
        h.read(3, "x", final, 11, 12)
        h.read(3, "x", final, 13, 14)
        ok(h)


def test_read_concurrent_with_write_sees_old_or_new():
    for seen in (None, "a"):
        h = H()
        h.write(1, "x", "a", 0, 10)
        h.read(2, "x", seen, 3, 5)
        ok(h)


def test_reads_flip_once_during_a_long_write():
    h = H()
    h.write(1, "x", "a", 0, 100)
    h.read(2, "x", None, 10, 20)
    h.read(2, "x", "a", 30, 40)
    h.read(3, "x", "a", 50, 60)
    ok(h)


def test_indeterminate_write_that_took_effect():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(2, "x", "b", 2, 5, status="info")       # timed out...
    h.read(3, "x", "b", 50, 51)                     # ...but happened, long after its timeout
    h.read(3, "x", "b", 52, 53)
    ok(h)


def test_indeterminate_write_that_did_not_take_effect():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(2, "x", "b", 2, 5, status="info")
    h.read(3, "x", "a", 50, 51)
    ok(h)


def test_indeterminate_write_without_completion_event():
    h = H()
    h.write(2, "x", "b", 0)                          # the client never heard back
    h.read(3, "x", None, 10, 11)
    h.read(3, "x", "b", 12, 13)
    ok(h)


def test_failed_write_and_failed_reads_are_ignored():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(2, "x", "zzz", 2, 3, status="fail")
    h.read(3, "x", "garbage", 4, 5, status="fail")
    h.read(3, "x", None, 6, 7, status="info")
    h.read(1, "x", "a", 8, 9)
    ok(h)


def test_indeterminate_cas_that_did_or_did_not_swap():
    for after in ("b", "a"):
        h = H()
        h.write(1, "x", "a", 0, 1)
        h.cas(2, "x", "a", "b", 2, 3, status="info")
        h.read(1, "x", after, 10, 11)
        ok(h)


def test_independent_keys():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(1, "y", "b", 2, 3)
    h.read(2, "x", "a", 4, 5)
    h.read(2, "y", "b", 4, 5)
    ok(h)


def test_many_indeterminate_writes_stay_cheap():
    # 60 timed-out writes nobody ever reads, interleaved with a steady
    # ok history: pruning keeps the search small.
    h = H()
    t = 0
    last = None
    for i in range(60):
        h.write(9, "x", f"lost{i}", t, t + 1, status="info")
        h.write(1, "x", f"v{i}", t + 2, t + 3)
        h.read(2, "x", f"v{i}", t + 4, t + 5)
        last = f"v{i}"
        t += 10
    h.read(2, "x", last, t, t + 1)
    v = h.check()
    assert v.valid is True, v.report()
    assert v.keys["x"].configurations < 10_000


def test_random_histories_from_a_real_register_are_accepted():
    # Simulate clients on an atomic register: each op takes effect at one
    # random instant within its interval; some writes become indeterminate.
    rng = random.Random(1234)
    for _ in range(30):
        h = H()
        events = []
        for p in range(4):
            t = rng.random() * 5
            for n in range(8):
                start = t
                point = start + rng.random() * 3
                end = point + rng.random() * 3
                kind = rng.choice(["read", "write", "cas"])
                events.append((point, p, n, kind, start, end))
                t = end + rng.random()
        events.sort()
        state = None
        for point, p, n, kind, start, end in events:
            status = "info" if rng.random() < 0.1 and kind != "read" else "ok"
            if kind == "read":
                h.read(p, "x", state, start, end)
            elif kind == "write":
                v = f"{p}-{n}"
                state = v
                h.write(p, "x", v, start, end, status=status)
            else:
                old = rng.choice([state, f"{rng.randrange(4)}-{rng.randrange(8)}"])
                new = f"{p}-{n}"
                if old == state and old is not None:
                    h.cas(p, "x", old, new, start, end, status=status)
                    state = new
                elif old is not None:
                    h.cas(p, "x", old, new, start, end, swapped=False, current=state)
        ok(h)


# ---------------------------------------------------------------- not linearizable


def test_stale_read_after_acknowledged_write():
    h = H()
    h.write(1, "x", "a", 0, 1)
    w = h.write(1, "x", "b", 2, 3)
    r = h.read(2, "x", "a", 4, 5)                   # "b" was acknowledged before this read began
    kv = bad(h)
    assert {w, r} <= ids(kv)
    assert "read -> 'a'" in kv.report


def test_read_of_a_value_never_written():
    h = H()
    h.write(1, "x", "a", 0, 1)
    r = h.read(2, "x", "ghost", 2, 3)
    kv = bad(h)
    assert ids(kv) == {r}


def test_lost_acknowledged_write():
    h = H()
    h.write(1, "x", "a", 0, 1)
    w = h.write(2, "x", "b", 2, 3)                   # acknowledged
    h.read(3, "x", "a", 10, 11)                      # ...and gone
    kv = bad(h)
    assert w in ids(kv)


def test_cas_succeeded_against_the_wrong_value():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(1, "x", "b", 2, 3)
    c = h.cas(2, "x", "a", "c", 4, 5)                # the register held "b"
    kv = bad(h)
    assert c in ids(kv)


def test_cas_that_claims_failure_while_the_value_matched():
    h = H()
    h.write(1, "x", "a", 0, 1)
    c = h.cas(2, "x", "a", "c", 2, 3, swapped=False, current="a")
    kv = bad(h)
    assert c in ids(kv)


def test_indeterminate_write_cannot_precede_its_invocation():
    h = H()
    h.read(1, "x", "b", 0, 1)                        # sees "b" ...
    h.write(2, "x", "b", 5, 6, status="info")        # ... before anyone asked to write it
    bad(h)


def test_value_reappearing_after_being_overwritten():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.read(2, "x", "a", 2, 3)
    h.write(1, "x", "b", 4, 5)
    h.read(2, "x", "b", 6, 7)
    h.read(3, "x", "a", 8, 9)                        # "a" cannot come back
    bad(h)


def test_two_readers_disagree_on_order_of_concurrent_writes():
    # w(a) and w(b) overlap; one reader then sees a then b, the other b then a.
    h = H()
    h.write(1, "x", "a", 0, 10)
    h.write(2, "x", "b", 0, 10)
    h.read(3, "x", "a", 11, 12)
    h.read(3, "x", "b", 13, 14)
    h.read(4, "x", "b", 15, 16)
    h.read(4, "x", "a", 17, 18)
    bad(h)


def test_counterexample_is_cut_down_to_the_relevant_operations():
    # A long healthy history, then a stale read on one key among others.
    h = H()
    t = 0
    for i in range(50):
        for key in ("x", "y"):
            h.write(1, key, f"{key}{i}", t, t + 1)
            h.read(2, key, f"{key}{i}", t + 2, t + 3)
            t += 4
    w = h.write(1, "x", "final", t, t + 1)
    r = h.read(2, "x", "x49", t + 2, t + 3)
    h.read(3, "y", "y49", t + 4, t + 5)
    v = h.check()
    assert v.valid is False
    assert v.keys["y"].valid is True
    kv = v.keys["x"]
    assert {w, r} <= ids(kv) and len(kv.counterexample) <= 3, kv.report
    assert "cannot be placed" in kv.report


def test_reports_say_which_key_and_give_a_timeline():
    h = H()
    h.write(1, "k1", "a", 0, 1_000_000)
    h.read(2, "k1", None, 2_000_000, 3_000_000)
    v = h.check()
    text = v.report()
    assert "key 'k1': NOT LINEARIZABLE" in text
    assert "#1 p1 write 'a'" in text and "#2 p2 read -> None" in text
    assert "ms" in text


def test_history_round_trip(tmp_path):
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.cas(2, "x", "a", "b", 2, 3)
    h.read(3, "x", "b", 4, 5)
    p = tmp_path / "h.jsonl"
    lin.dump_history(h.events, p)
    assert lin.check(lin.load_history(p)).valid is True


@pytest.mark.parametrize("bad_event", [
    dict(id=1, type="ok", process=1, f="read", key="x", value=None, time=0),   # completed, never invoked
])
def test_malformed_histories_are_refused(bad_event):
    with pytest.raises(ValueError):
        lin.check([bad_event])
