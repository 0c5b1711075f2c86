"""WAL round trips on real files: what is saved is what open() replays."""
from __future__ import annotations

import os

import pytest

from engine.proto import raft_pb2 as pb
from engine.wal import (
    WAL,
    WALExistsError,
    WALLockedError,
    WALNotFoundError,
    WALSnapshotMismatchError,
    WALSnapshotNotFoundError,
)
from engine.wal import wal as wal_module
from engine.wal.record import RecordType
from engine.wal.segments import segment_name

from .helpers import ent, hs, key, records, wal_files


class Model:
    """What Raft's log should look like after a sequence of saves: writing
    entry i drops the old i and everything after it."""

    def __init__(self) -> None:
        self.log: list[pb.Entry] = []
        self.hard_state = pb.HardState()

    def save(self, state, entries) -> None:
        for e in entries:
            del self.log[e.index - 1:]
            assert len(self.log) == e.index - 1
            self.log.append(e)
        if state is not None:
            self.hard_state = state

    def after(self, index: int) -> list[tuple]:
        return [key(e) for e in self.log if e.index > index]


def test_create_then_exists_and_refuses_a_second_create(tmp_path):
    d = tmp_path / "member" / "wal"
    assert not WAL.exists(d)
    WAL.create(d, b"node-1").close()
    assert WAL.exists(d)
    assert wal_files(d) == [segment_name(0, 0)] == ["0000000000000000-0000000000000000.wal"]
    with pytest.raises(WALExistsError):
        WAL.create(d, b"node-1")


def test_open_without_a_wal_raises(tmp_path):
    with pytest.raises(WALNotFoundError):
        WAL.open(tmp_path)


def test_round_trip_with_suffix_overwrites(tmp_path):
    model = Model()
    w = WAL.create(tmp_path, b"\x01meta\x00")
    batches = [
        (hs(1, 1, 0), [ent(1, 1), ent(2, 1, b"a"), ent(3, 1, b"b")]),
        (hs(1, 1, 2), []),
        (None, [ent(4, 1, b"c"), ent(5, 1, b"d")]),
        # a new leader's log wins: 4 and 5 go, 4' replaces them
        (hs(2, 3, 3), [ent(4, 2, b"c'")]),
        (hs(2, 3, 4), [ent(5, 2, b"e"), ent(6, 2, b"f", pb.EntryConfChange)]),
        # and again, reaching further back
        (hs(3, 2, 4), [ent(5, 3, b"g")]),
    ]
    for state, entries in batches:
        w.save(state, entries)
        model.save(state, entries)
    w.close()

    w, replay = WAL.open(tmp_path)
    w.close()
    assert replay.metadata == b"\x01meta\x00"
    assert replay.hard_state == hs(3, 2, 4)
    assert [key(e) for e in replay.entries] == model.after(0)
    assert [e.index for e in replay.entries] == [1, 2, 3, 4, 5]
    assert replay.torn is None


def test_reopen_appends_where_it_left_off(tmp_path):
    model = Model()
    w = WAL.create(tmp_path, b"m")
    for i in range(1, 4):
        batch = [ent(i, 1, b"x" * i)]
        w.save(hs(1, 1, i - 1), batch)
        model.save(hs(1, 1, i - 1), batch)
    w.close()
    for round_ in range(3):
        w, replay = WAL.open(tmp_path)
        assert [key(e) for e in replay.entries] == model.after(0)
        nxt = len(model.log) + 1
        batch = [ent(nxt, 2 + round_, b"y"), ent(nxt + 1, 2 + round_, b"z")]
        w.save(hs(2 + round_, 1, nxt), batch)
        model.save(hs(2 + round_, 1, nxt), batch)
        w.close()
    w, replay = WAL.open(tmp_path)
    w.close()
    assert [key(e) for e in replay.entries] == model.after(0)
    assert replay.hard_state == model.hard_state


