"""Snapshot files: one raftpb.Snapshot per file in <data-dir>/member/snap.

    name:    %016x-%016x.snap   (term, index of the snapshot)
    bytes:   0   4  magic b"RSN1"
             4   4  zlib.crc32 of the payload, uint32 LE
             8   8  payload length, uint64 LE
             16  -  payload: the serialized raftpb.Snapshot

A file is made by write NAME.tmp + fsync + rename + fsync of the directory,
so a crash leaves either the whole file or an ignorable *.tmp. A file whose
magic, length, CRC, protobuf or name-vs-metadata check fails is renamed to
NAME.broken (kept for a post-mortem, never read again) and load_newest()
falls back to the next older one, as etcd does.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from typing import Iterable

from google.protobuf.message import DecodeError

from engine.proto import raft_pb2 as raftpb
from engine.wal.errors import SnapshotCorruptError
from engine.wal.fsutil import make_private, makedirs_durable, write_file_atomic

log = logging.getLogger(__name__)

_MAGIC = b"RSN1"
_HEADER = struct.Struct("<4sIQ")
_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


def snap_name(term: int, index: int) -> str:
    return f"{term:016x}-{index:016x}.snap"


class Snapshotter:
    def __init__(self, snap_dir: str | os.PathLike) -> None:
        self.dir = os.fspath(snap_dir)
        # Files an older version left readable by others are made private.
        make_private(self.dir)
        for n in self.names():
            make_private(os.path.join(self.dir, n))

    def save(self, snapshot: raftpb.Snapshot) -> str | None:
        """Write `snapshot` durably and return its path. An empty snapshot
        (index 0) is not a snapshot: nothing is written, None returned."""
        meta = snapshot.metadata
        if meta.index == 0:
            return None
        payload = snapshot.SerializeToString()
        makedirs_durable(self.dir)
        path = os.path.join(self.dir, snap_name(meta.term, meta.index))
        write_file_atomic(path, _HEADER.pack(_MAGIC, zlib.crc32(payload), len(payload)) + payload)
        return path

    def names(self) -> list[str]:
        """Snapshot file names, newest first. The index grows with the term,
        so ordering by (term, index), i.e. by name, is ordering by index."""
        try:
            names = [n for n in os.listdir(self.dir) if _NAME.match(n)]
        except FileNotFoundError:
            return []
        return sorted(names, reverse=True)

    def load(self, name: str) -> raftpb.Snapshot:
        """Read and check one file; raises SnapshotCorruptError."""
        path = os.path.join(self.dir, name)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < _HEADER.size:
            raise SnapshotCorruptError(path, f"{len(data)} bytes, shorter than the header")
        magic, crc, length = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise SnapshotCorruptError(path, f"bad magic {magic!r}")
        payload = data[_HEADER.size:]
        if len(payload) != length:
            raise SnapshotCorruptError(path, f"payload is {len(payload)} bytes, header says {length}")
        if zlib.crc32(payload) != crc:
            raise SnapshotCorruptError(path, "crc mismatch")
        snap = raftpb.Snapshot()
        try:
            snap.ParseFromString(payload)
        except DecodeError as exc:
            raise SnapshotCorruptError(path, f"does not parse: {exc}") from exc
        m = _NAME.match(name)
        if m and (int(m[1], 16), int(m[2], 16)) != (snap.metadata.term, snap.metadata.index):
            raise SnapshotCorruptError(
                path, f"holds snapshot {snap.metadata.term}/{snap.metadata.index}, not what its name says"
            )
        return snap

    def load_newest(
        self, allowed: Iterable[tuple[int, int]] | None = None, *, mark_broken: bool = True
    ) -> raftpb.Snapshot | None:
        """The newest snapshot that loads, or None.

        `allowed`: (index, term) pairs (WAL.snapshot_markers()); files not
        among them are passed over, since the WAL cannot continue from them.
        A corrupt file is logged, renamed to .broken (unless mark_broken is
        False, for read-only tools) and the next older file is tried.
        """
        allow = None if allowed is None else {(int(i), int(t)) for i, t in allowed}
        for name in self.names():
            m = _NAME.match(name)
            if allow is not None and (int(m[2], 16), int(m[1], 16)) not in allow:
                continue
            try:
                return self.load(name)
            except SnapshotCorruptError as exc:
                log.warning("skipping snapshot: %s", exc)
                if mark_broken:
                    path = os.path.join(self.dir, name)
                    os.rename(path, path + ".broken")
        return None

    def purge(self, keep: int = 5) -> list[str]:
        """Delete all but the newest `keep` snapshot files; returns the
        deleted paths. keep must be >= 1: the newest is what restart loads."""
        if keep < 1:
            raise ValueError("purge must keep at least one snapshot")
        removed = []
        for name in self.names()[keep:]:
            path = os.path.join(self.dir, name)
            os.unlink(path)
            removed.append(path)
        return removed

    def remove_tmp(self) -> list[str]:
        """Delete *.snap.tmp files a crash left behind (never complete, never
        renamed). Only while nothing is saving: the host calls it at start."""
        removed = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return removed
        for name in names:
            if name.endswith(".snap.tmp"):
                path = os.path.join(self.dir, name)
                os.unlink(path)
                removed.append(path)
        return removed
