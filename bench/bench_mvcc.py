"""MVCC benchmark: apply throughput, read throughput, watch fan-out.

    python bench/bench_mvcc.py [--keys 100000] [--batch 100] [--watchers 1000]

Runs against a real SQLite file in a temporary directory (WAL journal,
synchronous=NORMAL, as the server runs it). Requests are built before the
clock starts: this measures the store, not protobuf construction by a client.
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from engine.mvcc import Applier  # noqa: E402
from engine.proto import internal_pb2, rpc_pb2  # noqa: E402

IR = internal_pb2.InternalRequest


def put_ir(i: int, key: bytes, value: bytes) -> IR:
    return IR(id=i, put=rpc_pb2.PutRequest(key=key, value=value))


def bench_puts(a: Applier, n: int, batch: int, value: bytes) -> float:
    reqs = [put_ir(i + 1, b"key/%08d" % i, value) for i in range(n)]
    idx = a.consistent_index
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        idx += 1
        a.apply_batch(idx, reqs[s:s + batch])
    return n / (time.perf_counter() - t0)


def bench_updates(a: Applier, n: int, batch: int, keys: int, value: bytes) -> float:
    rnd = random.Random(1)
    reqs = [put_ir(i + 1, b"key/%08d" % rnd.randrange(keys), value) for i in range(n)]
    idx = a.consistent_index
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        idx += 1
        a.apply_batch(idx, reqs[s:s + batch])
    return n / (time.perf_counter() - t0)


def bench_ranges(a: Applier, n: int, keys: int, **kw) -> float:
    """n ranges starting at random keys among the first ``keys``."""
    rnd = random.Random(2)
    reqs = []
    for _ in range(n):
        k = b"key/%08d" % rnd.randrange(keys)
        reqs.append(rpc_pb2.RangeRequest(key=k, **kw))
    rng = a.kv.range
    t0 = time.perf_counter()
    for r in reqs:
        rng(r)
    return n / (time.perf_counter() - t0)


def bench_fanout(a: Applier, watchers: int, revisions: int, batch: int, value: bytes,
                 serialize: bool = False) -> tuple[float, float]:
    hub = a.hub
    pending: set = set()
    ws = [hub.watch(b"fan/", b"fan0", notify=lambda w: pending.add(w)) for _ in range(watchers)]
    reqs = [put_ir(i + 1, b"fan/%06d" % (i % 1000), value) for i in range(revisions)]
    idx = a.consistent_index
    delivered = 0
    t0 = time.perf_counter()
    for s in range(0, revisions, batch):
        idx += 1
        a.apply_batch(idx, reqs[s:s + batch])
        # the consumers (one per watch stream in the server) drain
        for w in pending:
            evs = w.take_events()
            delivered += len(evs)
            if serialize:
                # what a watch stream does with them: one WatchResponse each
                resp = rpc_pb2.WatchResponse(watch_id=w.id, events=evs)
                resp.header.revision = w.revision
                resp.SerializeToString()
        pending.clear()
    dt = time.perf_counter() - t0
    assert delivered == watchers * revisions, (delivered, watchers * revisions)
    assert all(w.synced for w in ws)
    for w in ws:
        hub.cancel(w.id)
    return delivered / dt, revisions / dt


def bench_catch_up(a: Applier, watchers: int, since: int) -> float:
    hub = a.hub
    ws = [hub.watch(b"key/", b"key0", start_revision=since) for _ in range(watchers)]
    got = 0
    t0 = time.perf_counter()
    while hub.unsynced_count:
        hub.sync_unsynced(max_events=1000)
        for w in ws:
            got += len(w.take_events())
    dt = time.perf_counter() - t0
    for w in ws:
        hub.cancel(w.id)
    return got / dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--value-size", type=int, default=128)
    p.add_argument("--reads", type=int, default=50_000)
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--fanout-revisions", type=int, default=2000)
    a_ = p.parse_args()
    value = b"v" * a_.value_size
    rows = []
    with tempfile.TemporaryDirectory() as d:
        a = Applier(os.path.join(d, "member", "snap", "db"))
        rows.append((f"put, new keys ({a_.keys:,} keys, batches of {a_.batch})", "puts/s",
                     bench_puts(a, a_.keys, a_.batch, value)))
        rows.append((f"put, updates of random keys (batches of {a_.batch})", "puts/s",
                     bench_updates(a, a_.keys // 2, a_.batch, a_.keys, value)))
        t0 = time.perf_counter()
        a.close()
        a = Applier(os.path.join(d, "member", "snap", "db"))
        reopen = time.perf_counter() - t0
        rows.append((f"open + rebuild index ({a.backend.row_count():,} rows)", "s", reopen))
        rows.append(("range, one key (serializable, local)", "ranges/s", bench_ranges(a, a_.reads, a_.keys)))
        rows.append(("range, one key at an old revision", "ranges/s",
                     bench_ranges(a, a_.reads, a_.keys // 2 - 2, revision=a_.keys // 2)))
        rows.append(("range, 100 keys from a key (limit 100)", "ranges/s",
                     bench_ranges(a, a_.reads // 20, a_.keys, range_end=b"\0", limit=100)))
        rows.append((f"range, count_only over all {a_.keys:,} keys", "ranges/s",
                     bench_ranges(a, 20, 1, range_end=b"\0", count_only=True)))
        ev_s, rev_s = bench_fanout(a, a_.watchers, a_.fanout_revisions, a_.batch, value)
        rows.append((f"watch fan-out, {a_.watchers:,} watchers on a prefix", "events/s", ev_s))
        rows.append(("  (same run) revisions applied", "revs/s", rev_s))
        ev_s, rev_s = bench_fanout(a, a_.watchers, a_.fanout_revisions // 4, a_.batch, value, serialize=True)
        rows.append(("  ... + one WatchResponse serialized per watcher per batch", "events/s", ev_s))
        rows.append(("  (same run) revisions applied", "revs/s", rev_s))
        rows.append((f"watch catch-up, 10 watchers from rev {a_.keys:,} (unsynced)", "events/s",
                     bench_catch_up(a, 10, a_.keys)))
        t0 = time.perf_counter()
        h = a.hash_kv()
        rows.append(("hash_kv over the whole store", "s", time.perf_counter() - t0))
        size = a.db_size()
        t0 = time.perf_counter()
        a.apply_batch(a.consistent_index + 1,
                      [IR(id=1, compaction=rpc_pb2.CompactionRequest(revision=a.current_revision))])
        a.kv.finish_compaction()
        rows.append(("compact at head (index + physical)", "s", time.perf_counter() - t0))
        t0 = time.perf_counter()
        a.defrag()
        rows.append((f"defrag ({size / 2**20:.1f} MiB -> {a.db_size() / 2**20:.1f} MiB)", "s",
                     time.perf_counter() - t0))
        assert h.header.revision == a.current_revision
        a.close()
    print(f"# python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
          f"{platform.machine()}, {os.cpu_count()} cpu, value {a_.value_size} B")
    w = max(len(r[0]) for r in rows)
    print(f"| {'benchmark'.ljust(w)} | {'result':>12} | unit     |")
    print(f"|{'-' * (w + 2)}|{'-' * 14}|----------|")
    for name, unit, v in rows:
        fmt = f"{v:12,.0f}" if unit.endswith("/s") else f"{v:12.3f}"
        print(f"| {name.ljust(w)} | {fmt} | {unit.ljust(8)} |")


if __name__ == "__main__":
    main()
