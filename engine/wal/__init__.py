"""engine.wal: the write-ahead log, snapshot files and their dump tool.

No network, no asyncio: the server calls these from its Raft loop. The on-disk
format is written down in engine/wal/wal.py (WAL) and engine/wal/snap.py
(snapshot files).
"""
from engine.wal import layout
from engine.wal.errors import (
    SnapshotCorruptError,
    WALCorruptError,
    WALError,
    WALExistsError,
    WALFailedError,
    WALLockedError,
    WALNotFoundError,
    WALSnapshotMismatchError,
    WALSnapshotNotFoundError,
)
from engine.wal.record import TornTail
from engine.wal.snap import Snapshotter
from engine.wal.wal import DEFAULT_SEGMENT_BYTES, WAL, ReplayResult

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "ReplayResult",
    "SnapshotCorruptError",
    "Snapshotter",
    "TornTail",
    "WAL",
    "WALCorruptError",
    "WALError",
    "WALExistsError",
    "WALFailedError",
    "WALLockedError",
    "WALNotFoundError",
    "WALSnapshotMismatchError",
    "WALSnapshotNotFoundError",
    "layout",
]
