"""`raftnode snapshot restore` (item 9): only our schema is accepted, the
new data dir is private, and a refused file leaves nothing behind.
Run as the operator would: `python -m engine snapshot restore ...`."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

from engine.mvcc.apply import Applier
from engine.proto import internal_pb2, rpc_pb2

IR = internal_pb2.InternalRequest


def _snapshot_file(tmp_path, *sql: str) -> str:
    """A file as `etcdctl snapshot save` writes it from raftnode (db + sha256),
    optionally tampered with by `sql` before the digest is taken."""
    a = Applier(str(tmp_path / "src" / "db"))
    try:
        for i in range(10):
            a.apply_batch(a.consistent_index + 1, [IR(put=rpc_pb2.PutRequest(key=b"k%d" % i, value=b"v"))])
        db = str(tmp_path / "plain.db")
        a.snapshot_to_file(db)
    finally:
        a.close()
    if sql:
        c = sqlite3.connect(db, isolation_level=None)
        for q in sql:
            c.execute(q)
        c.close()
    data = open(db, "rb").read()
    out = str(tmp_path / "snap.db")
    with open(out, "wb") as f:
        f.write(data + hashlib.sha256(data).digest())
    return out


def _restore(snap: str, data_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "snapshot", "restore", snap, "--data-dir", data_dir],
                          capture_output=True, text=True, timeout=60)


def test_restore_makes_a_private_data_dir(tmp_path):
    snap = _snapshot_file(tmp_path)
    dd = str(tmp_path / "restored")
    p = _restore(snap, dd)
    assert p.returncode == 0, p.stderr
    assert "at revision 11" in p.stdout
    for root, dirs, files in os.walk(dd):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for f in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, f)).st_mode) == 0o600, f
    a = Applier(os.path.join(dd, "member", "snap", "db"))
    try:
        assert a.consistent_index == 0
        assert a.kv.range(rpc_pb2.RangeRequest(key=b"k3")).kvs[0].value == b"v"
    finally:
        a.close()


@pytest.mark.parametrize("sql", [
    ["CREATE TRIGGER evil AFTER INSERT ON kv BEGIN DELETE FROM meta; END"],
    ["CREATE VIEW v AS SELECT 1"],
    ["CREATE TABLE extra (x)"],
    ["INSERT INTO kv VALUES ('not a revision', 'x')"],
])
def test_restore_refuses_a_crafted_snapshot(tmp_path, sql):
    snap = _snapshot_file(tmp_path, *sql)
    dd = str(tmp_path / "restored")
    p = _restore(snap, dd)
    assert p.returncode == 1
    assert "invalid snapshot" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    db = os.path.join(dd, "member", "snap", "db")
    assert not os.path.exists(db)
    assert os.listdir(os.path.dirname(db)) == []  # no temporary left


def test_restore_checks_the_digest(tmp_path):
    snap = _snapshot_file(tmp_path)
    with open(snap, "r+b") as f:
        f.seek(100)
        f.write(b"\xff")
    p = _restore(snap, str(tmp_path / "restored"))
    assert p.returncode == 1 and "sha256 checksum mismatch" in p.stderr
