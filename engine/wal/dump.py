"""raftnode dump-logs: print a member's WAL one record per line (etcd-dump-logs).

    python -m engine.wal.dump <data-dir> [--start-index N] [--end-index N]
                              [--entry-type normal,confchange,hardstate,snapshot,metadata,crc]

Output, one line per record (lines starting with "#" are commentary):

    type        term    index  data
    normal         2        5  put key="foo" value="bar" lease=0
    hardstate      2        -  vote=1 commit=5

It only reads: no lock is taken and a torn tail is reported, not truncated,
so it can be pointed at the data directory of a running member. The index
filters apply to entries and snapshot markers; the other records carry no
index and are shown when their type is selected.

What an entry's data means is not the WAL's business: `raftnode dump-logs`
passes engine/api/entry_text.entry_text (the requests decoded); run alone,
this module shows an entry's data as its size and hex.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from google.protobuf.message import DecodeError

from engine.proto import raft_pb2 as raftpb
from engine.wal import layout
from engine.wal.describe import hex_bytes
from engine.wal.errors import WALError
from engine.wal.record import RecordType, Record, parse_snapshot_payload
from engine.wal.segments import has_segments, list_segments, read_segments
from engine.wal.snap import Snapshotter

TYPES = ("normal", "confchange", "hardstate", "snapshot", "metadata", "crc")


DescribeEntry = Callable[[raftpb.Entry], str]


def entry_bytes(e: raftpb.Entry) -> str:
    """An entry's data as the WAL knows it: its size and bytes."""
    return f"{len(e.data)} bytes {hex_bytes(e.data)}" if e.data else "empty"


def main(argv: list[str] | None = None, describe: DescribeEntry = entry_bytes) -> int:
    """dump-logs; `describe` gives the data column of an entry."""
    args = _parser().parse_args(argv)
    wal_dir = layout.wal_dir(args.data_dir)
    if not has_segments(wal_dir):
        if not has_segments(args.data_dir):
            print(f"dump-logs: no WAL in {wal_dir}", file=sys.stderr)
            return 1
        wal_dir = args.data_dir  # pointed straight at a wal directory
    try:
        return _dump(os.fspath(wal_dir), args, sys.stdout, describe)
    except WALError as exc:  # e.g. a missing segment, found before any record is read
        print(f"dump-logs: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `| head`: the reader has seen enough
        sys.stdout = None
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raftnode dump-logs", description="Print the records of a member's WAL.")
    p.add_argument("data_dir", help="the member's --data-dir (or its member/wal directory)")
    p.add_argument("--start-index", type=int, default=0, help="first entry index shown")
    p.add_argument("--end-index", type=int, default=None, help="last entry index shown")
    p.add_argument(
        "--entry-type",
        type=_types,
        default=frozenset(TYPES),
        help=f"comma-separated record types to show, of {','.join(TYPES)} (default: all)",
    )
    return p


def _types(text: str) -> frozenset[str]:
    chosen = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = chosen - set(TYPES)
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown type(s) {','.join(sorted(unknown))}; choose from {','.join(TYPES)}")
    return chosen


def _dump(wal_dir: str, args, out, describe: DescribeEntry) -> int:
    print(f"# wal: {wal_dir}", file=out)
    snap_dir = os.path.join(os.path.dirname(wal_dir), "snap")
    if os.path.isdir(snap_dir):
        snap = Snapshotter(snap_dir).load_newest(mark_broken=False)
        if snap is not None:
            m = snap.metadata
            print(f"# newest snapshot file: term={m.term} index={m.index} voters={list(m.conf_state.voters)}", file=out)
    print(f"{'type':<10} {'term':>6} {'index':>8}  data", file=out)
    lo, hi = args.start_index, args.end_index
    for seg, scanned in read_segments(list_segments(wal_dir)):
        print(f"# segment {seg.name}", file=out)
        for r in scanned.records:
            kind, term, index, data = _row(r, describe)
            if kind not in args.entry_type:
                continue
            if index is not None and (index < lo or (hi is not None and index > hi)):
                continue
            line = f"{kind:<10} {'-' if term is None else term:>6} {'-' if index is None else index:>8}  {data}"
            print(line.rstrip(), file=out)
        if scanned.torn is not None:
            t = scanned.torn
            print(f"# torn tail at {t.path} offset {t.offset}: {t.reason} ({t.dropped} bytes; opening the WAL truncates them)", file=out)
        if scanned.error is not None:
            out.flush()
            print(f"dump-logs: {scanned.error}", file=sys.stderr)
            return 1
    return 0


def _row(r: Record, describe: DescribeEntry) -> tuple[str, int | None, int | None, str]:
    """-> (type, term, index, data text) of one record."""
    try:
        if r.type == RecordType.ENTRY:
            e = raftpb.Entry()
            e.ParseFromString(r.payload)
            kind = "confchange" if e.type == raftpb.EntryConfChange else "normal"
            return kind, e.term, e.index, describe(e)
        if r.type == RecordType.HARD_STATE:
            hs = raftpb.HardState()
            hs.ParseFromString(r.payload)
            return "hardstate", hs.term, None, f"vote={hs.vote} commit={hs.commit}"
    except DecodeError:
        kind = "hardstate" if r.type == RecordType.HARD_STATE else "normal"
        return kind, None, None, f"undecodable {hex_bytes(r.payload)}"
    if r.type == RecordType.SNAPSHOT:
        index, term = parse_snapshot_payload(r.payload)
        return "snapshot", term, index, ""
    if r.type == RecordType.METADATA:
        return "metadata", None, None, f"{len(r.payload)} bytes {hex_bytes(r.payload)}".rstrip()
    return "crc", None, None, f"{int.from_bytes(r.payload, 'little'):#010x}"


if __name__ == "__main__":
    sys.exit(main())
