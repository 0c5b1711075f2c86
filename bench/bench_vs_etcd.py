"""raftnode vs real etcd, side by side on this machine: same client, same workload.

    python bench/bench_vs_etcd.py                       # defaults below (~20 min)
    python bench/bench_vs_etcd.py --ops 500 --check-perf none --rss-keys 20000   # a quick try
    python bench/bench_vs_etcd.py --only raftnode --check-perf none --rss-keys none --json out.json

For each system in turn (never both at once: they would share the CPUs) it
starts a fresh 3-member cluster on free 127.0.0.1 ports with data in a
temporary directory (bench/cluster.py: the real etcd from /usr/bin, raftnode =
`python -m engine` with default options), runs the workloads, and stops the
cluster by PID:

  put        --ops puts of --value-size bytes, --clients concurrent clients,
             spread over the three endpoints (as clientv3 does), grpc.aio
  range-l    --ops linearizable single-key Range calls, same concurrency
  range-s    --ops serializable single-key Range calls
  watch      --watchers watch streams on one prefix; --ops/4 puts by
             --clients writers; events/s delivered over all streams and the
             put-sent -> event-received latency
  check perf `etcdctl check perf --load=<l>` for each level in --check-perf
             (60 s each), its verdict lines parsed; the bench deletes the
             check's prefix itself afterwards, so a check whose own clean-up
             timed out does not make the next one refuse to start

Around each workload it reads every member's utime+stime from /proc: server
CPU per request on the leader, on each follower, and summed over the three
(an idle member's ticks and heartbeats are in it, as they are in production).

Then, on a second fresh cluster (so the memory figures carry none of the
workloads' and checks' history, and the checks never run against a million
keys), memory: VmRSS and data-dir size of every member empty, and after
loading each total in --rss-keys (keys rss/%08d, --value-size values, Txns
of 128 puts, etcd's default --max-txn-ops, LOAD_IN_FLIGHT at a time).

It prints a markdown table with both systems and the raftnode/etcd ratio
(and --json FILE writes everything). The client is one Python process
(asyncio, grpc.aio): it is the same for both, and for real etcd it is often
the bottleneck, so etcd's throughput here is a floor and the throughput
ratios are flattering to raftnode where etcd is client-bound; the CPU and
memory figures are the servers' own.
"""
from __future__ import annotations

import argparse
import asyncio
import json
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
from bench.procstat import cpu_seconds, disk_bytes, rss_bytes  # noqa: E402
from engine.cli.launch import etcd_binary  # noqa: E402
from engine.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402

MIB = 1 << 20
TXN_PUTS = 128          # etcd's default --max-txn-ops: the largest Txn both accept unchanged
LOAD_IN_FLIGHT = 32     # Txns in flight while loading: enough to keep both pipelines full
CHECK_PERF_PREFIX = b"/etcdctl-check-perf/"


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


# ---------------------------------------------------------------------------- bulk load (memory)

def _txn_of_puts(first: int, last: int, value: bytes) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(success=[
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"rss/%08d" % i, value=value))
        for i in range(first, last)])


async def load_keys(endpoints: list[str], first: int, last: int, value: bytes) -> dict:
    """Keys rss/<first..last-1>, TXN_PUTS a Txn, LOAD_IN_FLIGHT Txns at a time over
    the endpoints. A failed Txn (a member busy applying says "too many
    requests") is retried after a pause: a put repeated is harmless here."""
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    starts = iter(range(first, last, TXN_PUTS))
    state = {"retries": 0, "revision": 0}

    async def worker(c: int) -> None:
        stub = stubs[c % len(stubs)]
        for lo in starts:
            request = _txn_of_puts(lo, min(lo + TXN_PUTS, last), value)
            for attempt in range(1, 11):
                try:
                    resp = await stub.Txn(request, timeout=60)
                    break
                except grpc.aio.AioRpcError:
                    if attempt == 10:
                        raise
                    state["retries"] += 1
                    await asyncio.sleep(0.2 * attempt)
            state["revision"] = max(state["revision"], resp.header.revision)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in range(LOAD_IN_FLIGHT)))
    finally:
        for ch in channels:
            await ch.close()
    elapsed = time.perf_counter() - t0
    return {"keys": last - first, "seconds": elapsed, "keys_per_s": (last - first) / elapsed,
            "retries": state["retries"], "revision": state["revision"]}


async def wait_applied(endpoints: list[str], revision: int, timeout: float = 300.0) -> None:
    """Until every member has applied `revision` (its serializable read says so):
    a follower's memory is only comparable once it holds the same data."""
    deadline = time.monotonic() + timeout
    for ep in endpoints:
        async with grpc.aio.insecure_channel(ep) as ch:
            stub = rpc_pb2_grpc.KVStub(ch)
            while True:
                r = await stub.Range(rpc_pb2.RangeRequest(key=b"rss/", serializable=True), timeout=10)
                if r.header.revision >= revision:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ep} at revision {r.header.revision}, want {revision}")
                await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------- check perf

