"""What Raft persists, opened at start: the newest usable snapshot file, the
WAL replayed after it, and the MemoryStorage the core reads, rebuilt from
both. Also writes what each Ready asks for."""
from __future__ import annotations

import dataclasses
import logging

from engine.proto import raft_pb2 as pb
from engine.raft import MemoryStorage
from engine.wal import WAL, Snapshotter, layout

log = logging.getLogger("engine.server")


@dataclasses.dataclass
class RaftLog:
    wal: WAL
    snapshotter: Snapshotter
    storage: MemoryStorage
    metadata: bytes
    is_new: bool

    def save(self, hard_state: pb.HardState | None, entries, sync: bool = True) -> None:
        """Persist one Ready: one write, one fsync (group commit); no fsync
        when only the commit index changed (sync=False)."""
        if entries or hard_state is not None:
            self.wal.save(hard_state, entries, sync)
        self.remember(hard_state, entries)

    def remember(self, hard_state: pb.HardState | None, entries) -> None:
        """After the WAL has them (save(), or wal.save run elsewhere, e.g. in a
        worker thread): what the core reads, the MemoryStorage, follows."""
        if entries:
            self.storage.append(entries)
        if hard_state is not None:
            self.storage.set_hard_state(hard_state)

    def save_snapshot(self, snap: pb.Snapshot) -> None:
        """A snapshot installed from the leader (its data is already in the
        store): the snap file first, then the WAL marker, then memory."""
        meta_only = pb.Snapshot()
        meta_only.metadata.CopyFrom(snap.metadata)
        self.snapshotter.save(meta_only)
        self.wal.save_snapshot(snap.metadata.index, snap.metadata.term)
        self.storage.apply_snapshot(meta_only)

    def compact(self, applied: int, conf_state: pb.ConfState, keep: int) -> int:
        """Record a snapshot at `applied` (the store is synced by the caller)
        and drop the log before applied - keep. Returns the snapshot index."""
        snap = self.storage.create_snapshot(applied, conf_state, b"")
        self.snapshotter.save(snap)
        self.wal.save_snapshot(applied, snap.metadata.term)
        first = applied - keep
        if first > self.storage.first_index():
            self.storage.compact(first)
        self.wal.release_to(snap.metadata.index)
        self.snapshotter.purge(keep=5)
        return applied

    def close(self) -> None:
        self.wal.close()


def open_raft_log(data_dir: str, metadata: bytes) -> RaftLog:
    """Open the member's raft log, creating it (with `metadata`) if absent."""
    wal_dir = layout.wal_dir(data_dir)
    snapshotter = Snapshotter(layout.snap_dir(data_dir))
    snapshotter.remove_tmp()
    storage = MemoryStorage()
    if not WAL.exists(wal_dir):
        wal = WAL.create(wal_dir, metadata)
        return RaftLog(wal, snapshotter, storage, metadata, True)
    markers = WAL.snapshot_markers(wal_dir)
    snap = snapshotter.load_newest(allowed=markers)
    if snap is not None:
        wal, replay = WAL.open(wal_dir, snap.metadata.index, snap.metadata.term)
        storage.apply_snapshot(snap)
    else:
        wal, replay = WAL.open(wal_dir)
    if replay.torn is not None:
        log.warning("WAL had a torn tail, truncated: %s", replay.torn)
    storage.set_hard_state(replay.hard_state)
    storage.append(replay.entries)
    return RaftLog(wal, snapshotter, storage, replay.metadata, False)
