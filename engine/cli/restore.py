"""`raftnode snapshot restore FILE --data-dir DIR`: seed a new member's data
dir from a snapshot taken with `etcdctl snapshot save` against raftnode.

A snapshot is etcd's bbolt file followed by its sha256 (what `etcdctl
snapshot save` writes, from etcd or from raftnode); it is converted into our
schema (engine/mvcc/etcd_snapshot.py) and checked like our own SQLite
snapshots, which are accepted too. The
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
import tempfile

from engine.mvcc import bbolt, etcd_snapshot
from engine.mvcc.backend import load_checked
from engine.mvcc.errors import InvalidSnapshot
from engine.wal import fsutil, layout

_CHUNK = 1 << 20


def _strip_digest(snapshot_file: str, out_fd: int, skip_hash_check: bool) -> None:
    """Copy the db part of a snapshot file (everything but its trailing
    sha256) to out_fd, checking the digest unless told not to; streamed."""
    size = os.path.getsize(snapshot_file)
    has_digest = size >= 32 and size % 512 == 32
    if not has_digest and not skip_hash_check:
        raise ValueError(f"{snapshot_file}: no sha256 checksum at the end (size {size})")
    n = size - 32 if has_digest else size
    h = hashlib.sha256()
    with open(snapshot_file, "rb") as f:
        left = n
        while left:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise ValueError(f"{snapshot_file}: shorter than it was")
            h.update(chunk)
            fsutil.write_all(out_fd, chunk)
            left -= len(chunk)
        digest = f.read(32)
    if has_digest and not skip_hash_check and h.digest() != digest:
        raise ValueError(f"{snapshot_file}: sha256 checksum mismatch")


def restore(snapshot_file: str, data_dir: str, skip_hash_check: bool = False) -> int:
    """Check the snapshot and build the new member's db from it; returns the
    revision restored. Nothing of the file but its rows is used: its schema
    must be exactly ours (see engine.mvcc.backend.load_checked), the rows are
    copied into a fresh db of our own. Directories are created 0700, the db
    0600. Raises ValueError (InvalidSnapshot is one) on anything wrong."""
    member = layout.member_dir(data_dir)
    if os.path.exists(member) and os.listdir(member):
        raise ValueError(f"data dir {data_dir} already holds a member; restore into a new one")
    db_path = str(layout.db_path(data_dir))
    snap_dir = os.path.dirname(db_path)
    fsutil.makedirs_durable(snap_dir)  # data dir, member/, member/snap/: 0700
    fd, raw = tempfile.mkstemp(prefix=".snapshot-", dir=snap_dir)
    fresh = db_path + ".restoring"
    try:
        try:
            _strip_digest(snapshot_file, fd, skip_hash_check)
        finally:
            os.close(fd)
        if bbolt.is_bbolt(raw):
            # etcd's format (etcdctl snapshot save from etcd, or from raftnode): into our
            # schema first; load_checked then checks and copies it like one of ours.
            converted = raw + ".sqlite"
            try:
                etcd_snapshot.from_bbolt(raw, converted)
                os.replace(converted, raw)
            finally:
                for p in (converted, converted + "-journal"):
                    if os.path.exists(p):
                        os.unlink(p)
        # The new cluster's log starts at index 1: forget the old applied
        # index (or its entries would be skipped as applied), its
        # membership and its alarms.
        load_checked(raw, fresh, fresh_meta={"consistent_index": 0, "term": 0},
                     skip_tables=("members", "alarm"))
        db = sqlite3.connect(f"file:{fresh}?mode=ro", uri=True)
        try:
            rev = db.execute("SELECT value FROM meta WHERE name = 'current_rev'").fetchone()
        finally:
            db.close()
        os.replace(fresh, db_path)
        fsutil.fsync_dir(snap_dir)
    finally:
        for p in (raw, fresh, fresh + "-journal"):
            if os.path.exists(p):
                os.unlink(p)
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
    except (OSError, ValueError, InvalidSnapshot, sqlite3.DatabaseError) as e:
        print(f"raftnode: snapshot restore: {e}", file=sys.stderr)
        return 1
    print(f"restored snapshot into {a.data_dir} at revision {rev}; start the member with "
          f"--data-dir {a.data_dir} --initial-cluster-state new")
    return 0
