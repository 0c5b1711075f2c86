"""Small builders shared by the WAL tests."""
from __future__ import annotations

import os

from engine.proto import raft_pb2 as pb
from engine.wal.record import Record, scan


def ent(index: int, term: int = 1, data: bytes = b"", type: int = pb.EntryNormal) -> pb.Entry:
    return pb.Entry(index=index, term=term, data=data, type=type)


def hs(term: int, vote: int = 0, commit: int = 0) -> pb.HardState:
    return pb.HardState(term=term, vote=vote, commit=commit)


def key(e: pb.Entry) -> tuple:
    return (e.index, e.term, e.type, e.data)


def records(path: str | os.PathLike) -> list[Record]:
    """The records of one intact segment (asserting it is intact)."""
    with open(path, "rb") as f:
        result = scan(f.read(), os.fspath(path), final=True, chain=None)
    assert result.error is None and result.torn is None
    return result.records


def wal_files(wal_dir) -> list[str]:
    return sorted(n for n in os.listdir(wal_dir) if n.endswith(".wal"))
