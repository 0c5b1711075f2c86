"""The Raft log as the core sees it: stable entries (in Storage) followed by
unstable ones (appended by the core, not yet persisted by the host).

    storage:  [dummy=snapshot] [first_index ............ storage.last_index]
    unstable:                           [offset ....... last_index]   (may overlap
                                                                       and replace the
                                                                       storage's tail)
    applied <= committed <= last_index
"""
from __future__ import annotations

from engine.proto import raft_pb2 as pb
from engine.raft.errors import CompactedError, UnavailableError
from engine.raft.storage import MemoryStorage, limit_size


class Unstable:
    """Entries and a snapshot the host has not yet made durable.

    Invariant: entries[i].index == offset + i; if a snapshot is pending,
    offset == snapshot.metadata.index + 1.
    """

    def __init__(self, offset: int) -> None:
        self.snapshot: pb.Snapshot | None = None
        self.entries: list[pb.Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """The host persisted entries up to (index, term); forget them here,
        unless they were replaced meanwhile by entries of another term."""
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            return
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snap: pb.Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[pb.Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces everything unstable; the host will overwrite the
            # storage's tail from `after` when it persists these.
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + list(ents)

    def slice(self, lo: int, hi: int) -> list[pb.Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    # Invariant: applied <= committed <= last_index(); committed never decreases.

    def __init__(self, storage: MemoryStorage, max_next_ents_size: int = 1 << 62) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything up to the snapshot is both committed and applied.
        self.committed = first - 1
        self.applied = first - 1
        self.max_next_ents_size = max_next_ents_size

    def __repr__(self) -> str:
        return (f"RaftLog(committed={self.committed}, applied={self.applied}, "
                f"unstable.offset={self.unstable.offset}, unstable.len={len(self.unstable.entries)})")

    # -- indexes and terms --------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int | None:
        """Term of entry i; 0 past the last index; None if compacted away."""
        dummy = self.first_index() - 1
        if i < dummy:
            return None
        if i > self.last_index():
            return 0
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        try:
            return self.storage.term(i)
        except CompactedError:
            return None
        except UnavailableError:
            return 0

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None, "the last entry cannot be compacted"
        return t

    def match_term(self, i: int, term: int) -> bool:
        t = self.term(i)
        return t is not None and t == term

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """§5.4.1: the candidate's log is at least as up to date as ours."""
        lt = self.last_term()
        return term > lt or (term == lt and last_index >= self.last_index())

    # -- appending ------------------------------------------------------------

    def maybe_append(self, index: int, log_term: int, committed: int,
                     ents) -> int | None:
        """Follower side of AppendEntries (§5.3). Returns the index of the last
        new entry, or None if the consistency check at (index, log_term) fails."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise AssertionError(f"entry {ci} conflicts with committed entry [committed({self.committed})]")
            self.append(list(ents[ci - (index + 1):]))
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[pb.Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise AssertionError(f"after({after}) is out of range [committed({self.committed})]")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents) -> int:
        """Index of the first entry that is new or conflicts with ours, 0 if none.
        Entries that match are skipped so a duplicated or reordered MsgApp
        never truncates entries we already hold."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, and its term.

        This is the fast-backtracking step (thesis §5.3 and etcd's
        findConflictByTerm): every entry above the answer has a term > `term`,
        so none of them can match the other side's log at or below `index`,
        and a whole run of a term is skipped in one round trip.
        """
        while index > 0:
            t = self.term(index)
            if t is None:  # compacted: the snapshot boundary is the best we know
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- reading entries ------------------------------------------------------

    def slice(self, lo: int, hi: int, max_size: int = 0) -> list[pb.Entry]:
        """Entries [lo, hi) from storage and unstable, limited to max_size bytes."""
        if lo > hi:
            raise AssertionError(f"invalid slice {lo} > {hi}")
        if lo < self.first_index():
            raise CompactedError(lo)
        if hi > self.last_index() + 1:
            raise AssertionError(f"slice[{lo},{hi}) out of bound [{self.first_index()},{self.last_index()}]")
        if lo == hi:
            return []
        ents: list[pb.Entry] = []
        uoff = self.unstable.offset
        if lo < uoff:
            ents = self.storage.entries(lo, min(hi, uoff), max_size)
            if len(ents) < min(hi, uoff) - lo:
                return ents  # cut by size
        if hi > uoff:
            tail = self.unstable.slice(max(lo, uoff), hi)
            ents = list(ents) + tail if ents else list(tail)
        return limit_size(ents, max_size) if max_size else ents

    def entries(self, i: int, max_size: int = 0) -> list[pb.Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def all_entries(self) -> list[pb.Entry]:
        return self.entries(self.first_index())

    def unstable_entries(self) -> list[pb.Entry]:
        return list(self.unstable.entries)

    def has_next_committed_entries(self) -> bool:
        return self.committed > self.applied and self.unstable.snapshot is None

    def next_committed_entries(self) -> list[pb.Entry]:
        """Committed entries not yet handed out for applying. Entries that are
        still unstable may be included: the host persists a Ready's entries
        before it applies its committed entries."""
        if not self.has_next_committed_entries():
            return []
        lo = max(self.applied + 1, self.first_index())
        return self.slice(lo, self.committed + 1, self.max_next_ents_size)

    def snapshot(self) -> pb.Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- moving the marks -----------------------------------------------------

    def commit_to(self, tocommit: int) -> None:
        if self.committed < tocommit:
            if self.last_index() < tocommit:
                raise AssertionError(
                    f"tocommit({tocommit}) is out of range [last_index({self.last_index()})]")
            self.committed = tocommit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        """Figure 8 rule: only an entry of the current term is committed by
        counting replicas; earlier entries are committed with it."""
        if max_index > self.committed and self.term(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i: int) -> None:
        if i == 0:
            return
        if self.committed < i or i < self.applied:
            raise AssertionError(f"applied({i}) is out of range [prev applied({self.applied}), committed({self.committed})]")
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def restore(self, snap: pb.Snapshot) -> None:
        self.committed = snap.metadata.index
        self.unstable.restore(snap)
