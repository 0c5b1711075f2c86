"""The stable log the Raft core reads, held in memory.

The core never writes to disk. Its host persists what a Ready asks for (WAL,
snapshot files) and appends the same entries here; on restart the host loads
the newest snapshot and replays the WAL into a fresh MemoryStorage. This is
etcd-io/raft's split between `Storage` and the WAL.
"""
from __future__ import annotations

from engine.proto import raft_pb2 as pb
from engine.raft.errors import (
    CompactedError,
    SnapshotOutOfDateError,
    UnavailableError,
)


def entries_size(entries) -> int:
    return sum(e.ByteSize() for e in entries)


def limit_size(entries: list, max_size: int) -> list:
    """Cut `entries` to at most `max_size` bytes, always keeping the first one
    so that replication makes progress even with a huge entry."""
    if not entries:
        return entries
    size = entries[0].ByteSize()
    for i in range(1, len(entries)):
        size += entries[i].ByteSize()
        if size > max_size:
            return entries[:i]
    return entries


class MemoryStorage:
    """Entries after the last snapshot, the snapshot itself, the hard state.

    Invariant: self._ents[0] is a dummy entry whose index and term are those of
    the last snapshot (0/0 when there is none), so term(snapshot.index) works
    after compaction and the log-matching check at the snapshot boundary holds.
    """

    def __init__(self) -> None:
        self.hard_state = pb.HardState()
        self._snapshot = pb.Snapshot()
        self._ents: list[pb.Entry] = [pb.Entry()]

    # -- what the core reads -------------------------------------------------

    def initial_state(self) -> tuple[pb.HardState, pb.ConfState]:
        return self.hard_state, self._snapshot.metadata.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, i: int) -> int:
        offset = self._ents[0].index
        if i < offset:
            raise CompactedError(i)
        if i - offset >= len(self._ents):
            raise UnavailableError(i)
        return self._ents[i - offset].term

    def entries(self, lo: int, hi: int, max_size: int = 0) -> list[pb.Entry]:
        """Entries [lo, hi), at most max_size bytes (0 = no limit, but >= 1 entry)."""
        offset = self._ents[0].index
        if lo <= offset:
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise UnavailableError(hi)
        ents = self._ents[lo - offset : hi - offset]
        return limit_size(ents, max_size) if max_size else ents

    def snapshot(self) -> pb.Snapshot:
        return self._snapshot

    # -- what the host writes ------------------------------------------------

    def set_hard_state(self, hs: pb.HardState) -> None:
        self.hard_state = pb.HardState(term=hs.term, vote=hs.vote, commit=hs.commit)

    def apply_snapshot(self, snap: pb.Snapshot) -> None:
        """Replace everything with a snapshot received from the leader."""
        if snap.metadata.index <= self._snapshot.metadata.index and self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(snap.metadata.index)
        self._snapshot = snap
        self._ents = [pb.Entry(index=snap.metadata.index, term=snap.metadata.term)]

    def create_snapshot(self, index: int, conf_state: pb.ConfState, data: bytes) -> pb.Snapshot:
        """Record a snapshot of the applied state at `index` (taken by the host)."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDateError(index)
        if index > self.last_index():
            raise UnavailableError(index)
        snap = pb.Snapshot(data=data)
        snap.metadata.index = index
        snap.metadata.term = self.term(index)
        snap.metadata.conf_state.CopyFrom(conf_state)
        self._snapshot = snap
        return snap

    def compact(self, compact_index: int) -> None:
        """Drop entries before compact_index; compact_index becomes the dummy."""
        offset = self._ents[0].index
        if compact_index <= offset:
            raise CompactedError(compact_index)
        if compact_index > self.last_index():
            raise UnavailableError(compact_index)
        i = compact_index - offset
        dummy = pb.Entry(index=self._ents[i].index, term=self._ents[i].term)
        self._ents = [dummy] + self._ents[i + 1 :]

    def append(self, entries) -> None:
        """Append entries, replacing any conflicting suffix (the core has
        already checked that they may replace it)."""
        if not entries:
            return
        first = self.first_index()
        last = entries[-1].index
        if last < first:
            return  # all already compacted away
        if first > entries[0].index:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise UnavailableError(f"missing log entry [last: {self.last_index()}, append at: {entries[0].index}]")
        # In place: the list holds every entry since the last compaction
        # (up to snapshot-count + catch-up entries, ~10^5), so rebuilding it
        # per append was O(log length) per Ready. Nobody holds a reference
        # to it: entries() hands out slices and clone() copies.
        del self._ents[offset:]
        self._ents.extend(entries)

    def clone(self) -> "MemoryStorage":
        """A copy sharing the immutable entries: what survives a simulated crash."""
        c = MemoryStorage()
        c.hard_state = pb.HardState()
        c.hard_state.CopyFrom(self.hard_state)
        c._snapshot = self._snapshot
        c._ents = list(self._ents)
        return c
