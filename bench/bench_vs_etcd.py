"""raftnode vs real etcd, side by side on this machine: same client, same workload.

    python bench/bench_vs_etcd.py                       # defaults below
    python bench/bench_vs_etcd.py --ops 5000 --clients 16 --check-perf s,m
    python bench/bench_vs_etcd.py --only raftnode --check-perf none

For each system in turn (never both at once: they would share the CPUs) it
starts a fresh 3-member cluster on free 127.0.0.1 ports with data in a
temporary directory (bench/cluster.py: the real etcd from /usr/bin, raftnode =
`python -m engine`), runs the workloads, and stops the cluster by PID:

  put        --ops puts of --value-size bytes, --clients concurrent clients,
             spread over the three endpoints (as clientv3 does), grpc.aio
  range-l    --ops linearizable single-key Range calls, same concurrency
  range-s    --ops serializable single-key Range calls
  watch      --watchers watch streams on one prefix; --ops/4 puts by
             --clients writers; events/s delivered over all streams and the
             put-sent -> event-received latency
  check perf `etcdctl check perf --load=<l>` for each level in --check-perf
             (60 s each), its verdict lines parsed

and prints one table with both systems and the raftnode/etcd ratio. The
client is one Python process (asyncio, grpc.aio): it is the same for both,
and for real etcd it is often the bottleneck, so etcd's figures here are a
floor and the ratios are flattering to raftnode where etcd is client-bound.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import grpc  # noqa: E402

from bench.cluster import etcdctl, etcdctl_binary, start_cluster  # noqa: E402
from engine.cli.launch import etcd_binary  # noqa: E402
from engine.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402


# ---------------------------------------------------------------------------- stats

def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def summary(n: int, elapsed: float, lat: list[float]) -> dict:
    lat = sorted(lat)
    return {"ops": n, "per_s": n / elapsed if elapsed > 0 else 0.0,
            "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000, "errors": 0}


# ---------------------------------------------------------------------------- workloads

async def _run_ops(endpoints: list[str], clients: int, ops: int, make_call) -> dict:
    """`clients` tasks share `ops` calls; client c uses endpoint c % len(endpoints)."""
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    lat: list[float] = []
    errors = 0
    counter = iter(range(ops))

    async def client(c: int) -> None:
        nonlocal errors
        stub = stubs[c % len(stubs)]
        for i in counter:
            t0 = time.perf_counter()
            try:
                await make_call(stub, i)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - t0
    finally:
        for ch in channels:
            await ch.close()
    out = summary(len(lat), elapsed, lat)
    out["errors"] = errors
    return out


async def bench_put(endpoints, clients, ops, value: bytes) -> dict:
    async def call(stub, i):
        await stub.Put(rpc_pb2.PutRequest(key=b"bench/%08d" % i, value=value), timeout=10)
    return await _run_ops(endpoints, clients, ops, call)


async def bench_range(endpoints, clients, ops, keys: int, serializable: bool) -> dict:
    async def call(stub, i):
        await stub.Range(rpc_pb2.RangeRequest(key=b"bench/%08d" % (i % keys), serializable=serializable),
                         timeout=10)
    return await _run_ops(endpoints, clients, ops, call)


async def bench_watch(endpoints, clients, puts: int, watchers: int) -> dict:
    """`watchers` streams on prefix watch/, `puts` puts; events carry their send time."""
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    lat: list[float] = []
    received = [0] * watchers
    done = asyncio.Event()
    created = [asyncio.Event() for _ in range(watchers)]
    calls = []

    async def watcher(w: int) -> None:
        stub = rpc_pb2_grpc.WatchStub(channels[w % len(channels)])
        req_q: asyncio.Queue = asyncio.Queue()
        await req_q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
            key=b"watch/", range_end=b"watch0")))

        async def reqs():
            while True:
                yield await req_q.get()
        call = stub.Watch(reqs(), metadata=(("hasleader", "true"),))
        calls.append(call)
        async for resp in call:
            if resp.created:
                created[w].set()
            now = time.perf_counter()
            for ev in resp.events:
                lat.append(now - float(ev.kv.value))
            received[w] += len(resp.events)
            if sum(received) >= puts * watchers:
                done.set()

    tasks = [asyncio.create_task(watcher(w)) for w in range(watchers)]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in created)), 20)
        kv = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
        counter = iter(range(puts))

        async def writer(c: int) -> None:
            stub = kv[c % len(kv)]
            for i in counter:
                await stub.Put(rpc_pb2.PutRequest(key=b"watch/%08d" % i,
                                                  value=repr(time.perf_counter()).encode()), timeout=10)
        t0 = time.perf_counter()
        await asyncio.gather(*(writer(c) for c in range(clients)))
        await asyncio.wait_for(done.wait(), 60)
        elapsed = time.perf_counter() - t0
    finally:
        for c in calls:
            c.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ch in channels:
            await ch.close()
    return summary(len(lat), elapsed, lat)


def check_perf(endpoints: list[str], load: str) -> dict:
    r = etcdctl(endpoints, "check", "perf", f"--load={load}", timeout=400)
    text = r.stdout
    lines = [ln.strip() for ln in re.split(r"[\r\n]", text)
             if re.match(r"\s*(PASS|FAIL|Throughput|Slowest|Stddev)", ln)]
    m = re.search(r"Throughput (?:is|too low: )?\s*(\d+) writes/s", text)
    s = re.search(r"Slowest request took (?:too long: )?([0-9.]+)s", text)
    d = re.search(r"Stddev (?:is|too high: )?\s*([0-9.]+)s", text)
    return {"load": load, "passed": bool(lines) and lines[-1] == "PASS", "lines": lines,
            "writes_per_s": int(m.group(1)) if m else None,
            "slowest_s": float(s.group(1)) if s else None,
            "stddev_s": float(d.group(1)) if d else None, "stderr": r.stderr[-500:]}


# ---------------------------------------------------------------------------- driver

def start(kind: str, workdir: str):
    return start_cluster(kind, os.path.join(workdir, kind), size=3, fault_injection=False)


def run_system(kind: str, args) -> dict:
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-", dir=args.dir) as d:
        t0 = time.monotonic()
        cluster = start(kind, d)
        try:
            res["startup_s"] = time.monotonic() - t0
            eps = cluster.endpoints
            value = b"v" * args.value_size
            print(f"[{kind}] put x{args.ops} ...", file=sys.stderr, flush=True)
            res["put"] = asyncio.run(bench_put(eps, args.clients, args.ops, value))
            print(f"[{kind}] range-l / range-s x{args.ops} ...", file=sys.stderr, flush=True)
            res["range-l"] = asyncio.run(bench_range(eps, args.clients, args.ops, args.ops, False))
            res["range-s"] = asyncio.run(bench_range(eps, args.clients, args.ops, args.ops, True))
            if args.watchers:
                print(f"[{kind}] watch {args.watchers} streams x {args.ops // 4} puts ...", file=sys.stderr, flush=True)
                res["watch"] = asyncio.run(bench_watch(eps, args.clients, args.ops // 4, args.watchers))
            for load in args.check_perf:
                print(f"[{kind}] etcdctl check perf --load={load} (60 s) ...", file=sys.stderr, flush=True)
                res[f"check-{load}"] = check_perf(eps, load)
        finally:
            cluster.stop()
    return res


def fmt_num(v, digits=0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:
        return "-"
    return f"{v:,.{digits}f}"


def ratio(a, b) -> str:
    if a is None or b is None or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}"


def report(results: dict, args) -> str:
    kinds = [k for k in ("etcd", "raftnode") if k in results]
    e, r = results.get("etcd", {}), results.get("raftnode", {})
    lines = ["| workload | metric | etcd | raftnode | raftnode/etcd |", "|---|---|---:|---:|---:|"]

    def row(work, metric, ev, rv, digits=0):
        lines.append(f"| {work} | {metric} | {fmt_num(ev, digits)} | {fmt_num(rv, digits)} | {ratio(rv, ev)} |")

    names = {"put": "writes/s", "range-l": "reads/s (linearizable)", "range-s": "reads/s (serializable)",
             "watch": "events/s delivered"}
    for w in ("put", "range-l", "range-s", "watch"):
        if w not in e and w not in r:
            continue
        ew, rw = e.get(w, {}), r.get(w, {})
        row(w, names[w], ew.get("per_s"), rw.get("per_s"))
        row(w, "p50 ms", ew.get("p50_ms"), rw.get("p50_ms"), 2)
        row(w, "p99 ms", ew.get("p99_ms"), rw.get("p99_ms"), 2)
        if ew.get("errors") or rw.get("errors"):
            row(w, "errors", ew.get("errors"), rw.get("errors"))
    for load in args.check_perf:
        k = f"check-{load}"
        ec, rc = e.get(k, {}), r.get(k, {})
        verdict = lambda c: ("PASS" if c.get("passed") else "FAIL") if c else "-"  # noqa: E731
        lines.append(f"| check perf --load={load} | verdict | {verdict(ec)} | {verdict(rc)} | |")
        row(f"check perf --load={load}", "writes/s", ec.get("writes_per_s"), rc.get("writes_per_s"))
        row(f"check perf --load={load}", "slowest s", ec.get("slowest_s"), rc.get("slowest_s"), 3)
        row(f"check perf --load={load}", "stddev s", ec.get("stddev_s"), rc.get("stddev_s"), 3)
    lines.append(f"| (cluster) | start-up s | {fmt_num(e.get('startup_s'), 1)} | {fmt_num(r.get('startup_s'), 1)} | |")
    head = (f"# 3 members each, {args.clients} clients, {args.ops} ops/workload, {args.value_size} B values, "
            f"{args.watchers} watch streams; systems run one after the other; {', '.join(kinds)}")
    out = [head, *lines]
    for k in kinds:
        for load in args.check_perf:
            c = results[k].get(f"check-{load}")
            if c:
                out.append(f"# {k} check perf --load={load}: " + " / ".join(c["lines"]))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--watchers", type=int, default=4)
    ap.add_argument("--check-perf", default="s,m", help="comma-separated loads (s,m,l,xl) or 'none'")
    ap.add_argument("--only", choices=["etcd", "raftnode"], help="run one system only")
    ap.add_argument("--dir", default=None, help="parent of the temporary data dirs (default: $TMPDIR)")
    args = ap.parse_args(argv)
    args.check_perf = [] if args.check_perf in ("", "none") else args.check_perf.split(",")
    if etcd_binary() is None or etcdctl_binary() is None:
        print("etcd/etcdctl not installed (Debian: etcd-server, etcd-client)", file=sys.stderr)
        return 2
    ver = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True).stdout
    ver = (re.search(r"etcd Version: (\S+)", ver) or re.search(r"(\S+)", ver or "?"))
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"etcd {ver.group(1) if ver else '?'}, grpcio {grpc.__version__}", flush=True)
    results = {}
    for kind in ("etcd", "raftnode"):
        if args.only and kind != args.only:
            continue
        results[kind] = run_system(kind, args)
    print(report(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