def test_one_fsync_per_save_and_none_for_an_empty_save(tmp_path, monkeypatch):
    calls = []
    real = wal_module.fdatasync

    def counting(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(wal_module, "fdatasync", counting)
    w = WAL.create(tmp_path, b"m")
    w.save(hs(1, 1, 0), [ent(i) for i in range(1, 101)])
    assert len(calls) == 1
    size = os.path.getsize(w.segments[-1])
    w.save(None, [])
    w.save(pb.HardState(), [])  # all-zero hard state: nothing to persist
    assert len(calls) == 1 and os.path.getsize(w.segments[-1]) == size
    w.save(hs(1, 1, 100), [])
    w.save_snapshot(50, 1)
    assert len(calls) == 3
    # A commit-only hard state may skip the fsync; entries never may.
    w.save(hs(1, 1, 101), [], sync=False)
    assert len(calls) == 3
    with pytest.raises(ValueError):
        w.save(None, [ent(101)], sync=False)
    w.close()
    _, replay = WAL.open(tmp_path)
    assert replay.hard_state.commit == 101


def test_segments_cut_by_size_with_names_and_headers(tmp_path):
    model = Model()
    w = WAL.create(tmp_path, b"meta", segment_bytes=1024)
    for i in range(1, 41):
        batch = [ent(i, 1, bytes([i]) * 100)]
        w.save(hs(1, 1, i - 1), batch)
        model.save(hs(1, 1, i - 1), batch)
    assert w.last_index == 40
    w.close()

    names = wal_files(tmp_path)
    assert len(names) > 3
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    prev_last = 0
    for seq, name in enumerate(names):
        s, first = (int(part, 16) for part in name[:-4].split("-"))
        assert s == seq
        # named after the first index written into it
        rs = records(tmp_path / name)
        first_entry = next(r for r in rs if r.type == RecordType.ENTRY)
        e = pb.Entry.FromString(first_entry.payload)
        assert first == (0 if seq == 0 else prev_last + 1) and (seq == 0 or e.index == first)
        prev_last = pb.Entry.FromString([r for r in rs if r.type == RecordType.ENTRY][-1].payload).index
        # every segment starts complete: crc, metadata, then the snapshot
        # marker (first) or the hard state current at the cut
        assert [r.type for r in rs[:3]] == [
            RecordType.CRC,
            RecordType.METADATA,
            RecordType.SNAPSHOT if seq == 0 else RecordType.HARD_STATE,
        ]
        assert rs[1].payload == b"meta"
        # cut as soon as the size reached segment_bytes: only the newest is smaller
        if seq < len(names) - 1:
            assert os.path.getsize(tmp_path / name) >= 1024

    w, replay = WAL.open(tmp_path)
    w.close()
    assert [key(e) for e in replay.entries] == model.after(0)
    assert replay.hard_state == hs(1, 1, 39)


def test_overwrite_reaching_into_an_older_segment(tmp_path):
    model = Model()
    w = WAL.create(tmp_path, b"m", segment_bytes=600)
    for i in range(1, 21):
        w.save(hs(1, 1, 0), [ent(i, 1, b"x" * 100)])
        model.save(hs(1, 1, 0), [ent(i, 1, b"x" * 100)])
    # entries 5.. are replaced although 5 sits several segments back
    batch = [ent(5, 2, b"new5"), ent(6, 2, b"new6")]
    w.save(hs(2, 2, 4), batch)
    model.save(hs(2, 2, 4), batch)
    for i in range(7, 15):  # enough to cut again: the next name goes back below earlier ones
        w.save(None, [ent(i, 2, b"y" * 100)])
        model.save(None, [ent(i, 2, b"y" * 100)])
    w.save_snapshot(6, 2)
    w.close()
    firsts = [int(n[17:33], 16) for n in wal_files(tmp_path)]
    assert firsts != sorted(firsts)

    w, replay = WAL.open(tmp_path)
    w.close()
    assert [key(e) for e in replay.entries] == model.after(0)
    w, replay = WAL.open(tmp_path, 6, 2)
    w.close()
    assert [key(e) for e in replay.entries] == model.after(6)


def test_snapshot_marker_filters_entries(tmp_path):
    model = Model()
    w = WAL.create(tmp_path, b"m")
    for i in range(1, 11):
        w.save(hs(1, 1, i), [ent(i, 1, b"%d" % i)])
        model.save(hs(1, 1, i), [ent(i, 1, b"%d" % i)])
    w.save_snapshot(7, 1)
    w.save(hs(1, 1, 11), [ent(11, 1)])
    model.save(hs(1, 1, 11), [ent(11, 1)])
    w.close()

    w, replay = WAL.open(tmp_path, snapshot_index=7, snapshot_term=1)
    w.close()
    assert [e.index for e in replay.entries] == [8, 9, 10, 11]
    assert [key(e) for e in replay.entries] == model.after(7)
    assert replay.hard_state == hs(1, 1, 11)
    assert WAL.snapshot_markers(tmp_path) == [(0, 0), (7, 1)]

    with pytest.raises(WALSnapshotMismatchError):
        WAL.open(tmp_path, 7, 2)
    with pytest.raises(WALSnapshotNotFoundError):
        WAL.open(tmp_path, 8, 1)
    # a failed open leaves the directory unlocked
    WAL.open(tmp_path)[0].close()


def test_release_to_removes_segments_before_the_one_holding_the_index(tmp_path):
    model = Model()
    w = WAL.create(tmp_path, b"m", segment_bytes=700)
    for i in range(1, 31):
        w.save(hs(1, 1, i), [ent(i, 1, b"v" * 100)])
        model.save(hs(1, 1, i), [ent(i, 1, b"v" * 100)])
    before = wal_files(tmp_path)
    firsts = [int(n[17:33], 16) for n in before]
    snap = 17
    holding = max(i for i, f in enumerate(firsts) if f <= snap)
    assert holding >= 2  # the test means something: several segments go
    w.save_snapshot(snap, 1)
    removed = w.release_to(snap)
    assert [os.path.basename(p) for p in removed] == before[:holding]
    assert wal_files(tmp_path) == before[holding:]
    assert w.release_to(snap) == []  # idempotent
    assert w.release_to(0) == []
    w.save(hs(1, 1, 31), [ent(31, 1)])
    model.save(hs(1, 1, 31), [ent(31, 1)])
    w.close()

    w, replay = WAL.open(tmp_path, snap, 1)
    w.close()
    assert [key(e) for e in replay.entries] == model.after(snap)
    assert replay.metadata == b"m" and replay.hard_state == hs(1, 1, 31)
    with pytest.raises(WALSnapshotNotFoundError):
        WAL.open(tmp_path)  # the beginning of the log is gone


def test_release_to_never_removes_the_newest_segment(tmp_path):
    w = WAL.create(tmp_path, b"m", segment_bytes=300)
    for i in range(1, 10):
        w.save(None, [ent(i, 1, b"q" * 100)])
    w.save_snapshot(1000, 1)
    w.release_to(1000)
    assert wal_files(tmp_path) == [os.path.basename(w.segments[-1])]
    w.save(None, [ent(10, 1)])
    w.close()
    w, replay = WAL.open(tmp_path, 1000, 1)
    w.close()
    assert replay.entries == []


def test_second_open_is_refused_while_locked(tmp_path):
    w = WAL.create(tmp_path, b"m")
    with pytest.raises(WALLockedError):
        WAL.open(tmp_path)
    w.close()
    w.close()  # idempotent
    with WAL.open(tmp_path)[0]:
        pass


def test_leftover_tmp_segment_is_ignored_and_removed(tmp_path):
    w = WAL.create(tmp_path, b"m")
    w.save(hs(1, 1, 1), [ent(1)])
    w.close()
    stale = tmp_path / (segment_name(1, 2) + ".tmp")
    stale.write_bytes(b"half a segment")
    w, replay = WAL.open(tmp_path)
    w.close()
    assert [e.index for e in replay.entries] == [1]
    assert not stale.exists()
