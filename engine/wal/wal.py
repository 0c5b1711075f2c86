"""The write-ahead log: Raft's hard state and entries, durable before use.

The host of the Raft core calls save() once per Ready (one fdatasync for the
whole batch: group commit), save_snapshot() after writing a snapshot file,
release_to() to drop segments a snapshot made useless, and on restart
open() to replay everything after the newest snapshot.

On-disk format
==============

Segments. A WAL is a directory (<data-dir>/member/wal) of segment files

    %016x-%016x.wal      (sequence number, first raft index)

e.g. 0000000000000000-0000000000000000.wal then 0000000000000001-0000000000003a99.wal.
Sequence numbers are consecutive from the oldest kept segment; a gap means a
lost segment and open() refuses. The index is the raft index the segment was
cut for: the last entry index written before the cut, plus one. open() and
release_to() choose segments by it without reading them. (Raft may rewrite a
conflicting suffix later, so a segment can hold entries below its name's
index; the names need not increase.) Segments are never preallocated: a
file's size is exactly the bytes written. A segment is created complete with
its header records by writing NAME.tmp, fsync, rename to NAME, fsync of the
directory; a leftover *.wal.tmp was never part of the log and open() deletes
it.

Records. A segment is a sequence of records, each starting 8-byte aligned:

    offset  size    field
    0       4       length      payload length, uint32 little-endian
    4       1       type        record type, below
    5       1       pad         zero bytes after the payload (0..7) up to the next multiple of 8
    6       2       reserved    0
    8       4       header_crc  zlib.crc32 of bytes 0..7
    12      4       crc         zlib.crc32(payload, crc of the previous record)
    16      length  payload
    ...     pad     zero bytes

    type 1  crc         uint32 LE: the crc the previous segment ended with (0 in the first);
                        this record's own crc is of its payload alone (seed 0)
    type 2  metadata    the opaque bytes given to WAL.create (node id, cluster id)
    type 3  entry       a serialized raftpb.Entry
    type 4  hard_state  a serialized raftpb.HardState
    type 5  snapshot    uint64 LE index, uint64 LE term: "a snapshot at index/term exists"

Every segment starts with a crc record and a metadata record. The first
segment then has a snapshot marker 0/0 (so open() at "no snapshot" finds its
marker like any other); a segment made by a cut has the hard state current at
the cut, so replay from any segment knows the term and vote.

Why these choices:
  * The crc is chained (seeded with the previous record's crc, and across
    segments through the crc record), as in etcd: a record that is valid on
    its own but does not belong here (a block from an older file, a segment
    replaced by another member's) fails the check, and a lost or reordered
    segment shows as a broken chain. A reader can start at any segment: the
    chain restarts from the value its crc record states. (That record's crc
    is not seeded with the value it carries: crc32(x, seed=x) is the same
    for every 4-byte x, so a damaged value would go unnoticed.)
  * The header has its own crc so the length can be trusted before the
    payload is read. That is what separates a torn tail (intact header,
    payload cut short by end of file) from a corrupted length in the middle,
    which would otherwise look like a record running past the end of file.
  * zlib.crc32 (IEEE) rather than etcd's CRC-32C: it is in the standard
    library and runs in C at well over 1 GB/s; etcd picked Castagnoli for
    its x86 instruction. Both catch every burst of up to 32 bits and miss
    random damage with probability 2**-32 per record.
  * 8-byte alignment: after damage the reader looks for a later valid
    header at aligned offsets only (see below), one in 8 positions.
  * save() writes all records of a call with one write(), entries before
    the hard state, then one fdatasync. If the write tears, whatever of it
    survives is a prefix, so a surviving hard state's commit index never
    points past entries that were lost with it.

Reading, and what a reader does with a torn tail. Segments are read in order
from the one open() starts at (the last whose index <= the snapshot index) to
the newest. Damage at offset X is: a header shorter than 16 bytes, a header
crc mismatch, a payload or padding cut short by the end of the file, a
record crc mismatch. Then:
  * if X is in the newest segment and no valid record header can be found
    after the damaged record (the rest is end of file, zeros, or bytes in
    which no 8-aligned header passes its crc), it is a torn tail: the last
    write never completed, so nothing from X on was acknowledged. open()
    truncates the segment to X, fsyncs it, logs a warning and reports it in
    ReplayResult.torn.
  * otherwise (damage in an older segment, or a valid record after it) open()
    raises WALCorruptError naming the file and X. So does a header that
    passes its crc but makes no sense (unknown type, wrong pad), non-zero
    padding, a broken crc chain, a payload that does not parse, a gap in the
    entry indexes. Nothing is ever skipped silently.
  Cutting a file exactly at a record boundary cannot be told from a shorter
  log; every other truncation of the newest segment reads as a torn tail.

Replay keeps the last hard state read and the entries after the snapshot
index; an entry at index i replaces the entry i read before it and everything
after it (Raft truncates a conflicting suffix by writing it again).
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from google.protobuf.message import DecodeError

from engine.proto import raft_pb2 as raftpb
from engine.wal import record as rec
from engine.wal.errors import (
    WALCorruptError,
    WALExistsError,
    WALFailedError,
    WALLockedError,
    WALNotFoundError,
    WALSnapshotMismatchError,
    WALSnapshotNotFoundError,
)
from engine.wal.fsutil import fdatasync, fsync_dir, make_private, makedirs_durable, write_all, write_file_atomic
from engine.wal.record import RecordType, TornTail
from engine.wal.segments import (
    Segment,
    has_segments,
    list_segments,
    read_segments,
    remove_temp_files,
    segment_name,
    start_segment,
)

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 << 20

# Called with the seconds each WAL fdatasync took (etcd's
# etcd_disk_wal_fsync_duration_seconds; engine/http sets it), from the
# thread that writes. None: not measured.
fsync_observer: Callable[[float], None] | None = None


@dataclass
class ReplayResult:
    metadata: bytes
    hard_state: raftpb.HardState
    entries: list[raftpb.Entry] = field(default_factory=list)
    torn: TornTail | None = None  # what open() cut off the newest segment, if anything


class WAL:
    """An open WAL, positioned for appending. Not thread-safe: one owner.

    Holds an exclusive flock on the directory until close(), so a second
    raftnode pointed at the same --data-dir fails fast instead of
    interleaving writes.
    """

    def __init__(
        self,
        wal_dir: str,
        *,
        dir_fd: int,
        fd: int,
        segments: list[Segment],
        offset: int,
        crc: int,
        metadata: bytes,
        hard_state: bytes,
        last_index: int,
        segment_bytes: int,
    ) -> None:
        # Use WAL.create / WAL.open; this only assembles the state they found.
        self._dir = wal_dir
        self._dir_fd = dir_fd
        self._fd: int | None = fd
        self._segments = segments  # Invariant: the last one is the file _fd appends to.
        self._offset = offset  # Invariant: == size of the newest segment on disk.
        self._crc = crc  # chain value after the last record written
        self._metadata = metadata
        self._hard_state = hard_state  # last saved, serialized: restated at each cut
        self._last_index = last_index  # index of the last entry written: names the next cut
        self._failed: BaseException | None = None
        self.segment_bytes = segment_bytes

    # -- opening ---------------------------------------------------------

    @staticmethod
    def exists(wal_dir: str | os.PathLike) -> bool:
        return has_segments(wal_dir)

    @classmethod
    def create(
        cls, wal_dir: str | os.PathLike, metadata: bytes, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> WAL:
        """Start a new WAL in `wal_dir` (created if missing). Refuses with
        WALExistsError if the directory already holds segments."""
        wal_dir = os.fspath(wal_dir)
        makedirs_durable(wal_dir)
        dir_fd = _lock(wal_dir)
        try:
            if has_segments(wal_dir):
                raise WALExistsError(f"{wal_dir}: a WAL already exists")
            remove_temp_files(wal_dir)
            parts: list[bytes] = []
            crc = rec.encode(parts, RecordType.CRC, rec.crc_payload(0), 0)
            crc = rec.encode(parts, RecordType.METADATA, metadata, crc)
            crc = rec.encode(parts, RecordType.SNAPSHOT, rec.snapshot_payload(0, 0), crc)
            data = b"".join(parts)
            path = os.path.join(wal_dir, segment_name(0, 0))
            fd = write_file_atomic(path, data, keep_open=True)
        except BaseException:
            os.close(dir_fd)
            raise
        return cls(
            wal_dir,
            dir_fd=dir_fd,
            fd=fd,
            segments=[Segment(0, 0, path)],
            offset=len(data),
            crc=crc,
            metadata=bytes(metadata),
            hard_state=b"",
            last_index=0,
            segment_bytes=segment_bytes,
        )

    @classmethod
    def open(
        cls,
        wal_dir: str | os.PathLike,
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> tuple[WAL, ReplayResult]:
        """Replay the WAL from the snapshot at snapshot_index/snapshot_term
        (0/0: from the beginning) and position it for appending.

        Raises WALNotFoundError (no WAL), WALSnapshotNotFoundError (the
        segments or the marker for that snapshot are gone),
        WALSnapshotMismatchError (marker with another term),
        WALCorruptError (damage other than a torn tail), WALLockedError.
        """
        wal_dir = os.fspath(wal_dir)
        if not has_segments(wal_dir):
            raise WALNotFoundError(f"{wal_dir}: no WAL segments")
        dir_fd = _lock(wal_dir)
        fd = None
        try:
            remove_temp_files(wal_dir)
            segs = list_segments(wal_dir)
            make_private(wal_dir)
            for seg in segs:
                make_private(seg.path)
            start = start_segment(segs, snapshot_index)
            if start is None:
                raise WALSnapshotNotFoundError(
                    f"{wal_dir}: no segment covers snapshot index {snapshot_index} (oldest is {segs[0].name})"
                )
            segs = segs[start:]
            replay = _Replay(snapshot_index, snapshot_term)
            last = None
            for seg, scanned in read_segments(segs):
                replay.feed(seg, scanned.records)
                if scanned.error is not None:
                    raise scanned.error
                last = scanned
            if not replay.found_snapshot:
                raise WALSnapshotNotFoundError(
                    f"{wal_dir}: no marker for snapshot {snapshot_index}/{snapshot_term} in {segs[0].name} or later"
                )
            # Segments are fsynced before they get their names, so these can
            # only be missing if the disk lost acknowledged writes.
            if not last.records:
                raise WALCorruptError(segs[-1].path, 0, "the newest segment lost its header records")
            if replay.metadata is None:
                raise WALCorruptError(segs[0].path, 0, "no metadata record")
            fd = os.open(segs[-1].path, os.O_WRONLY | os.O_APPEND)
            if last.torn is not None:
                log.warning(
                    "WAL %s: torn tail at byte %d (%s): truncating %d bytes",
                    last.torn.path, last.torn.offset, last.torn.reason, last.torn.dropped,
                )
                os.ftruncate(fd, last.end)
                os.fsync(fd)
        except BaseException:
            if fd is not None:
                os.close(fd)
            os.close(dir_fd)
            raise
        wal = cls(
            wal_dir,
            dir_fd=dir_fd,
            fd=fd,
            segments=segs,
            offset=last.end,
            crc=last.crc,
            metadata=replay.metadata,
            hard_state=replay.hard_state.SerializeToString(),
            last_index=replay.last_index,
            segment_bytes=segment_bytes,
        )
        return wal, ReplayResult(replay.metadata, replay.hard_state, replay.entries, last.torn)

    @staticmethod
    def snapshot_markers(wal_dir: str | os.PathLike) -> list[tuple[int, int]]:
        """(index, term) of every snapshot marker in the WAL, oldest first,
        without locking or repairing anything. The host uses it to pick the
        newest snapshot file the WAL can continue from (etcd's
        ValidSnapshotEntries): a snapshot file written just before a crash,
        whose marker never made it, must not be used."""
        markers = []
        for _seg, scanned in read_segments(list_segments(wal_dir)):
            for r in scanned.records:
                if r.type == RecordType.SNAPSHOT:
                    markers.append(rec.parse_snapshot_payload(r.payload))
            if scanned.error is not None:
                raise scanned.error
        return markers

    # -- writing ---------------------------------------------------------

    def save(self, hard_state: raftpb.HardState | None, entries: Sequence[raftpb.Entry],
             sync: bool = True) -> None:
        """Append `entries` then `hard_state` (None or all-zero: not written)
        with one write and one fdatasync; nothing to write, no fsync. Cuts a
        new segment afterwards if this one reached segment_bytes.

        sync=False writes without the fdatasync, for a Ready whose only
        change is the commit index (raft's MustSync is false): a commit
        index lost in a crash is learned again from the leader, and the
        next synced save makes this write durable too. Entries, terms and
        votes must always be synced."""
        self._check_usable()
        parts: list[bytes] = []
        crc = self._crc
        encode = rec.encode
        for e in entries:
            crc = encode(parts, RecordType.ENTRY, e.SerializeToString(), crc)
        hs = None
        if hard_state is not None and (hard_state.term or hard_state.vote or hard_state.commit):
            hs = hard_state.SerializeToString()
            crc = encode(parts, RecordType.HARD_STATE, hs, crc)
        if not parts:
            return
        if entries and not sync:
            raise ValueError("entries are always synced")
        self._append(parts, crc, sync)
        if entries:
            self._last_index = entries[-1].index
        if hs is not None:
            self._hard_state = hs
        if self._offset >= self.segment_bytes:
            self._cut()

    def save_snapshot(self, index: int, term: int) -> None:
        """Record that a snapshot at index/term exists (fsynced). Write the
        snapshot file first: the marker promises the file is there."""
        self._check_usable()
        parts: list[bytes] = []
        crc = rec.encode(parts, RecordType.SNAPSHOT, rec.snapshot_payload(index, term), self._crc)
        self._append(parts, crc)
        self._last_index = max(self._last_index, index)
        if self._offset >= self.segment_bytes:
            self._cut()

    def release_to(self, index: int) -> list[str]:
        """Delete the segments wholly before the one holding `index` (the one
        open() would start from for a snapshot at `index`); returns their
        paths. Call after the snapshot at `index` and its marker are saved.
        Oldest first, so a crash half-way leaves a consecutive run."""
        self._check_usable()
        pos = start_segment(self._segments, index)
        if not pos:
            return []
        removed = self._segments[:pos]
        for seg in removed:
            os.unlink(seg.path)
        fsync_dir(self._dir)
        del self._segments[:pos]
        return [seg.path for seg in removed]

    def close(self) -> None:
        """Every save() was already fsynced: closing only lets go of the
        files and the directory lock. Idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            os.close(self._dir_fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- introspection ---------------------------------------------------

    @property
    def dir(self) -> str:
        return self._dir

    @property
    def segments(self) -> list[str]:
        return [seg.path for seg in self._segments]

    @property
    def last_index(self) -> int:
        return self._last_index

    # -- internals -------------------------------------------------------

    def _check_usable(self) -> None:
        if self._fd is None:
            raise ValueError("WAL is closed")
        if self._failed is not None:
            raise WALFailedError(f"{self._dir}: an earlier write failed: {self._failed}") from self._failed

    def _append(self, parts: list[bytes], crc: int, sync: bool = True) -> None:
        data = b"".join(parts)
        try:
            write_all(self._fd, data)
            if sync:
                t0 = time.perf_counter()
                fdatasync(self._fd)
                if fsync_observer is not None:
                    fsync_observer(time.perf_counter() - t0)
        except OSError as exc:
            self._failed = exc
            raise WALFailedError(f"{self._segments[-1].path}: write failed: {exc}") from exc
        self._offset += len(data)
        self._crc = crc

    def _cut(self) -> None:
        """Continue in a new segment that starts complete with its header
        records (crc, metadata, hard state), made durable before use."""
        seq = self._segments[-1].seq + 1
        first = self._last_index + 1
        path = os.path.join(self._dir, segment_name(seq, first))
        parts: list[bytes] = []
        crc = rec.encode(parts, RecordType.CRC, rec.crc_payload(self._crc), self._crc)
        crc = rec.encode(parts, RecordType.METADATA, self._metadata, crc)
        crc = rec.encode(parts, RecordType.HARD_STATE, self._hard_state, crc)
        data = b"".join(parts)
        try:
            fd = write_file_atomic(path, data, keep_open=True)
        except OSError as exc:
            self._failed = exc
            raise WALFailedError(f"{path}: cutting a new segment failed: {exc}") from exc
        os.close(self._fd)
        self._fd = fd
        self._segments.append(Segment(seq, first, path))
        self._offset = len(data)
        self._crc = crc
        log.info("WAL: cut segment %s", os.path.basename(path))


class _Replay:
    """Folds the records of the segments read into a ReplayResult's parts."""

    def __init__(self, snapshot_index: int, snapshot_term: int) -> None:
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.metadata: bytes | None = None
        self.hard_state = raftpb.HardState()
        self.entries: list[raftpb.Entry] = []
        self.last_index = snapshot_index
        self.found_snapshot = False

    def feed(self, seg: Segment, records: list[rec.Record]) -> None:
        snap_index = self.snapshot_index
        ents = self.entries
        for r in records:
            t = r.type
            if t == RecordType.ENTRY:
                e = raftpb.Entry()
                _parse(e, r, seg)
                self.last_index = e.index
                if e.index > snap_index:
                    pos = e.index - snap_index - 1
                    if pos > len(ents):
                        raise WALCorruptError(
                            seg.path, r.offset, f"entry {e.index} follows entry {snap_index + len(ents)}: gap in the log"
                        )
                    del ents[pos:]
                    ents.append(e)
            elif t == RecordType.HARD_STATE:
                hs = raftpb.HardState()
                _parse(hs, r, seg)
                self.hard_state = hs
            elif t == RecordType.SNAPSHOT:
                index, term = rec.parse_snapshot_payload(r.payload)
                if index == snap_index:
                    if term != self.snapshot_term:
                        raise WALSnapshotMismatchError(
                            f"{seg.path}: offset {r.offset}: snapshot {index} has term {term} in the WAL, "
                            f"{self.snapshot_term} was given"
                        )
                    self.found_snapshot = True
                self.last_index = max(self.last_index, index)
            elif t == RecordType.METADATA:
                if self.metadata is None:
                    self.metadata = r.payload
                elif r.payload != self.metadata:
                    raise WALCorruptError(seg.path, r.offset, "metadata differs from the earlier segments'")


def _parse(msg, r: rec.Record, seg: Segment) -> None:
    try:
        msg.ParseFromString(r.payload)
    except DecodeError as exc:
        raise WALCorruptError(seg.path, r.offset, f"{type(msg).__name__} does not parse: {exc}") from exc


def _lock(wal_dir: str) -> int:
    fd = os.open(wal_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WALLockedError(f"{wal_dir}: WAL is in use (locked by another WAL object or process)") from None
    return fd
