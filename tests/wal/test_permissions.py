"""Item 9: WAL segments and snapshot files are 0600 in 0700 directories,
also those an older version left more open (made private when opened)."""
from __future__ import annotations

import os
import stat

from engine.proto import raft_pb2 as raftpb
from engine.wal.snap import Snapshotter
from engine.wal.wal import WAL


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _snapshot(index: int) -> raftpb.Snapshot:
    s = raftpb.Snapshot()
    s.metadata.index = index
    s.metadata.term = 1
    return s


def test_new_and_old_files_are_private(tmp_path):
    wal_dir = tmp_path / "member" / "wal"
    w = WAL.create(str(wal_dir), b"meta")
    w.close()
    snap = Snapshotter(str(tmp_path / "member" / "snap"))
    path = snap.save(_snapshot(5))
    for d in (tmp_path / "member", wal_dir, tmp_path / "member" / "snap"):
        assert mode(d) == 0o700, d
    segs = [wal_dir / n for n in os.listdir(wal_dir)]
    assert segs and all(mode(p) == 0o600 for p in segs)
    assert mode(path) == 0o600
    # As an older version left them: readable by everyone.
    for p in segs + [path]:
        os.chmod(p, 0o644)
    os.chmod(wal_dir, 0o755)
    os.chmod(tmp_path / "member" / "snap", 0o755)
    w, _ = WAL.open(str(wal_dir))
    w.close()
    Snapshotter(str(tmp_path / "member" / "snap"))
    assert mode(wal_dir) == 0o700 and all(mode(p) == 0o600 for p in segs)
    assert mode(tmp_path / "member" / "snap") == 0o700 and mode(path) == 0o600
