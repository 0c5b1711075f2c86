"""Where a member keeps its files inside ``--data-dir`` (etcd's layout).

    <data-dir>/member/wal/      WAL segments   (engine.wal.wal)
    <data-dir>/member/snap/     snapshot files (engine.wal.snap)
    <data-dir>/member/snap/db   the MVCC SQLite database (engine.mvcc)

etcd keeps its bbolt file at member/snap/db too; `etcdctl snapshot restore`
users expect that shape.
"""
from __future__ import annotations

import os
from pathlib import Path


def member_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "member"


def wal_dir(data_dir: str | os.PathLike) -> Path:
    return member_dir(data_dir) / "wal"


def snap_dir(data_dir: str | os.PathLike) -> Path:
    return member_dir(data_dir) / "snap"


def db_path(data_dir: str | os.PathLike) -> Path:
    """Reserved for the MVCC layer's SQLite file; nothing in engine.wal touches it."""
    return snap_dir(data_dir) / "db"
