"""`raftnode snapshot restore FILE --data-dir DIR`: seed a new member's data
dir from a snapshot taken with `etcdctl snapshot save` against raftnode.

Our snapshots are the store's SQLite database followed by the sha256 of it
(the 32 bytes etcdctl checks), not etcd's bbolt file, so etcdctl's own
`snapshot restore` cannot read them; this command does the same job. The
keys, revisions and leases are kept; the Raft log and the membership start
afresh: start the member(s) afterwards with --initial-cluster-state new and
the new --initial-cluster, as after etcdctl snapshot restore.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys

from engine.wal import layout


def restore(snapshot_file: str, data_dir: str, skip_hash_check: bool = False) -> int:
    with open(snapshot_file, "rb") as f:
        blob = f.read()
    if not skip_hash_check:
        if len(blob) < 32 or len(blob) % 512 != 32:
            raise ValueError(f"{snapshot_file}: no sha256 checksum at the end (size {len(blob)})")
        data, digest = blob[:-32], blob[-32:]
        if hashlib.sha256(data).digest() != digest:
            raise ValueError(f"{snapshot_file}: sha256 checksum mismatch")
    else:
        data = blob[:-32] if len(blob) % 512 == 32 else blob
    member = layout.member_dir(data_dir)
    if os.path.exists(member) and os.listdir(member):
        raise ValueError(f"data dir {data_dir} already holds a member; restore into a new one")
    db_path = str(layout.db_path(data_dir))
    os.makedirs(os.path.dirname(db_path), exist_ok=True)
    tmp = db_path + ".restoring"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise ValueError(f"{snapshot_file}: not a raftnode snapshot (database check failed)")
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"kv", "meta"} <= names:
            raise ValueError(f"{snapshot_file}: not a raftnode snapshot (no kv/meta tables)")
        # The new cluster's log starts at index 1: forget the old applied
        # index (or its entries would be skipped as applied), its
        # membership and its alarms.
        db.execute("BEGIN")
        db.execute("UPDATE meta SET value = 0 WHERE name IN ('consistent_index', 'term')")
        if "members" in names:
            db.execute("DELETE FROM members")
        if "alarm" in names:
            db.execute("DELETE FROM alarm")
        db.execute("COMMIT")
        rev = db.execute("SELECT value FROM meta WHERE name = 'current_rev'").fetchone()
    finally:
        db.close()
    os.replace(tmp, db_path)
    dfd = os.open(os.path.dirname(db_path), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return int(rev[0]) if rev else 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="raftnode snapshot restore",
                                 description="seed a new data dir from a raftnode snapshot file")
    ap.add_argument("file")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--skip-hash-check", action="store_true")
    # Accepted for parity with etcdctl; the membership comes from the flags
    # the member is started with.
    for flag in ("--name", "--initial-cluster", "--initial-cluster-token", "--initial-advertise-peer-urls"):
        ap.add_argument(flag)
    a = ap.parse_args(argv)
    try:
        rev = restore(a.file, a.data_dir, a.skip_hash_check)
    except (OSError, ValueError, sqlite3.DatabaseError) as e:
        print(f"raftnode: snapshot restore: {e}", file=sys.stderr)
        return 1
    print(f"restored snapshot into {a.data_dir} at revision {rev}; start the member with "
          f"--data-dir {a.data_dir} --initial-cluster-state new")
    return 0
