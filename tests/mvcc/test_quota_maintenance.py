"""Quota + NOSPACE alarm, alarm list/disarm, defrag, snapshots."""
from __future__ import annotations

import pytest

from engine.mvcc import errors
from engine.mvcc.alarm import CORRUPT, NOSPACE
from engine.proto import internal_pb2, rpc_pb2
from tests.mvcc.helpers import Harness, del_req, internal, put_req, range_req, txn_req

AR = rpc_pb2.AlarmRequest
MEMBER = 0xFEEDFACECAFEBEEF  # > 2**63: stored through the signed conversion


def fill_until_nospace(h, value=b"x" * 2048) -> int:
    """Put keys through admission like the server does, until it refuses."""
    for i in range(10_000):
        req = internal(put_req(f"fill/{i:05}", value))
        try:
            h.a.admit(req)
        except errors.NoSpace as e:
            # the server proposes the alarm instead of the write
            (r,) = h.apply(e.alarm_request)
            assert [(m.memberID, m.alarm) for m in r.alarms] == [(MEMBER, NOSPACE)]
            return i
        h.apply(req)
    raise AssertionError("quota never reached")


def test_nospace_alarm_blocks_writes_not_reads_deletes_compaction(tmp_path):
    h = Harness.in_dir(tmp_path, quota_bytes=256 * 1024, member_id=MEMBER)
    n = fill_until_nospace(h)
    assert n > 10
    assert h.a.db_size() + 2048 + 256 >= 256 * 1024
    rev = h.rev
    # refused by the applier while the alarm is on: no change at all
    res = h.apply(put_req("new", "v"), txn_req([], [put_req("new", "v")], []),
                  rpc_pb2.LeaseGrantRequest(ID=5, TTL=100),
                  txn_req([], [range_req("new")], [txn_req([], [put_req("deep", "v")], [])]))
    assert all(isinstance(r, errors.NoSpace) for r in res)
    assert res[0].etcd_message == "etcdserver: mvcc: database space exceeded"
    assert h.rev == rev
    # admission refuses too, without asking for another alarm
    with pytest.raises(errors.NoSpace) as ei:
        h.a.admit(internal(put_req("x", "y")))
    assert not hasattr(ei.value, "alarm_request")
    # reads, deletes, read-only txns and compaction keep working
    assert h.get("fill/00000").count == 1
    assert h.txn([], [range_req("fill/00000")], []).succeeded
    assert h.delete("fill/", "fill0").deleted == n
    h.compact(h.rev)
    h.a.admit(internal(del_req("a")))  # no cost: always admitted
    # the alarm survives a restart
    h.reopen()
    (r,) = h.apply(AR(action=AR.GET))
    assert [(m.memberID, m.alarm) for m in r.alarms] == [(MEMBER, NOSPACE)]
    assert isinstance(h.apply(put_req("new", "v"))[0], errors.NoSpace)
    # defrag gives the space back; disarm re-enables writes
    h.a.defrag()
    (r,) = h.apply(AR(action=AR.DEACTIVATE, memberID=MEMBER, alarm=NOSPACE))
    assert [(m.memberID, m.alarm) for m in r.alarms] == [(MEMBER, NOSPACE)]
    (r,) = h.apply(AR(action=AR.GET))
    assert list(r.alarms) == []
    h.a.admit(internal(put_req("new", "v")))
    assert h.put("new", "v").header.revision == h.rev
    h.close()


