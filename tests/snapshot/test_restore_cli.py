"""`raftnode snapshot restore` of an etcd-format file, run as the operator
would: a good one becomes a store; a damaged one (its sha256 recomputed, so
only the pages are wrong) is refused with one line and nothing kept."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from engine.mvcc import etcd_snapshot
from engine.mvcc.apply import Applier
from engine.proto import rpc_pb2

from .test_convert import _store


def _restore(snap, data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "snapshot", "restore", str(snap),
                           "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=60)


def _with_digest(path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data + hashlib.sha256(data).digest())


def test_restore_takes_an_etcd_file_and_refuses_a_damaged_one(tmp_path):
    raw = str(tmp_path / "etcd.db")
    etcd_snapshot.to_bbolt(_store(tmp_path), raw)
    data = open(raw, "rb").read()
    _with_digest(tmp_path / "snap.db", data)
    p = _restore(tmp_path / "snap.db", tmp_path / "good")
    assert p.returncode == 0, p.stderr
    assert "at revision 36" in p.stdout
    a = Applier(str(tmp_path / "good" / "member" / "snap" / "db"))
    try:
        assert a.kv.range(rpc_pb2.RangeRequest(key=b"k03")).kvs[0].value == b"last"
        assert a.consistent_index == 0
    finally:
        a.close()

    bad = bytearray(data)
    bad[3 * 4096 + 8] = 0x04           # the first bucket page says it is a meta page
    _with_digest(tmp_path / "bad.db", bytes(bad))
    p = _restore(tmp_path / "bad.db", tmp_path / "bad")
    assert p.returncode == 1
    assert p.stderr == "raftnode: snapshot restore: page 3: neither branch nor leaf (flags 0x4)\n", p.stderr
    db = tmp_path / "bad" / "member" / "snap" / "db"
    assert not db.exists()
    leftovers = [n for _, _, files in os.walk(tmp_path / "bad") for n in files]
    assert leftovers == [], leftovers
