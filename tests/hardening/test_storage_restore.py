"""Item 9 (issue 8) and contract 1: snapshots as files, and restore trusting
nothing of the file but rows of our own schema.

Every crafted snapshot below was accepted by 407b693 (its check only looked
for the kv and meta tables), and the trigger one kept running in the live db.
"""
from __future__ import annotations

import os
import sqlite3
import stat
import threading

import pytest

from engine.mvcc.apply import Applier
from engine.mvcc.errors import InvalidSnapshot
from engine.proto import internal_pb2, rpc_pb2

IR = internal_pb2.InternalRequest


def put(a: Applier, k: bytes, v: bytes) -> None:
    a.apply_batch(a.consistent_index + 1, [IR(put=rpc_pb2.PutRequest(key=k, value=v))])


def get(a: Applier, k: bytes) -> bytes | None:
    r = a.kv.range(rpc_pb2.RangeRequest(key=k))
    return r.kvs[0].value if r.kvs else None


@pytest.fixture
def live(tmp_path):
    a = Applier(str(tmp_path / "live" / "db"))
    put(a, b"k", b"live")
    yield a
    a.close()


@pytest.fixture
def good_snapshot(tmp_path):
    a = Applier(str(tmp_path / "src" / "db"))
    for i in range(20):
        put(a, b"s%02d" % i, b"v%d" % i)
    path = str(tmp_path / "good.snap")
    a.backend.snapshot_to(path)  # (as on 407b693, to show what it accepted)
    a.close()
    return path


def crafted(good: str, tmp_path, *sql: str) -> str:
    path = str(tmp_path / "crafted.snap")
    with open(good, "rb") as f, open(path, "wb") as g:
        g.write(f.read())
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for q in sql:
            db.execute(q)
    finally:
        db.close()
    return path


