"""Errors of the WAL and the snapshot files.

Every corruption error names the file and the byte offset, so an operator can
look at the bytes (``python -m engine.wal.dump``) before deciding anything:
the WAL never skips damaged data silently.
"""
from __future__ import annotations


class WALError(Exception):
    """Base class of everything engine.wal raises on purpose."""


class WALCorruptError(WALError):
    """Damage that is not a torn tail: the log cannot be trusted past it."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt WAL at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WALExistsError(WALError):
    """create() on a directory that already holds a WAL."""


class WALNotFoundError(WALError):
    """open() on a directory without WAL segments."""


class WALLockedError(WALError):
    """Another WAL object (this process or another) has the directory open."""


class WALSnapshotNotFoundError(WALError):
    """The WAL does not cover the snapshot open() was asked to start from."""


class WALSnapshotMismatchError(WALError):
    """The WAL's marker for the snapshot index carries another term."""


class WALFailedError(WALError):
    """A write or fsync failed earlier; the WAL refuses further use.

    After a failed fsync the kernel may have dropped the dirty pages, so
    retrying could report success for data that is not on disk (the
    "fsyncgate" lesson). The only safe way on is to restart and replay.
    """


class SnapshotCorruptError(Exception):
    """A snapshot file whose header, length or CRC does not check out."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: corrupt snapshot file: {reason}")
        self.path = path
        self.reason = reason
