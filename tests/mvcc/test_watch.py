"""Watch hub: synced fan-out, catch-up from history, victims, compaction, filters."""
from __future__ import annotations

import random

import pytest

from engine.proto import kv_pb2, rpc_pb2
from tests.mvcc.helpers import Harness, del_req, put_req, txn_req

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE
NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


@pytest.fixture
def h(tmp_path):
    h = Harness.in_dir(tmp_path, watch_buffer_events=1024)
    yield h
    h.close()


def ev(e) -> tuple:
    return ("P" if e.type == PUT else "D", e.kv.key.decode(), e.kv.mod_revision, e.kv.value.decode())


def drain_all(hub, w, max_events=1000, rounds=1000) -> list:
    out = [ev(e) for e in w.take_events()]
    for _ in range(rounds):
        if w.synced:
            break
        hub.sync_unsynced(max_events=max_events)
        out += [ev(e) for e in w.take_events()]
    assert w.synced
    return out


def test_synced_watcher_gets_a_revision_together(h):
    hub = h.a.hub
    calls = []
    w = hub.watch(b"p/", b"p0", notify=calls.append)
    assert w.synced
    h.txn([], [put_req("p/a", "1"), put_req("x", "no"), put_req("p/b", "2"), del_req("p/a")], [])
    assert calls == [w]
    assert [ev(e) for e in w.take_events()] == [("P", "p/a", 2, "1"), ("P", "p/b", 2, "2"), ("D", "p/a", 2, "")]
    assert w.revision == 2
    assert w.take_events() == []
    h.put("x", "1")  # not matching: no call
    assert calls == [w]


def test_single_key_and_from_key_watchers(h):
    hub = h.a.hub
    one = hub.watch(b"k")
    frm = hub.watch(b"m", b"\0")
    for k in ["a", "k", "ka", "m", "z"]:
        h.put(k, "v")
    assert [e.kv.key for e in one.take_events()] == [b"k"]
    assert [e.kv.key for e in frm.take_events()] == [b"m", b"z"]


def test_future_start_revision_waits(h):
    hub = h.a.hub
    w = hub.watch(b"k", start_revision=4)
    for i in range(4):
        h.put("k", str(i))
    assert [ev(e)[2] for e in w.take_events()] == [4, 5]


def test_catch_up_in_batches_then_live_without_gaps(h):
    hub = h.a.hub
    rnd = random.Random(7)
    expected = []
    for i in range(200):
        k = f"p/{rnd.randrange(10)}"
        if rnd.random() < 0.2:
            r = h.delete(k)
            if r.deleted:
                expected.append(("D", k, h.rev, ""))
        else:
            h.put(k, str(i))
            expected.append(("P", k, h.rev, str(i)))
        h.put("other", str(i))
    w = hub.watch(b"p/", b"p0", start_revision=2)
    assert not w.synced and hub.unsynced_count == 1
    got = []
    rounds = 0
    while not w.synced:
        n = hub.sync_unsynced(max_events=25)
        assert n <= 25 + 10  # bounded (plus the rest of the last revision)
        got += [ev(e) for e in w.take_events()]
        # writes keep landing while the watcher catches up
        h.put(f"p/{rounds % 10}", f"live{rounds}")
        expected.append(("P", f"p/{rounds % 10}", h.rev, f"live{rounds}"))
        rounds += 1
    assert rounds > 5
    got += [ev(e) for e in w.take_events()]
    for i in range(5):
        h.put("p/x", f"after{i}")
        expected.append(("P", "p/x", h.rev, f"after{i}"))
    got += [ev(e) for e in w.take_events()]
    assert got == expected


def test_events_of_a_revision_stay_together_in_catch_up(h):
    hub = h.a.hub
    h.txn([], [put_req(f"t/{i}", str(i)) for i in range(30)], [])
    h.put("t/z", "z")
    w = hub.watch(b"t/", b"t0", start_revision=1)
    hub.sync_unsynced(max_events=5)
    first = w.take_events()
    assert len(first) == 30 and {e.kv.mod_revision for e in first} == {2}
    assert w.revision == 2
    hub.sync_unsynced(max_events=5)
    assert [e.kv.key for e in w.take_events()] == [b"t/z"]
    assert w.synced


def test_compacted_start_revision(h):
    hub = h.a.hub
    for i in range(5):
        h.put("k", str(i))
    w0 = hub.watch(b"k", start_revision=2)  # unsynced, not yet caught up
    h.compact(4)
    calls = []
    w = hub.watch(b"k", start_revision=3, notify=calls.append)
    assert w.canceled and w.compact_revision == 4 and calls == [w]
    hub.sync_unsynced()
    assert w0.canceled and w0.compact_revision == 4
    assert hub.get(w0.id) is None
    # at the compact revision itself is still fine
    ok = hub.watch(b"k", start_revision=4)
    assert drain_all(hub, ok) == [("P", "k", 4, "2"), ("P", "k", 5, "3"), ("P", "k", 6, "4")]


def test_filters(h):
    hub = h.a.hub
    noput = hub.watch(b"k", filters=[NOPUT])
    nodel = hub.watch(b"k", filters=[NODELETE])
    old_noput = hub.watch(b"k", start_revision=1, filters=[NOPUT])
    h.put("k", "1")
    h.delete("k")
    h.put("k", "2")
    assert [ev(e) for e in noput.take_events()] == [("D", "k", 3, "")]
    assert [ev(e) for e in nodel.take_events()] == [("P", "k", 2, "1"), ("P", "k", 4, "2")]
    assert drain_all(hub, old_noput) == [("D", "k", 3, "")]


