"""dump-logs run as a real subprocess over a real data directory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.proto import internal_pb2, rpc_pb2
from engine.proto import raft_pb2 as pb
from engine.wal import WAL, Snapshotter, layout

from .helpers import ent, hs, records, wal_files

ROOT = Path(__file__).resolve().parents[2]


def request(**kw) -> bytes:
    return internal_pb2.InternalRequest(id=1, **kw).SerializeToString()


@pytest.fixture
def data_dir(tmp_path):
    w = WAL.create(layout.wal_dir(tmp_path), b"\x08\x01")
    w.save(hs(2, 1, 0), [ent(1, 2)])  # the new leader's no-op
    w.save(
        hs(2, 1, 1),
        [
            ent(2, 2, request(put=rpc_pb2.PutRequest(key=b"foo", value=b"bar"))),
            ent(3, 2, request(delete_range=rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b"))),
            ent(4, 2, pb.ConfChange(type=pb.ConfChangeAddNode, node_id=3).SerializeToString(), pb.EntryConfChange),
            ent(5, 2, request(lease_grant=rpc_pb2.LeaseGrantRequest(ID=5, TTL=30))),
            ent(6, 2, b"\xde\xad"),
        ],
    )
    w.save_snapshot(3, 2)
    w.save(hs(2, 1, 6), [])
    w.close()
    Snapshotter(layout.snap_dir(tmp_path)).save(pb.Snapshot(metadata=pb.SnapshotMetadata(index=3, term=2)))
    return tmp_path


def dump(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "engine", "dump-logs", *map(str, args)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=60,
    )


def rows(out: str) -> list[tuple[str, str, str, str]]:
    """(type, term, index, data) of every record line."""
    result = []
    for line in out.splitlines()[1:]:
        if line.startswith("#") or line.startswith("type "):
            continue
        kind, term, index, *data = line.split(None, 3)
        result.append((kind, term, index, data[0] if data else ""))
    return result


def test_dump_every_record(data_dir):
    r = dump(data_dir)
    assert r.returncode == 0, r.stderr
    assert "# newest snapshot file: term=2 index=3" in r.stdout
    assert rows(r.stdout) == [
        ("crc", "-", "-", "0x00000000"),
        ("metadata", "-", "-", "2 bytes 0801"),
        ("snapshot", "0", "0", ""),
        ("normal", "2", "1", "empty"),
        ("hardstate", "2", "-", "vote=1 commit=0"),
        ("normal", "2", "2", 'put key="foo" value="bar" lease=0'),
        ("normal", "2", "3", 'delete key="a" range_end="b"'),
        ("confchange", "2", "4", "conf-change add-node node=3"),
        ("normal", "2", "5", "lease-grant id=5 ttl=30"),
        ("normal", "2", "6", "undecodable dead"),
        ("hardstate", "2", "-", "vote=1 commit=1"),
        ("snapshot", "2", "3", ""),
        ("hardstate", "2", "-", "vote=1 commit=6"),
    ]


def test_filters(data_dir):
    r = dump(data_dir, "--start-index", 3, "--end-index", 5, "--entry-type", "normal,confchange")
    assert r.returncode == 0, r.stderr
    assert [(k, i) for k, _, i, _ in rows(r.stdout)] == [("normal", "3"), ("confchange", "4"), ("normal", "5")]

    r = dump(data_dir, "--entry-type", "hardstate")
    assert [d for k, _, _, d in rows(r.stdout)] == ["vote=1 commit=0", "vote=1 commit=1", "vote=1 commit=6"]

    r = dump(data_dir, "--entry-type", "snapshot", "--start-index", 1)
    assert rows(r.stdout) == [("snapshot", "2", "3", "")]

    r = dump(data_dir, "--entry-type", "bogus")
    assert r.returncode == 2 and "bogus" in r.stderr


def test_torn_tail_is_reported_not_repaired(data_dir):
    wal_dir = layout.wal_dir(data_dir)
    path = wal_dir / wal_files(wal_dir)[-1]
    last = records(path)[-1].offset
    os.truncate(path, last + 3)
    r = dump(data_dir)
    assert r.returncode == 0, r.stderr
    assert f"# torn tail at {path} offset {last}: short header" in r.stdout
    assert os.path.getsize(path) == last + 3  # read-only: left as found
    assert rows(r.stdout)[-1] == ("snapshot", "2", "3", "")


def test_corruption_exits_1_after_printing_what_precedes_it(data_dir):
    wal_dir = layout.wal_dir(data_dir)
    path = wal_dir / wal_files(wal_dir)[-1]
    put = records(path)[5]
    data = bytearray(path.read_bytes())
    data[put.offset + 20] ^= 0x01
    path.write_bytes(bytes(data))
    r = dump(data_dir)
    assert r.returncode == 1
    assert str(path) in r.stderr and f"offset {put.offset}" in r.stderr
    assert [i for k, _, i, _ in rows(r.stdout) if k == "normal"] == ["1"]


def test_no_wal(tmp_path):
    r = dump(tmp_path)
    assert r.returncode == 1 and "no WAL" in r.stderr