CRAFTED = {
    "trigger": ["CREATE TRIGGER evil AFTER INSERT ON kv BEGIN DELETE FROM kv; END"],
    "trigger on meta": ["CREATE TRIGGER evil2 BEFORE UPDATE ON meta BEGIN SELECT 1; END"],
    "extra table": ["CREATE TABLE extra (x)"],
    "view": ["CREATE VIEW v AS SELECT * FROM kv"],
    "index": ["CREATE INDEX i ON kv (kv)"],
    "kv with other SQL": ["DROP TABLE kv", "CREATE TABLE kv (rev BLOB PRIMARY KEY, kv BLOB NOT NULL, x) WITHOUT ROWID"],
    "no kv table": ["DROP TABLE kv"],
    "text revision": ["INSERT INTO kv VALUES ('00000000_00000000x', X'0a0161')"],
    "short revision": ["INSERT INTO kv VALUES (X'0102', X'0a0161')"],
    "garbage value": ["INSERT INTO kv VALUES (X'00000000000000635f0000000000000000', X'ffffffff')"],
    "text meta value": ["INSERT OR REPLACE INTO meta VALUES ('current_rev', 'x')"],
    "blob lease ttl": ["INSERT INTO lease VALUES (1, X'00', 0)"],
    "member record not json": ["INSERT INTO members VALUES (X'0000000000000001', 'nope')"],
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_snapshot_is_refused_and_live_db_unchanged(live, good_snapshot, tmp_path, name):
    bad = crafted(good_snapshot, tmp_path, *CRAFTED[name])
    before = live.hash_kv(0).hash
    with pytest.raises(InvalidSnapshot):
        live.restore_file(bad)
    # Unchanged, still writable, and nothing of theirs in our schema.
    assert get(live, b"k") == b"live"
    assert live.hash_kv(0).hash == before
    put(live, b"k2", b"after")
    assert get(live, b"k") == b"live" and get(live, b"k2") == b"after"
    db = sqlite3.connect(live.backend.path)
    try:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    finally:
        db.close()
    assert names == {"kv", "meta", "lease", "alarm", "members", "auth_meta", "auth_users", "auth_roles"}
    # No temporary file left beside the db.
    assert sorted(os.listdir(os.path.dirname(live.backend.path))) == ["db", "db-shm", "db-wal"]


def test_restore_bytes_goes_through_the_same_check(live, good_snapshot, tmp_path):
    bad = crafted(good_snapshot, tmp_path, *CRAFTED["trigger"])
    with open(bad, "rb") as f:
        data = f.read()
    with pytest.raises(InvalidSnapshot):
        live.restore(data)
    assert get(live, b"k") == b"live"


def test_garbage_file_is_refused(live, tmp_path):
    p = tmp_path / "garbage"
    p.write_bytes(b"SQLite format 3\x00" + os.urandom(5000))
    with pytest.raises(InvalidSnapshot):
        live.restore_file(str(p))
    with pytest.raises(InvalidSnapshot):
        live.restore_file(str(tmp_path / "missing"))
    assert get(live, b"k") == b"live"


def test_good_snapshot_restores_and_file_is_left_to_the_caller(live, good_snapshot):
    live.restore_file(good_snapshot)
    assert get(live, b"k") is None
    assert get(live, b"s07") == b"v7"
    assert os.path.exists(good_snapshot)
    assert stat.S_IMODE(os.stat(live.backend.path).st_mode) == 0o600
    put(live, b"new", b"x")  # still a working store
    assert get(live, b"new") == b"x"


def test_snapshot_to_file_size_mode_and_pinned_state(tmp_path):
    a = Applier(str(tmp_path / "a" / "db"))
    try:
        for i in range(100):
            put(a, b"k%03d" % i, b"x" * 100)
        ci = a.consistent_index
        reader = a.pin()  # the state now ...
        put(a, b"later", b"y")  # ... not this
        path = str(tmp_path / "pinned.snap")
        size = []
        t = threading.Thread(target=lambda: size.append(reader.backup_to(path)))
        t.start()
        t.join()
        reader.release()
        assert size[0] == os.path.getsize(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert not os.path.exists(path + "-wal")
        b = Applier(str(tmp_path / "b" / "db"))
        try:
            b.restore_file(path)
            assert b.consistent_index == ci
            assert get(b, b"k050") == b"x" * 100 and get(b, b"later") is None
        finally:
            b.close()
        # snapshot_to_file on a worker thread while the owner applies.
        path2 = str(tmp_path / "worker.snap")
        t = threading.Thread(target=lambda: size.append(a.snapshot_to_file(path2)))
        t.start()
        for i in range(50):
            put(a, b"w%03d" % i, b"z")
        t.join()
        c = Applier(str(tmp_path / "c" / "db"))
        try:
            c.restore_file(path2)
            assert get(c, b"later") == b"y"
            assert c.hash_kv(0).header.revision <= a.current_revision
        finally:
            c.close()
    finally:
        a.close()


def test_data_files_are_private(tmp_path):
    a = Applier(str(tmp_path / "d" / "member" / "snap" / "db"))
    try:
        put(a, b"k", b"v")
        for d in ("d", "d/member", "d/member/snap"):
            assert stat.S_IMODE(os.stat(tmp_path / d).st_mode) == 0o700, d
        for f in ("db", "db-wal", "db-shm"):
            p = tmp_path / "d" / "member" / "snap" / f
            assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, f
    finally:
        a.close()


def test_off_loop_defrag_keeps_writes_made_during_the_copy(tmp_path):
    a = Applier(str(tmp_path / "a" / "db"))
    try:
        for i in range(300):
            put(a, b"k%03d" % i, b"x" * 500)
        a.apply_batch(a.consistent_index + 1, [IR(delete_range=rpc_pb2.DeleteRangeRequest(key=b"k", range_end=b"l"))])
        a.apply_batch(a.consistent_index + 1, [IR(compaction=rpc_pb2.CompactionRequest(revision=a.current_revision))])
        while not a.compact_step():
            pass
        size_before = a.db_size()
        copy, finish = a.defrag_job()
        copy()  # (a worker in the server)
        put(a, b"during", b"d")  # committed after the copy was taken
        assert finish(True)
        assert get(a, b"during") == b"d"
        assert a.db_size() < size_before
        h = a.hash_kv(0).hash
        a.close()
        a = Applier(str(tmp_path / "a" / "db"))
        assert get(a, b"during") == b"d" and a.hash_kv(0).hash == h
    finally:
        a.close()


def test_open_data_dir_gets_etcds_warning(tmp_path, caplog):
    from engine.mvcc.apply import open_applier
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    with caplog.at_level("WARNING"):
        open_applier(str(d)).close()
    assert any("check file permission" in r.getMessage() and "drwxr-xr-x" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    p = tmp_path / "private"
    p.mkdir(mode=0o700)
    with caplog.at_level("WARNING"):
        open_applier(str(p)).close()
    assert not any("check file permission" in r.getMessage() for r in caplog.records)
    assert stat.S_IMODE(os.stat(p / "member").st_mode) == 0o700


def test_temporaries_left_by_a_crash_are_removed_at_open(tmp_path):
    d = tmp_path / "m"
    a = Applier(str(d / "db"))
    put(a, b"k", b"v")
    a.close()
    for n in (".snapshot-send-x", ".restore-y", ".defrag-z", ".incoming-w"):
        (d / n).write_bytes(b"x" * 100)
    (d / "peer-snap-1.part").write_bytes(b"not ours")
    a = Applier(str(d / "db"))
    try:
        assert get(a, b"k") == b"v"
        assert sorted(p.name for p in d.iterdir() if not p.name.startswith("db")) == ["peer-snap-1.part"]
    finally:
        a.close()


def test_a_reader_of_the_old_file_outlives_a_swap_harmlessly(tmp_path):
    """A worker still reading (a snapshot being sent) while defrag or restore
    swaps the file: it keeps its consistent view, and closing it afterwards
    must not checkpoint into, or delete the -wal of, the new file."""
    a = Applier(str(tmp_path / "a" / "db"))
    try:
        for i in range(100):
            put(a, b"k%03d" % i, b"x" * 1000)
        r = a.pin()
        copy, finish = a.defrag_job()
        copy()
        assert finish(True)
        put(a, b"after-swap", b"1")
        assert sum(1 for _ in r.iter_rows()) == 100
        r.release()
        put(a, b"after-release", b"2")
        a.close()
        a = Applier(str(tmp_path / "a" / "db"))
        assert get(a, b"after-swap") == b"1" and get(a, b"after-release") == b"2"
        assert get(a, b"k050") == b"x" * 1000
    finally:
        a.close()


def test_prepare_restore_builds_the_index_off_the_applying_thread(live, good_snapshot, monkeypatch):
    fresh = [None]
    t = threading.Thread(target=lambda: fresh.__setitem__(0, live.prepare_restore(good_snapshot)))
    t.start()
    t.join()
    assert isinstance(fresh[0], str) and fresh[0].index_state is not None
    from engine.mvcc import kvstore
    # The swap must not read the rows again.
    monkeypatch.setattr(kvstore, "build_index", lambda rows: (_ for _ in ()).throw(AssertionError("rebuilt")))
    live.install_prepared(fresh[0])
    assert get(live, b"s07") == b"v7" and get(live, b"k") is None
    assert live.kv.index.revisions(b"s", b"t", live.current_revision)[1] == 20
    put(live, b"s07", b"new")
    r = live.kv.range(rpc_pb2.RangeRequest(key=b"s07"))
    assert r.kvs[0].value == b"new" and r.kvs[0].version == 2


def test_a_db_left_world_readable_is_made_private_when_opened(tmp_path):
    a = Applier(str(tmp_path / "db"))
    put(a, b"k", b"v")
    a.close()
    os.chmod(tmp_path / "db", 0o644)
    a = Applier(str(tmp_path / "db"))
    try:
        put(a, b"k2", b"v")
        for f in ("db", "db-wal", "db-shm"):
            assert stat.S_IMODE(os.stat(tmp_path / f).st_mode) == 0o600, f
    finally:
        a.close()