def parse_check_perf(text: str) -> dict:
    """The verdict lines of `etcdctl check perf` (its progress bar redraws with \\r).

    The verdict is the last line that is exactly PASS or FAIL. etcdctl prints
    it only after deleting its keys; when that delete times out (30 s) it
    exits with an error and no verdict at all, which counts as a FAIL here."""
    # The bar's last redraw and the first verdict line can share a line: search, not match.
    found = (re.search(r"(PASS|FAIL|Slowest request|Stddev).*", seg) for seg in re.split(r"[\r\n]", text))
    lines = [m.group(0).strip() for m in found if m]
    verdicts = [ln for ln in lines if ln in ("PASS", "FAIL")]
    m = re.search(r"Throughput (?:is|too low: )?\s*(\d+) writes/s", text)
    s = re.search(r"Slowest request took (?:too long: )?([0-9.]+)s", text)
    d = re.search(r"Stddev (?:is|too high: )?\s*([0-9.]+)s", text)
    return {"passed": bool(verdicts) and verdicts[-1] == "PASS", "verdict": verdicts[-1] if verdicts else None,
            "lines": lines, "writes_per_s": int(m.group(1)) if m else None,
            "slowest_s": float(s.group(1)) if s else None, "stddev_s": float(d.group(1)) if d else None}


async def delete_prefix(endpoint: str, prefix: bytes) -> None:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    async with grpc.aio.insecure_channel(endpoint) as ch:
        await rpc_pb2_grpc.KVStub(ch).DeleteRange(rpc_pb2.DeleteRangeRequest(key=prefix, range_end=end),
                                                  timeout=300)


def check_perf(endpoints: list[str], load: str) -> dict:
    t0 = time.monotonic()
    r = etcdctl(endpoints, "check", "perf", f"--load={load}", timeout=600)
    out = {"load": load, **parse_check_perf(r.stdout), "returncode": r.returncode,
           "seconds": time.monotonic() - t0, "stdout": r.stdout[-2000:], "stderr": r.stderr[-500:]}
    # Whatever etcdctl's own clean-up did: the next check refuses to start on a non-empty prefix.
    asyncio.run(delete_prefix(endpoints[0], CHECK_PERF_PREFIX))
    return out


# ---------------------------------------------------------------------------- server cost

def leader_index(cluster, timeout: float = 10.0) -> int:
    """Index of the leading member (waits out an election)."""
    deadline = time.monotonic() + timeout
    while True:
        ep = cluster.leader_endpoint()
        if ep is not None:
            return cluster.endpoints.index(ep)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cluster.kind}: no leader for {timeout}s")
        time.sleep(0.1)


def leader_first(cluster) -> list[int]:
    li = leader_index(cluster)
    return [li] + [i for i in range(len(cluster.procs)) if i != li]


def with_cpu(cluster, requests: int, work) -> dict:
    """Run the coroutine `work()`; add each member's server CPU per request
    (µs, leader first) and their sum. `requests` is what the workload asked
    of the servers (a put for watch, whatever number of streams it reaches)."""
    order = leader_first(cluster)
    pids = [cluster.procs[i].pid for i in order]
    before = [cpu_seconds(p) for p in pids]
    res = asyncio.run(work())
    after = [cpu_seconds(p) for p in pids]
    per = [(a - b) / requests * 1e6 for a, b in zip(after, before)]
    res["cpu_us"] = {"members": [cluster.names[i] for i in order], "leader": per[0],
                     "followers": per[1:], "total": sum(per)}
    return res


def memory_sample(cluster) -> dict:
    """VmRSS and data-dir size of each member, leader first, with max and mean."""
    order = leader_first(cluster)
    rss = [rss_bytes(cluster.procs[i].pid) / MIB for i in order]
    disk = [disk_bytes(cluster.data_dir(cluster.names[i])) / MIB for i in order]
    return {"members": [cluster.names[i] for i in order],
            "rss_mib": rss, "rss_max": max(rss), "rss_mean": sum(rss) / len(rss),
            "disk_mib": disk, "disk_max": max(disk), "disk_mean": sum(disk) / len(disk)}


# ---------------------------------------------------------------------------- driver

def say(kind: str, text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} {kind}] {text}", file=sys.stderr, flush=True)


