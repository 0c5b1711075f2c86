"""WAL append throughput with a real fsync per save (group commit).

    python bench/bench_wal.py [--dir DIR] [--seconds 3] [--batches 1,16,256] [--entry-bytes 1024]

Each save() is what the server does per Ready: a batch of entries plus a
hard state, one write, one fdatasync. The "raw" row is the floor the disk
sets: os.write of the same bytes + fdatasync with no framing, no protobuf.
Run it on the filesystem the data directory will live on (--dir): on tmpfs
fsync is free and the figures mean nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.proto import raft_pb2 as pb  # noqa: E402
from engine.wal import WAL  # noqa: E402
from engine.wal.fsutil import fdatasync  # noqa: E402


def bench_wal(root: str, batch: int, entry_bytes: int, seconds: float) -> dict:
    d = tempfile.mkdtemp(dir=root)
    try:
        w = WAL.create(d, b"bench")
        payload = os.urandom(entry_bytes)
        entries = [pb.Entry(term=1, index=i + 1, data=payload) for i in range(batch)]
        state = pb.HardState(term=1, vote=1)
        latencies = []
        next_index = 1
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for i, e in enumerate(entries):  # fresh indexes, not timed: the caller's work
                e.index = next_index + i
            state.commit = next_index - 1
            t0 = time.perf_counter()
            w.save(state, entries)
            latencies.append(time.perf_counter() - t0)
            next_index += batch
        segments = len(w.segments)
        w.close()
    finally:
        shutil.rmtree(d)
    return _row(f"{batch}", batch, entry_bytes, latencies, segments)


def bench_raw(root: str, entry_bytes: int, seconds: float) -> dict:
    fd, path = tempfile.mkstemp(dir=root)
    try:
        data = os.urandom(entry_bytes)
        latencies = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            os.write(fd, data)
            fdatasync(fd)
            latencies.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return _row("raw 1", 1, entry_bytes, latencies, 1)


def _row(name: str, batch: int, entry_bytes: int, latencies: list[float], segments: int) -> dict:
    total = sum(latencies)
    saves = len(latencies)
    q = statistics.quantiles(latencies, n=100) if saves >= 2 else [latencies[0]] * 99
    return {
        "batch": name,
        "saves/s": saves / total,
        "entries/s": saves * batch / total,
        "MiB/s": saves * batch * entry_bytes / total / (1 << 20),
        "p50 ms": q[49] * 1e3,
        "p99 ms": q[98] * 1e3,
        "saves": saves,
        "segments": segments,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where to write (default: the temp dir)")
    p.add_argument("--seconds", type=float, default=3.0, help="time per batch size")
    p.add_argument("--batches", default="1,16,256")
    p.add_argument("--entry-bytes", type=int, default=1024)
    args = p.parse_args(argv)

    rows = [bench_raw(args.dir, args.entry_bytes, args.seconds)]
    for batch in (int(b) for b in args.batches.split(",")):
        rows.append(bench_wal(args.dir, batch, args.entry_bytes, args.seconds))

    cols = ["batch", "saves/s", "entries/s", "MiB/s", "p50 ms", "p99 ms", "saves", "segments"]
    print(f"# WAL save() with fdatasync, {args.entry_bytes}-byte entries, {args.seconds:g} s per row, dir={args.dir}")
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---:" for _ in cols) + "|")
    for r in rows:
        cells = [r["batch"]] + [
            f"{r[c]:,.0f}" if c in ("saves/s", "entries/s", "saves", "segments") else f"{r[c]:.2f}" for c in cols[1:]
        ]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
