"""Leases with an injected clock: grant, attach, expiry on the primary, revoke."""
from __future__ import annotations

import pytest

from engine.mvcc import errors
from engine.mvcc.lease import EXPIRED_RETRY_INTERVAL
from engine.proto import internal_pb2, rpc_pb2
from tests.mvcc.helpers import Clock, Harness, del_req, put_req

Grant = rpc_pb2.LeaseGrantRequest
Revoke = rpc_pb2.LeaseRevokeRequest


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def h(tmp_path, clock):
    h = Harness.in_dir(tmp_path, clock=clock, min_lease_ttl=5)
    yield h
    h.close()


def test_grant_rules(h):
    r = h.do(Grant(ID=7, TTL=60))
    assert (r.ID, r.TTL, r.header.revision) == (7, 60, 1)
    assert h.do(Grant(ID=8, TTL=1)).TTL == 5  # raised to the minimum TTL
    with pytest.raises(errors.LeaseExists):
        h.do(Grant(ID=7, TTL=60))
    with pytest.raises(errors.LeaseTTLTooLarge):
        h.do(Grant(ID=9, TTL=9_000_000_001))
    assert h.do(Grant(ID=10, TTL=9_000_000_000)).TTL == 9_000_000_000
    assert h.a.lessor.leases() == [7, 8, 10]
    assert h.rev == 1  # leases do not touch the kv revision


def test_grant_without_id_is_deterministic(tmp_path):
    ids = []
    for d in ("a", "b"):
        h = Harness.in_dir(tmp_path / d)
        req = internal_pb2.InternalRequest(id=0xABCDEF, lease_grant=Grant(TTL=10))
        (r1,) = h.apply(req)
        (r2,) = h.apply(req)  # same proposal id again: the next free id
        ids.append((r1.ID, r2.ID))
        h.close()
    assert ids[0] == ids[1] == (0xABCDEF, 0xABCDF0)


def test_attach_detach_and_revoke_in_one_revision(h, clock):
    h.do(Grant(ID=1, TTL=60))
    h.do(Grant(ID=2, TTL=60))
    for k in ["c", "a", "b"]:
        h.put(k, "v", lease=1)
    h.put("other", "v", lease=2)
    with pytest.raises(errors.LeaseNotFound):
        h.put("x", "v", lease=3)
    h.put("b", "v2", lease=2)            # moves b to lease 2
    h.put("c", "v3", ignore_lease=True)  # keeps lease 1
    h.delete("a")                        # detaches a
    h.put("a", "again")                  # no lease
    l = h.a.lessor
    assert l.time_to_live(1, clock(), keys=True)[2] == [b"c"]
    assert l.time_to_live(2, clock(), keys=True)[2] == [b"b", b"other"]
    assert h.get("c").kvs[0].lease == 1
    rev = h.rev
    r = h.do(Revoke(ID=2))
    assert r.header.revision == rev + 1 == h.rev
    assert h.value("b") is None and h.value("other") is None and h.value("c") == b"v3"
    # both deletions at one revision, in key order
    assert h.kv.index.history(b"b").generations[-2].revs[-1] == (rev + 1, 0)
    assert h.kv.index.history(b"other").generations[-2].revs[-1] == (rev + 1, 1)
    with pytest.raises(errors.LeaseNotFound):
        h.do(Revoke(ID=2))
    # a lease without keys revokes without a new revision
    h.do(Grant(ID=5, TTL=60))
    h.do(Revoke(ID=5))
    assert h.rev == rev + 1


def test_expiry_only_on_primary_with_injected_clock(h, clock):
    l = h.a.lessor
    h.do(Grant(ID=1, TTL=10))
    h.do(Grant(ID=2, TTL=30))
    h.put("k", "v", lease=1)
    clock.advance(100)
    assert l.expired(clock()) == []  # not primary: leases never expire
    with pytest.raises(errors.LeaseNotPrimary):
        l.keepalive(1, clock())
    l.promote(clock())
    assert l.time_to_live(1, clock())[:2] == (10, 10)
    clock.advance(9)
    assert l.expired(clock()) == []
    assert l.keepalive(1, clock()) == 10
    clock.advance(9.5)
    assert l.time_to_live(1, clock())[0] == 0  # 0.5 s left, whole seconds
    assert l.expired(clock()) == []
    clock.advance(1)
    assert l.expired(clock()) == [1]
    assert l.expired(clock()) == []  # offered once, then retried only later
    with pytest.raises(errors.LeaseNotFound):
        l.keepalive(1, clock())
    clock.advance(EXPIRED_RETRY_INTERVAL)
    assert l.expired(clock()) == [1]
    # the server proposes the revoke through the log
    h.do(Revoke(ID=1))
    assert h.value("k") is None
    clock.advance(100)
    assert l.expired(clock()) == [2]
    l.demote()
    clock.advance(1000)
    assert l.expired(clock()) == []


def test_grant_on_primary_starts_the_clock(h, clock):
    l = h.a.lessor
    l.promote(clock())
    h.do(Grant(ID=3, TTL=6))
    clock.advance(6)
    assert l.expired(clock()) == [3]


def test_leases_persist_and_restart_their_clock_on_promote(h, clock):
    h.do(Grant(ID=1, TTL=20))
    h.do(Grant(ID=2, TTL=40))
    h.put("k1", "v", lease=1)
    h.put("k2", "v", lease=2)
    h.put("k3", "v", lease=2)
    h.do(rpc_pb2.LeaseCheckpointRequest(checkpoints=[rpc_pb2.LeaseCheckpoint(ID=2, remaining_TTL=7)]))
    h.reopen()
    l = h.a.lessor
    assert l.leases() == [1, 2]
    assert l.time_to_live(2, clock(), keys=True) == (7, 40, [b"k2", b"k3"])
    assert l.lease_of(b"k1") == 1
    clock.advance(1000)
    l.promote(clock(), extend=1)
    clock.advance(8)
    assert l.expired(clock()) == [2]  # remaining 7 (+1 grace) from the checkpoint
    h.do(Revoke(ID=2))
    assert h.value("k2") is None and h.value("k1") == b"v"
    clock.advance(13)
    assert l.expired(clock()) == [1]


def test_lease_requests_through_the_log_on_delete_detach(h, clock):
    h.do(Grant(ID=1, TTL=60))
    h.put("a", "1", lease=1)
    h.do(del_req("a"))
    assert h.a.lessor.time_to_live(1, clock(), keys=True)[2] == []
    rev = h.rev
    h.do(Revoke(ID=1))
    assert h.rev == rev  # nothing left to delete


def test_failed_put_with_lease_leaves_no_change(h):
    before = h.a.hash_kv()
    (r,) = h.apply(put_req("k", "v", lease=42))
    assert isinstance(r, errors.LeaseNotFound)
    assert h.a.hash_kv() == before and h.rev == 1


def test_primary_without_clock_uses_the_last_now_it_was_given(tmp_path):
    h = Harness.in_dir(tmp_path, min_lease_ttl=1)
    l = h.a.lessor
    l.promote(50.0)
    h.do(Grant(ID=1, TTL=10))
    assert l.expired(59.0) == []
    assert l.expired(60.0) == [1]
    h.close()