def test_prev_kv(h):
    hub = h.a.hub
    w = hub.watch(b"k", prev_kv=True)
    h.put("k", "1")
    h.put("k", "2")
    h.delete("k")
    evs = w.take_events()
    assert not evs[0].HasField("prev_kv")  # a create has none
    assert evs[1].prev_kv.value == b"1" and evs[2].prev_kv.value == b"2"
    old = hub.watch(b"k", start_revision=2, prev_kv=True)
    hub.sync_unsynced()
    evs = old.take_events()
    assert [e.prev_kv.value for e in evs] == [b"", b"1", b"2"]


def test_slow_watcher_becomes_victim_and_catches_up_without_loss(tmp_path):
    h = Harness.in_dir(tmp_path, watch_buffer_events=8)
    hub = h.a.hub
    slow = hub.watch(b"s/", b"s0")
    fast = hub.watch(b"s/", b"s0")
    expected = []
    fast_got = []
    for i in range(50):
        h.put(f"s/{i % 4}", str(i))
        expected.append(("P", f"s/{i % 4}", h.rev, str(i)))
        fast_got += [ev(e) for e in fast.take_events()]
    assert fast_got == expected and fast.synced
    assert not slow.synced  # its buffer filled up: moved to the unsynced group
    got = [ev(e) for e in slow.take_events()]
    assert len(got) == 8
    # buffer full -> sync_unsynced cannot feed it until it drains
    while not slow.synced:
        hub.sync_unsynced(max_events=5)
        got += [ev(e) for e in slow.take_events()]
        h.put("s/live", "x")
        expected.append(("P", "s/live", h.rev, "x"))
    got += [ev(e) for e in slow.take_events()]
    assert got == expected
    h.close()


def test_a_huge_revision_still_gets_through_an_empty_buffer(tmp_path):
    h = Harness.in_dir(tmp_path, watch_buffer_events=4)
    w = h.a.hub.watch(b"b/", b"b0")
    h.txn([], [put_req(f"b/{i}", "x") for i in range(20)], [])
    assert w.synced and len(w.take_events()) == 20
    h.close()


def test_progress_and_stats(h):
    hub = h.a.hub
    w = hub.watch(b"k")
    h.put("k", "1")
    assert hub.request_progress(w.id) is None  # events not taken yet
    w.take_events()
    h.put("other", "1")
    assert hub.request_progress(w.id) == 3
    old = hub.watch(b"k", start_revision=1)
    assert hub.request_progress(old.id) is None
    stats = {s.id: s for s in hub.stats()}
    assert stats[w.id].synced and stats[w.id].events_sent == 1 and stats[w.id].key == b"k"
    assert not stats[old.id].synced and stats[old.id].start_revision == 1
    assert hub.cancel(w.id) and not hub.cancel(w.id)
    h.put("k", "2")
    assert w.take_events() == [] and w.canceled


def test_watchers_survive_snapshot_restore(tmp_path):
    a = Harness.in_dir(tmp_path / "a")
    b = Harness.in_dir(tmp_path / "b")
    for i in range(5):
        a.put("k", str(i))
    b.put("k", "early")
    w = b.a.hub.watch(b"k")
    assert w.synced
    b.restore(a.a.snapshot_bytes())
    assert not w.synced
    a.put("k", "5")
    b.restore(a.a.snapshot_bytes())
    # it had seen up to revision 2 of the old store; the new history from 3 on
    assert drain_all(b.a.hub, w) == [("P", "k", 3, "1"), ("P", "k", 4, "2"), ("P", "k", 5, "3"),
                                     ("P", "k", 6, "4"), ("P", "k", 7, "5")]
    a.close()
    b.close()


def test_fan_out_to_many_watchers(h):
    hub = h.a.hub
    ws = [hub.watch(b"f/", b"f0") for _ in range(200)] + [hub.watch(b"f/1") for _ in range(50)]
    h.apply(*[put_req(f"f/{i}", "v") for i in range(10)])
    assert all(len(w.take_events()) == 10 for w in ws[:200])
    assert all([e.kv.key for e in w.take_events()] == [b"f/1"] for w in ws[200:])


def test_empty_range_is_refused(h):
    with pytest.raises(ValueError):
        h.a.hub.watch(b"b", b"a")


def test_victim_in_the_middle_of_a_batch(tmp_path):
    h = Harness.in_dir(tmp_path, watch_buffer_events=8)
    hub = h.a.hub
    w = hub.watch(b"m/", b"m0")
    plain = hub.watch(b"m/", b"m0")
    expected = []
    for b in range(6):
        reqs = [put_req(f"m/{b}{i}", str(i)) for i in range(5)]
        h.apply(*reqs)
        expected += [("P", f"m/{b}{i}", h.rev - 4 + i, str(i)) for i in range(5)]
        assert [ev(e) for e in plain.take_events()] == expected[-5:]
    # w took 5, then 3 of the second batch fit (8), then it became a victim
    got = [ev(e) for e in w.take_events()]
    assert got == expected[:8] and not w.synced
    got += drain_all(hub, w, max_events=4)
    assert got == expected
    h.close()