def run_workloads(cluster, args) -> dict:
    eps, res = cluster.endpoints, {}
    value = b"v" * args.value_size
    say(cluster.kind, f"put x{args.ops} ...")
    res["put"] = with_cpu(cluster, args.ops, lambda: bench_put(eps, args.clients, args.ops, value))
    say(cluster.kind, f"range-l / range-s x{args.ops} ...")
    res["range-l"] = with_cpu(cluster, args.ops,
                              lambda: bench_range(eps, args.clients, args.ops, args.ops, False))
    res["range-s"] = with_cpu(cluster, args.ops,
                              lambda: bench_range(eps, args.clients, args.ops, args.ops, True))
    if args.watchers:
        puts = args.ops // 4
        say(cluster.kind, f"watch {args.watchers} streams x {puts} puts ...")
        res["watch"] = with_cpu(cluster, puts, lambda: bench_watch(eps, args.clients, puts, args.watchers))
    for load in args.check_perf:
        say(cluster.kind, f"etcdctl check perf --load={load} (60 s) ...")
        res[f"check-{load}"] = c = check_perf(eps, load)
        say(cluster.kind, f"check perf --load={load}: " + " / ".join(c["lines"]))
    return res


def run_memory(cluster, args) -> dict:
    """RSS empty, then after loading up to each total of args.rss_keys (cumulative)."""
    value = b"v" * args.value_size
    time.sleep(1)  # let start-up's allocations settle before the empty figure
    res = {"empty": memory_sample(cluster)}
    loaded = 0
    for total in args.rss_keys:
        say(cluster.kind, f"loading keys {loaded:,} -> {total:,} ...")
        load = asyncio.run(load_keys(cluster.endpoints, loaded, total, value))
        asyncio.run(wait_applied(cluster.endpoints, load["revision"]))
        time.sleep(1)  # the same short settle for both systems
        res[total] = {**memory_sample(cluster), "load": load}
        say(cluster.kind, f"{total:,} keys: loaded at {load['keys_per_s']:,.0f} keys/s "
                          f"({load['seconds']:.1f} s, {load['retries']} retries), "
                          f"RSS max {res[total]['rss_max']:.0f} MiB")
        loaded = total
    return res


def run_system(kind: str, args) -> dict:
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-", dir=args.dir) as d:
        t0 = time.monotonic()
        with start_cluster(kind, os.path.join(d, "work"), size=3, fault_injection=False) as cluster:
            res["startup_s"] = time.monotonic() - t0
            res.update(run_workloads(cluster, args))
        if args.rss_keys is not None:
            with start_cluster(kind, os.path.join(d, "memory"), size=3, fault_injection=False) as cluster:
                res["memory"] = run_memory(cluster, args)
    return res


# ---------------------------------------------------------------------------- report

def fmt_num(v, digits=0) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:,.{digits}f}"


def ratio(a, b) -> str:
    if a is None or b is None or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}"


def cells(ev: list, rv: list, digits: int) -> tuple[str, str, str]:
    """'a / b / c' for etcd, for raftnode, and the ratio of each pair."""
    join = " / ".join
    return (join(fmt_num(v, digits) for v in ev), join(fmt_num(v, digits) for v in rv),
            join(ratio(r, e) for e, r in zip(ev, rv)))


def _verdict(c: dict) -> str:
    if not c:
        return "-"
    return (c.get("verdict") or "no verdict") + (f" {c['writes_per_s']:,}/s" if c.get("writes_per_s") else "")


