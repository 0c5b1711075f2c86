"""Segment files of a WAL directory: names, listing, reading in order."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterator

from engine.wal.errors import WALCorruptError
from engine.wal.record import SegmentScan, scan

_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


def segment_name(seq: int, first_index: int) -> str:
    return f"{seq:016x}-{first_index:016x}.wal"


@dataclass(frozen=True, order=True, slots=True)
class Segment:
    seq: int
    first_index: int  # raft index the segment was cut for (see wal.py)
    path: str = field(compare=False)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def list_segments(wal_dir: str | os.PathLike) -> list[Segment]:
    """The directory's segments in sequence order. Raises WALCorruptError if
    the sequence numbers are not consecutive: a missing middle segment would
    silently drop log entries. (The indexes in the names need not increase:
    after Raft rewrote a suffix, a later cut can name a smaller index.)"""
    wal_dir = os.fspath(wal_dir)
    segs = []
    for name in os.listdir(wal_dir):
        m = _NAME.match(name)
        if m:
            segs.append(Segment(int(m[1], 16), int(m[2], 16), os.path.join(wal_dir, name)))
    segs.sort()
    for prev, cur in zip(segs, segs[1:]):
        if cur.seq != prev.seq + 1:
            raise WALCorruptError(cur.path, 0, f"does not follow {prev.name}: a segment is missing or misnamed")
    return segs


def start_segment(segs: list[Segment], index: int) -> int | None:
    """Position of the segment replay starts from for a snapshot at `index`:
    the last one whose first_index <= index. Entries after `index` and the
    snapshot's marker are all in it or later. None if every segment starts
    later, i.e. the segments holding `index` were released."""
    # Why this is enough: the chosen segment was cut when the log ended at
    # first_index - 1 < index, so every entry j > index in today's log was
    # (re)written after that cut, and so was the snapshot's marker: it was
    # saved once the log reached `index`, which the log never drops below
    # again (a snapshot holds committed entries only).
    # Search from the newest: names need not increase (see list_segments).
    for i in range(len(segs) - 1, -1, -1):
        if segs[i].first_index <= index:
            return i
    return None


def has_segments(wal_dir: str | os.PathLike) -> bool:
    try:
        return any(_NAME.match(name) for name in os.listdir(wal_dir))
    except FileNotFoundError:
        return False


def remove_temp_files(wal_dir: str | os.PathLike) -> list[str]:
    """Delete segments a crash left half-made (`*.wal.tmp`: never renamed,
    so never part of the log). Only call with the directory locked."""
    removed = []
    for name in os.listdir(wal_dir):
        if name.endswith(".wal.tmp"):
            path = os.path.join(wal_dir, name)
            os.unlink(path)
            removed.append(path)
    return removed


def read_segments(segs: list[Segment]) -> Iterator[tuple[Segment, SegmentScan]]:
    """Scan `segs` in order, carrying the CRC chain across them. The last
    segment of the list is the one allowed a torn tail. Stops after the
    first scan that reports an error (the caller decides what to do)."""
    chain = None
    for i, seg in enumerate(segs):
        with open(seg.path, "rb") as f:
            buf = f.read()
        result = scan(buf, seg.path, final=i == len(segs) - 1, chain=chain)
        yield seg, result
        if result.error is not None:
            return
        chain = result.crc
