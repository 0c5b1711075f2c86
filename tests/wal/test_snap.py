"""Snapshot files: newest wins, damage falls back to an older one."""
from __future__ import annotations

import logging
import os

import pytest

from engine.proto import raft_pb2 as pb
from engine.wal import Snapshotter, layout
from engine.wal.errors import SnapshotCorruptError
from engine.wal.snap import snap_name


def snapshot(index: int, term: int, data: bytes = b"state") -> pb.Snapshot:
    return pb.Snapshot(
        data=data,
        metadata=pb.SnapshotMetadata(index=index, term=term, conf_state=pb.ConfState(voters=[1, 2, 3], learners=[4])),
    )


def test_layout_paths(tmp_path):
    assert layout.wal_dir(tmp_path) == tmp_path / "member" / "wal"
    assert layout.snap_dir(tmp_path) == tmp_path / "member" / "snap"
    assert layout.db_path(tmp_path) == tmp_path / "member" / "snap" / "db"


def test_save_and_load_newest(tmp_path):
    s = Snapshotter(layout.snap_dir(tmp_path))
    assert s.load_newest() is None  # no directory yet
    for index, term in ((10, 1), (20, 2), (35, 2)):
        path = s.save(snapshot(index, term, b"at %d" % index))
        assert os.path.basename(path) == snap_name(term, index) == f"{term:016x}-{index:016x}.snap"
    layout.db_path(tmp_path).write_bytes(b"sqlite lives here")  # not a snapshot: ignored
    assert s.load_newest() == snapshot(35, 2, b"at 35")
    assert not [n for n in os.listdir(s.dir) if n.endswith(".tmp")]


def test_empty_snapshot_is_not_written(tmp_path):
    s = Snapshotter(tmp_path)
    assert s.save(pb.Snapshot()) is None
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "wrong-name"])
def test_corrupt_newest_falls_back_to_an_older_one(tmp_path, caplog, damage):
    s = Snapshotter(tmp_path)
    s.save(snapshot(10, 1, b"old"))
    newest = s.save(snapshot(20, 1, b"new" * 100))
    data = bytearray(open(newest, "rb").read())
    if damage == "flip":
        data[-5] ^= 0x40
    elif damage == "truncate":
        del data[-10:]
    elif damage == "empty":
        data = bytearray()
    else:  # a valid file under another snapshot's name
        os.rename(s.save(snapshot(15, 1)), newest)
        data = bytearray(open(newest, "rb").read())
    open(newest, "wb").write(bytes(data))

    with pytest.raises(SnapshotCorruptError) as info:
        s.load(os.path.basename(newest))
    assert newest in str(info.value)
    with caplog.at_level(logging.WARNING, logger="engine.wal.snap"):
        assert s.load_newest() == snapshot(10, 1, b"old")
    assert newest in caplog.text
    assert os.path.exists(newest + ".broken") and not os.path.exists(newest)
    # the next start does not trip over it again
    assert s.load_newest() == snapshot(10, 1, b"old")


def test_read_only_load_leaves_a_broken_file_alone(tmp_path):
    s = Snapshotter(tmp_path)
    s.save(snapshot(10, 1))
    newest = s.save(snapshot(20, 1))
    open(newest, "r+b").write(b"XXXX")
    assert s.load_newest(mark_broken=False).metadata.index == 10
    assert os.path.exists(newest)


def test_tmp_files_left_by_a_crash_are_ignored(tmp_path):
    s = Snapshotter(tmp_path)
    s.save(snapshot(10, 1))
    # a crash between write and rename: newer name, half written
    stale = tmp_path / (snap_name(5, 500) + ".tmp")
    stale.write_bytes(b"RSN1 half")
    assert s.load_newest().metadata.index == 10
    assert s.remove_tmp() == [str(stale)]
    assert not stale.exists()


def test_load_newest_only_among_snapshots_the_wal_knows(tmp_path):
    s = Snapshotter(tmp_path)
    for index in (10, 20, 30):
        s.save(snapshot(index, 1))
    # the crash came after the file for 30 but before its WAL marker
    assert s.load_newest(allowed=[(0, 0), (10, 1), (20, 1)]).metadata.index == 20
    assert s.load_newest(allowed=[(30, 2)]) is None  # term must match too


def test_purge_keeps_the_newest(tmp_path):
    s = Snapshotter(tmp_path)
    for index in (5, 10, 15, 20):
        s.save(snapshot(index, 1))
    removed = s.purge(keep=2)
    assert sorted(os.path.basename(p) for p in removed) == [snap_name(1, 5), snap_name(1, 10)]
    assert s.names() == [snap_name(1, 20), snap_name(1, 15)]
    assert s.purge(keep=2) == []
    with pytest.raises(ValueError):
        s.purge(keep=0)