def table(results: dict, args) -> list[str]:
    e, r = results.get("etcd", {}), results.get("raftnode", {})
    lines = ["| workload | metric | etcd | raftnode | raftnode/etcd |", "|---|---|---:|---:|---:|"]

    def row(work: str, metric: str, get, digits: int = 0) -> None:
        ev, rv = get(e), get(r)
        n = max(len(ev or ()), len(rv or ()))
        ev, rv = list(ev or [None] * n), list(rv or [None] * n)
        if n:
            lines.append("| {} | {} | {} | {} | {} |".format(work, metric, *cells(ev, rv, digits)))

    def part(*keys):
        """A getter: the value at keys in one system's results, None if absent."""
        def get(res):
            for k in keys:
                if not isinstance(res, dict) or k not in res:
                    return None
                res = res[k]
            return res
        return get

    names = {"put": "writes/s", "range-l": "reads/s (linearizable)", "range-s": "reads/s (serializable)",
             "watch": "events/s delivered"}
    for w in ("put", "range-l", "range-s", "watch"):
        g = part(w)
        row(w, names[w], lambda s, g=g: g(s) and [g(s)["per_s"]])
        row(w, "p50 / p99 ms", lambda s, g=g: g(s) and [g(s)["p50_ms"], g(s)["p99_ms"]], 2)
        per = "put" if w == "watch" else "request"
        row(w, f"server CPU µs per {per}: sum / leader / followers",
            lambda s, g=g: g(s) and [g(s)["cpu_us"]["total"], g(s)["cpu_us"]["leader"],
                                     *g(s)["cpu_us"]["followers"]])
        row(w, "errors", lambda s, g=g: g(s) and (g(s)["errors"] or None) and [g(s)["errors"]])
    for load in args.check_perf:
        g = part(f"check-{load}")
        ec, rc = g(e) or {}, g(r) or {}
        lines.append(f"| check perf --load={load} | verdict, writes/s | {_verdict(ec)} | {_verdict(rc)} "
                     f"| {ratio(rc.get('writes_per_s'), ec.get('writes_per_s'))} |")
        row(f"check perf --load={load}", "slowest / stddev s",
            lambda s, g=g: g(s) and [g(s)["slowest_s"], g(s)["stddev_s"]], 3)
    for stage in ["empty", *(args.rss_keys or [])]:
        g = part("memory", stage)
        name = "RSS empty" if stage == "empty" else f"RSS {stage:,} keys"
        row(name, "MiB max / mean", lambda s, g=g: g(s) and [g(s)["rss_max"], g(s)["rss_mean"]])
        row(name, "MiB leader / followers", lambda s, g=g: g(s) and g(s)["rss_mib"])
        row(name, "data dir MiB max / mean", lambda s, g=g: g(s) and [g(s)["disk_max"], g(s)["disk_mean"]], 1)
        if stage != "empty":
            row(name, "load keys/s", lambda s, g=g: g(s) and [g(s)["load"]["keys_per_s"]])
    row("(cluster)", "start-up s", lambda s: s.get("startup_s") and [s["startup_s"]], 1)
    return lines


def report(results: dict, args, machine: str) -> str:
    kinds = [k for k in ("etcd", "raftnode") if k in results]
    keys = ", ".join(f"{k:,}" for k in args.rss_keys or []) or "none"
    head = [f"# {machine}",
            f"# 3 members each, {args.clients} clients, {args.ops} ops/workload, {args.value_size} B values, "
            f"{args.watchers} watch streams, memory after {keys} keys; systems one after the other: "
            f"{', '.join(kinds)}"]
    notes = []
    for k in kinds:
        for load in args.check_perf:
            c = results[k].get(f"check-{load}")
            if c:
                why = "" if c["verdict"] else f" (rc {c['returncode']}: {c['stderr'].strip()[-200:]})"
                notes.append(f"# {k} check perf --load={load}: " + " / ".join(c["lines"]) + why)
    return "\n".join([*head, *table(results, args), *notes])


def machine_line() -> str:
    ver = subprocess.run([etcd_binary(), "--version"], capture_output=True, text=True).stdout
    ver = (re.search(r"etcd Version: (\S+)", ver) or re.search(r"(\S+)", ver or "?"))
    return (f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"etcd {ver.group(1) if ver else '?'}, grpcio {grpc.__version__}, "
            f"raftnode client wire {os.environ.get('RAFTNODE_CLIENT_WIRE') or 'default'}")


def parse_counts(text: str) -> list[int] | None:
    """'100000,1000000' -> [100000, 1000000] (ascending totals); 'none' -> None."""
    if text in ("", "none"):
        return None
    counts = [int(float(t)) for t in text.split(",")]
    if counts != sorted(set(counts)) or counts[0] <= 0:
        raise argparse.ArgumentTypeError(f"--rss-keys wants ascending positive totals, got {text}")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ops", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--watchers", type=int, default=4)
    ap.add_argument("--check-perf", default="s,m,l", help="comma-separated loads (s,m,l,xl) or 'none'")
    ap.add_argument("--rss-keys", type=parse_counts, default="100000,1000000",
                    help="totals of keys loaded before each memory figure, or 'none' (no memory phase)")
    ap.add_argument("--only", choices=["etcd", "raftnode"], help="run one system only")
    ap.add_argument("--dir", default=None, help="parent of the temporary data dirs (default: $TMPDIR)")
    ap.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    args = ap.parse_args(argv)
    args.check_perf = [] if args.check_perf in ("", "none") else args.check_perf.split(",")
    if etcd_binary() is None or etcdctl_binary() is None:
        print("etcd/etcdctl not installed (Debian: etcd-server, etcd-client)", file=sys.stderr)
        return 2
    # The machine may be shared: the load around the run says how far to trust it.
    machine = f"{machine_line()}, load average {os.getloadavg()[0]:.1f} at start"
    print(f"# {machine}", file=sys.stderr, flush=True)
    results = {}
    for kind in ("etcd", "raftnode"):
        if not args.only or kind == args.only:
            results[kind] = run_system(kind, args)
    machine += f", {os.getloadavg()[0]:.1f} at end"
    print(report(results, args, machine), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "args": vars(args), "results": results}, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