def test_alarm_requests(tmp_path):
    h = Harness.in_dir(tmp_path)
    (r,) = h.apply(AR(action=AR.ACTIVATE, memberID=1, alarm=NOSPACE))
    (r,) = h.apply(AR(action=AR.ACTIVATE, memberID=2, alarm=NOSPACE))
    (r,) = h.apply(AR(action=AR.ACTIVATE, memberID=2, alarm=NOSPACE))  # already on: reported again
    assert [(m.memberID, m.alarm) for m in r.alarms] == [(2, NOSPACE)]
    (r,) = h.apply(AR(action=AR.GET, alarm=NOSPACE))
    assert [(m.memberID, m.alarm) for m in r.alarms] == [(1, NOSPACE), (2, NOSPACE)]
    (r,) = h.apply(AR(action=AR.DEACTIVATE, memberID=3, alarm=NOSPACE))  # not on
    assert list(r.alarms) == []
    h.apply(AR(action=AR.DEACTIVATE, memberID=1, alarm=NOSPACE))
    assert isinstance(h.apply(put_req("k", "v"))[0], errors.NoSpace)  # member 2's still on
    h.apply(AR(action=AR.DEACTIVATE, memberID=2, alarm=NOSPACE))
    h.put("k", "v")
    # CORRUPT refuses every kv request, reads included
    h.apply(AR(action=AR.ACTIVATE, memberID=1, alarm=CORRUPT))
    res = h.apply(range_req("k"), put_req("k", "w"), del_req("k"))
    assert all(isinstance(r, errors.Corrupt) for r in res)
    h.close()


def test_quota_disabled_and_costs(tmp_path):
    h = Harness.in_dir(tmp_path, quota_bytes=-1)
    assert h.a.quota.available(internal(put_req("k", "v" * 10**6)))
    h.close()
    h = Harness.in_dir(tmp_path / "d", quota_bytes=0)
    assert h.a.quota.quota_bytes == 2 * 1024 ** 3
    h.close()


def test_defrag_shrinks_the_database(tmp_path):
    h = Harness.in_dir(tmp_path)
    for j in range(20):
        h.apply(*[put_req(f"k{j:02}{i:03}", b"v" * 1000) for i in range(100)])
    size = h.a.db_size()
    assert size > 2_000_000
    h.delete("k", "l")
    h.compact(h.rev)
    h.kv.finish_compaction()  # (the rows go COMPACT_ROWS_PER_BATCH per batch)
    assert h.a.db_size_in_use() < size / 4  # the rows are gone, the pages are free
    assert h.a.db_size() >= size
    h.a.defrag()
    assert h.a.db_size() < size / 4
    assert h.a.db_size() == h.a.db_size_in_use()
    h.put("after", "defrag")
    h.reopen()
    assert h.value("after") == b"defrag"
    h.close()


def test_snapshot_restore_replaces_the_store(tmp_path):
    src = Harness.in_dir(tmp_path / "src")
    dst = Harness.in_dir(tmp_path / "dst")
    src.apply(rpc_pb2.LeaseGrantRequest(ID=9, TTL=100))
    for i in range(30):
        src.put(f"k{i % 5}", str(i), lease=9 if i % 2 else 0)
    src.compact(10)
    src.apply(AR(action=AR.ACTIVATE, memberID=1, alarm=NOSPACE))
    dst.put("old", "data")
    data = src.a.snapshot_bytes()
    assert data[:16] == b"SQLite format 3\x00"
    dst.restore(data)
    assert dst.a.consistent_index == src.a.consistent_index
    assert dst.a.hash_kv() == src.a.hash_kv()
    assert dst.rev == src.rev and dst.kv.compact_rev == 10
    assert dst.value("old") is None
    assert dst.a.lessor.leases() == [9]
    assert sorted(k for k, _ in dst.a.lessor.attachments()) == sorted(k for k, _ in src.a.lessor.attachments())
    assert dst.a.alarms.get() == [(1, NOSPACE)]
    # the replaced store keeps working and survives a restart
    dst.apply(AR(action=AR.DEACTIVATE, memberID=1, alarm=NOSPACE))
    dst.put("new", "x")
    dst.reopen()
    assert dst.value("new") == b"x" and dst.value("k4") == b"29"
    with pytest.raises(ValueError):
        dst.a.restore(b"not a database" * 100)
    assert dst.value("new") == b"x"
    src.close()
    dst.close()


def test_snapshot_is_consistent_while_writes_continue(tmp_path):
    h = Harness.in_dir(tmp_path)
    h.put("a", "1")
    snap = h.a.snapshot_bytes()
    h.put("a", "2")
    other = Harness.in_dir(tmp_path / "o")
    other.restore(snap)
    assert other.value("a") == b"1" and other.rev == 2
    h.close()
    other.close()
