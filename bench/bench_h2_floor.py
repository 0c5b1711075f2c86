"""Server CPU per etcd-API unary call: grpc.aio against h2floor, a minimal
hand-written HTTP/2 gRPC server on plain asyncio (bench/h2floor, issue 11).

    python bench/bench_h2_floor.py [CALLS] [--rounds N] [--only SUB1,SUB2] [--in-flight N]
                                   [--tls] [--wait-file PATH] [--replay]

Same method as bench_grpc_floor.py: each server runs in a process of its
own; the same grpc.aio client (64 calls in flight, 10 s timeout per call)
warms it up with min(2000, CALLS) calls, then makes CALLS calls; the
server's utime+stime from /proc over those CALLS, divided by CALLS, is the
figure. Rows run in turn, the whole list N times (default 2) so the noise
shows; every run is printed, then a summary (median of the runs).

Rows:
  * grpc.aio, Maintenance.Status with an empty handler (bench_grpc_floor's
    floor) and KV.Range answering one kv;
  * h2floor with its fast paths switched off one at a time:
      - "hpack pkg": header blocks decoded and responses encoded with the
        `hpack` package (pip install hpack), one write per response;
      - "own HPACK": engine/transport/h2/hpack.py's decoder, stateless precomputed response
        headers, one write per response;
      - "+ block cache": header blocks that do not change the dynamic table
        decoded once per connection;
      - "+ one write per read" (all fast paths): the responses produced by
        one data_received go out in one transport.write;
      - "async handler": all fast paths, but the handler is a coroutine run
        as a Task (what an awaiting handler, e.g. Put, would cost);
  * uvloop variants when uvloop is importable.

--wait-file PATH: before each run, wait while PATH exists (a shared
machine's "quiet please" flag).

--replay: instead, the Python cost of h2floor's protocol code alone. The
bytes the grpc.aio client sends for 2,000 calls (64 in flight) are recorded
once, in-process, then fed again to fresh H2Protocol objects whose
transport only collects what is written (no sockets, no event-loop
wakeups); process CPU time per call for each variant.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import grpc  # noqa: E402

from bench_grpc_floor import IN_FLIGHT, cpu  # noqa: E402
from engine.cli.launch import free_port  # noqa: E402
from engine.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402


# -- servers (each in its own process) ------------------------------------------

TLS: dict | None = None     # {"ca":, "cert":, "key":, "client_cert":, "client_key":} with --tls


def _serve_aio(port: int, ready, tls: dict | None = None) -> None:
    from bench.h2floor.server import range_response

    class Maint(rpc_pb2_grpc.MaintenanceServicer):
        async def Status(self, request, context):
            return rpc_pb2.StatusResponse()

    class KV(rpc_pb2_grpc.KVServicer):
        async def Range(self, request, context):
            return range_response(request)

    async def main():
        server = grpc.aio.server()
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(Maint(), server)
        rpc_pb2_grpc.add_KVServicer_to_server(KV(), server)
        if tls:
            creds = grpc.ssl_server_credentials(
                [(open(tls["key"], "rb").read(), open(tls["cert"], "rb").read())],
                root_certificates=open(tls["ca"], "rb").read(), require_client_auth=True)
            server.add_secure_port(f"127.0.0.1:{port}", creds)
        else:
            server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()
    asyncio.run(main())


def _serve_h2(port: int, ready, opts: dict, tls: dict | None = None) -> None:
    from bench.h2floor.server import Server, etcd_handlers, tls_context
    opts = dict(opts)
    use_uvloop = opts.pop("uvloop", False)
    async_handlers = opts.pop("async_handlers", False)

    async def main():
        server = Server(etcd_handlers(async_handlers), **opts)
        ctx = tls_context(tls["cert"], tls["key"], tls["ca"]) if tls else None
        await server.start("127.0.0.1", port, ssl=ctx)
        ready.set()
        await asyncio.Event().wait()
    if use_uvloop:
        import uvloop
        uvloop.install()
    asyncio.run(main())


# -- client ---------------------------------------------------------------------

IN_FLIGHT_NOW = IN_FLIGHT


async def _drive(endpoint: str, calls: int, method: str) -> float:
    if TLS:
        creds = grpc.ssl_channel_credentials(open(TLS["ca"], "rb").read(), open(TLS["client_key"], "rb").read(),
                                             open(TLS["client_cert"], "rb").read())
        channel = grpc.aio.secure_channel(endpoint, creds)
    else:
        channel = grpc.aio.insecure_channel(endpoint)
    async with channel as ch:
        if method == "Status":
            call, req = rpc_pb2_grpc.MaintenanceStub(ch).Status, rpc_pb2.StatusRequest()
        else:
            call, req = rpc_pb2_grpc.KVStub(ch).Range, rpc_pb2.RangeRequest(key=b"foo")
        left = calls

        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                await call(req, timeout=10)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT_NOW)))
        return time.perf_counter() - t0


def measure(pid: int, endpoint: str, calls: int, method: str) -> tuple[float, float]:
    asyncio.run(_drive(endpoint, min(2000, calls), method))  # warm-up
    before = cpu(pid)
    elapsed = asyncio.run(_drive(endpoint, calls, method))
    return (cpu(pid) - before) / calls * 1e6, calls / elapsed


def variants() -> list[tuple[str, object, tuple, str]]:
    fast = {}
    rows = [
        ("grpc.aio, Status (empty handler)", _serve_aio, (), "Status"),
        ("h2floor, hpack pkg, write per response", _serve_h2,
         ({"hpack_lib": True, "cache": False, "coalesce": False},), "Status"),
        ("h2floor, own HPACK, write per response", _serve_h2,
         ({"cache": False, "coalesce": False},), "Status"),
        ("h2floor, + block cache", _serve_h2, ({"coalesce": False},), "Status"),
        ("h2floor, + one write per read (all)", _serve_h2, (fast,), "Status"),
        ("h2floor, all, async handler (Task)", _serve_h2, ({"async_handlers": True},), "Status"),
        ("grpc.aio, Range (one kv)", _serve_aio, (), "Range"),
        ("h2floor, all, Range (one kv)", _serve_h2, (fast,), "Range"),
    ]
    if importlib.util.find_spec("hpack") is None:
        rows = [r for r in rows if "hpack pkg" not in r[0]]
    if importlib.util.find_spec("uvloop") is not None:
        rows += [
            ("h2floor + uvloop, all, Status", _serve_h2, ({"uvloop": True},), "Status"),
            ("h2floor + uvloop, all, Range", _serve_h2, ({"uvloop": True},), "Range"),
        ]
    return rows


def _wait_quiet(path: str | None) -> None:
    if not path:
        return
    waited = False
    while os.path.exists(path):
        if not waited:
            print(f"  (waiting while {path} exists)", flush=True)
            waited = True
        time.sleep(30)


def run_row(name, target, extra, method, calls) -> tuple[float, float]:
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    ready = ctx.Event()
    p = ctx.Process(target=target, args=(port, ready, *extra, TLS), daemon=True)
    p.start()
    try:
        if not ready.wait(20):
            raise RuntimeError(f"{name} did not start")
        return measure(p.pid, f"127.0.0.1:{port}", calls, method)
    finally:
        p.terminate()
        p.join(5)


# -- replay: the protocol code alone ----------------------------------------------

class _Collect:
    def __init__(self):
        self.n = 0

    def write(self, data):
        self.n += 1

    def is_closing(self):
        return False

    def close(self):
        pass

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


async def _record(calls: int, method: str) -> list[bytes]:
    from bench.h2floor import server as S
    chunks: list[bytes] = []

    class Rec(S.H2Protocol):
        def data_received(self, data):
            chunks.append(bytes(data))
            super().data_received(data)
    srv = S.Server(S.etcd_handlers())
    loop = asyncio.get_running_loop()
    port = free_port()
    s = await loop.create_server(lambda: Rec(srv), "127.0.0.1", port)
    await _drive(f"127.0.0.1:{port}", calls, method)
    s.close()
    return chunks


def replay_rows(calls: int = 2000, reps: int = 5) -> None:
    from bench.h2floor import server as S
    for method in ("Status", "Range"):
        chunks = asyncio.run(_record(calls, method))
        for label, opts in [("hpack pkg, write per response", {"hpack_lib": True, "cache": False, "coalesce": False}),
                            ("own HPACK, write per response", {"cache": False, "coalesce": False}),
                            ("+ block cache", {"coalesce": False}),
                            ("+ one write per read (all)", {})]:
            srv = S.Server(S.etcd_handlers(), **opts)

            async def go():
                best = None
                for _ in range(reps):
                    p = S.H2Protocol(srv)
                    t = _Collect()
                    p.connection_made(t)
                    t0 = time.process_time()
                    for c in chunks:
                        p.data_received(c)
                    dt = time.process_time() - t0
                    best = dt if best is None else min(best, dt)
                return best, t.n
            best, writes = asyncio.run(go())
            print(f"replay {method:6} {label:32} {best / calls * 1e6:6.1f} µs/call  "
                  f"({writes / calls:.2f} writes/call, {len(chunks) / calls:.2f} reads/call)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("calls", nargs="?", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="")
    ap.add_argument("--wait-file", default=None)
    ap.add_argument("--replay", action="store_true")
    ap.add_argument("--in-flight", type=int, default=IN_FLIGHT,
                    help="calls the client keeps in flight (default 64, as bench_grpc_floor)")
    ap.add_argument("--tls", action="store_true",
                    help="every row over TLS with client certificates (ALPN h2; tests/tls/pki.py's CA)")
    a = ap.parse_args()
    global IN_FLIGHT_NOW, TLS
    IN_FLIGHT_NOW = a.in_flight
    if a.tls:
        import tempfile
        from tests.tls.pki import Pki
        pki = Pki(pathlib.Path(tempfile.mkdtemp(prefix="h2floor-pki-")))
        pki.issue("server", cn="server")
        pki.issue("client", cn="root", server=False)
        TLS = {"ca": pki.ca, "cert": pki.cert("server"), "key": pki.key("server"),
               "client_cert": pki.cert("client"), "client_key": pki.key("client")}
    if a.replay:
        _wait_quiet(a.wait_file)
        replay_rows()
        return
    only = a.only.split(",")
    rows = [r for r in variants() if any(o in r[0] for o in only)]
    results: dict[str, list[tuple[float, float]]] = {r[0]: [] for r in rows}
    print(f"load before: {os.getloadavg()[0]:.2f}; {IN_FLIGHT_NOW} calls in flight"
          f"{'; TLS with client certificates' if TLS else ''}", flush=True)
    for rnd in range(a.rounds):
        for name, target, extra, method in rows:
            _wait_quiet(a.wait_file)
            us, rate = run_row(name, target, extra, method, a.calls)
            results[name].append((us, rate))
            print(f"round {rnd + 1}  {name:42} {us:7.0f} µs/call {rate:8.0f} calls/s"
                  f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    print()
    print(f"| server | CPU µs per call ({a.rounds} runs) | calls/s |")
    print("|---|---:|---:|")
    for name, _, _, _ in rows:
        us = [r[0] for r in results[name]]
        rate = [r[1] for r in results[name]]
        runs = " / ".join(f"{u:.0f}" for u in us)
        print(f"| {name} | {statistics.median(us):.0f} ({runs}) | {statistics.median(rate):,.0f} |")


if __name__ == "__main__":
    main()
