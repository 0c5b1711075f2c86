"""engine/mvcc/etcd_snapshot.py in process: our store -> etcd's buckets ->
our store again keeps every table; etcd's records are written as etcd 3.4
writes them; a hostile etcd file is refused by the backend's check."""
from __future__ import annotations

import json
import sqlite3
import struct

import pytest

from engine.mvcc import bbolt, etcd_snapshot
from engine.mvcc.apply import Applier
from engine.mvcc.backend import load_checked
from engine.mvcc.errors import InvalidSnapshot
from engine.proto import auth_pb2, internal_pb2, kv_pb2, rpc_pb2

IR = internal_pb2.InternalRequest
LEASE = 0x7F00_0000_0000_1234
MEMBER = 0xF234_5678_9ABC_DEF0          # above 2**63: SQLite keeps it signed


def _store(tmp_path) -> str:
    """A store with updates, deletes, a lease (and a key on it), a
    compaction, an alarm, members (one removed) and auth rows; its db file."""
    a = Applier(str(tmp_path / "src" / "db"))
    try:
        def apply(*reqs):
            a.apply_batch(a.consistent_index + 1, list(reqs))
        for i in range(30):
            apply(IR(put=rpc_pb2.PutRequest(key=b"k%02d" % i, value=b"v%d" % i)))
        apply(IR(put=rpc_pb2.PutRequest(key=b"k01", value=b"v1 again")))
        apply(IR(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k02")))
        apply(IR(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k1", range_end=b"k2")))
        apply(IR(lease_grant=rpc_pb2.LeaseGrantRequest(TTL=600, ID=LEASE)))
        apply(IR(put=rpc_pb2.PutRequest(key=b"leased", value=b"x" * 9000, lease=LEASE)))
        apply(IR(compaction=rpc_pb2.CompactionRequest(revision=5)))
        while not a.compact_step():
            pass
        apply(IR(put=rpc_pb2.PutRequest(key=b"k03", value=b"last")))
        b = a.backend
        b.begin()
        b.put_alarm(MEMBER, rpc_pb2.AlarmType.Value("NOSPACE"))
        b.put_member(MEMBER, json.dumps({"id": MEMBER, "name": "n1", "peer_urls": ["http://127.0.0.1:1"],
                                         "client_urls": ["http://127.0.0.1:2"], "is_learner": False},
                                        sort_keys=True))
        b.put_member(7, json.dumps({"removed": True}))
        b.commit()
        path = str(tmp_path / "ours.db")
        a.snapshot_to_file(path)
    finally:
        a.close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executemany("INSERT INTO auth_meta VALUES (?, ?)", [("enabled", 1), ("revision", 9)])
    db.execute("INSERT INTO auth_users VALUES (?, ?)",
               (b"root", auth_pb2.User(name=b"root", password=b"$2a$hash", roles=["root"]).SerializeToString()))
    db.execute("INSERT INTO auth_roles VALUES (?, ?)", (b"root", auth_pb2.Role(name=b"root").SerializeToString()))
    db.close()
    return path


def _tables(path: str) -> dict[str, list]:
    db = sqlite3.connect(path)
    try:
        out = {}
        for t in ("kv", "meta", "lease", "alarm", "members", "auth_meta", "auth_users", "auth_roles"):
            rows = sorted(db.execute(f"SELECT * FROM {t}").fetchall())
            if t == "members":
                rows = [(k, json.loads(v)) for k, v in rows]
            if t == "meta":
                rows = [r for r in rows if r[0] != "term"]   # etcd 3.4 keeps no term
            out[t] = rows
        return out
    finally:
        db.close()


def test_round_trip_keeps_every_table(tmp_path):
    ours = _store(tmp_path)
    etcd = str(tmp_path / "etcd.db")
    etcd_snapshot.to_bbolt(ours, etcd)
    back = str(tmp_path / "back.db")
    assert etcd_snapshot.from_bbolt(etcd, back) == 36
    checked = str(tmp_path / "checked.db")
    load_checked(back, checked)
    assert _tables(checked) == _tables(ours)
    a = Applier(checked)
    try:
        assert (a.current_revision, a.compact_revision) == (36, 5)
        r = a.kv.range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l"))
        assert [kv.key for kv in r.kvs][:4] == [b"k00", b"k01", b"k03", b"k04"]
        assert a.lessor.lookup(LEASE) is not None
    finally:
        a.close()


def test_buckets_as_etcd_writes_them(tmp_path):
    etcd = str(tmp_path / "etcd.db")
    etcd_snapshot.to_bbolt(_store(tmp_path), etcd)
    with bbolt.Reader(etcd) as r:
        assert r.buckets() == [b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"key",
                               b"lease", b"members", b"members_removed", b"meta"]
        meta = dict(r.items(b"meta"))
        compacted = struct.pack(">Q", 5) + b"_" + bytes(8)
        assert meta[b"finishedCompactRev"] == meta[b"scheduledCompactRev"] == compacted
        assert len(meta[b"consistent_index"]) == 8
        (lease_key, lease_val), = r.items(b"lease")
        assert lease_key == struct.pack(">q", LEASE)
        assert etcd_snapshot._decode_lease(lease_val) == (LEASE, 600, 0)
        members = dict(r.items(b"members"))
        assert json.loads(members[b"%x" % MEMBER]) == {
            "id": MEMBER, "peerURLs": ["http://127.0.0.1:1"], "name": "n1", "clientURLs": ["http://127.0.0.1:2"]}
        assert dict(r.items(b"members_removed")) == {b"7": b"removed"}
        (alarm_key, alarm_val), = r.items(b"alarm")
        assert rpc_pb2.AlarmMember.FromString(alarm_key).memberID == MEMBER and alarm_val == b""
        assert dict(r.items(b"auth")) == {b"authEnabled": b"\x01", b"authRevision": struct.pack(">Q", 9)}
        assert dict(r.items(b"cluster")) == {b"clusterVersion": b"3.4.0"}
        kvs = list(r.items(b"key"))
        assert kv_pb2.KeyValue.FromString(kvs[-1][1]).value == b"last"


@pytest.mark.parametrize("lease", [(0, 0, 0), (1, 5, 3), (-1, 1 << 40, 0), ((1 << 63) - 1, 2, 1)])
def test_lease_records(lease):
    assert etcd_snapshot._decode_lease(etcd_snapshot._encode_lease(*lease)) == lease


def test_hostile_etcd_files_are_refused(tmp_path):
    no_key = str(tmp_path / "a")
    bbolt.write(no_key, [(b"meta", [])])
    with pytest.raises(bbolt.BoltError):
        etcd_snapshot.from_bbolt(no_key, str(tmp_path / "a.sqlite"))
    bad_rev = str(tmp_path / "b")
    bbolt.write(bad_rev, [(b"key", [(b"not a revision", b"")]), (b"meta", [])])
    etcd_snapshot.from_bbolt(bad_rev, str(tmp_path / "b.sqlite"))
    with pytest.raises(InvalidSnapshot):
        load_checked(str(tmp_path / "b.sqlite"), str(tmp_path / "b.checked"))
    bad_lease = str(tmp_path / "c")
    bbolt.write(bad_lease, [(b"key", []), (b"lease", [(bytes(8), b"\x08\xff")]), (b"meta", [])])
    with pytest.raises(bbolt.BoltError):
        etcd_snapshot.from_bbolt(bad_lease, str(tmp_path / "c.sqlite"))
