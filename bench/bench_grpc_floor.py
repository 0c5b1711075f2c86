"""The floor under raftnode's request path: server CPU per gRPC call with a
handler that does nothing, for each server stack Python offers here, and the
cost of handing requests from one process to another (issue 11's design
note on using more than one core per member, docs/MULTICORE.md).

    python bench/bench_grpc_floor.py [CALLS]

Each server runs in a process of its own and answers Maintenance.Status with
an empty response (etcd's API, so the client is the same grpc.aio client as
bench_vs_etcd's, 64 calls in flight). Its CPU (utime + stime from /proc)
before and after, divided by CALLS, is the figure: what one call costs the
server before raftnode does any work. For comparison the same client runs
against a real etcd 3.4.23 member's Status when /usr/bin/etcd is present.

The hand-off rows measure a worker process passing requests to the "raft"
process and getting answers back over a pipe (multiprocessing.connection),
one message per request and in batches of 64, CPU of both processes summed.
"""
from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent import futures

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from engine.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from engine.cli.launch import free_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
IN_FLIGHT = 64


def cpu(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


class _Empty(rpc_pb2_grpc.MaintenanceServicer):
    def Status(self, request, context):
        return rpc_pb2.StatusResponse()


class _EmptyAio(rpc_pb2_grpc.MaintenanceServicer):
    async def Status(self, request, context):
        return rpc_pb2.StatusResponse()


class _PassThrough(grpc.aio.ServerInterceptor):
    """A server interceptor that changes nothing: what having one costs."""

    async def intercept_service(self, continuation, handler_call_details):
        return await continuation(handler_call_details)


def _serve_aio(port: int, ready, intercept: bool = False) -> None:
    async def main():
        server = grpc.aio.server(interceptors=[_PassThrough()] if intercept else None)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(_EmptyAio(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()
    asyncio.run(main())


def _serve_grpclib(port: int, ready) -> None:
    """The same empty Status on grpclib (pure Python HTTP/2 on asyncio, the
    other gRPC server stack Python has; not a dependency: the row is left
    out unless it is installed, e.g. `pip install grpclib`)."""
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    class Maintenance:
        async def status(self, stream):
            await stream.recv_message()
            await stream.send_message(rpc_pb2.StatusResponse())

        def __mapping__(self):
            return {"/etcdserverpb.Maintenance/Status": Handler(
                self.status, Cardinality.UNARY_UNARY, rpc_pb2.StatusRequest, rpc_pb2.StatusResponse)}

    async def main():
        server = Server([Maintenance()])
        await server.start("127.0.0.1", port)
        ready.set()
        await server.wait_closed()
    asyncio.run(main())


def _serve_sync(port: int, ready, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(_Empty(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    ready.set()
    server.wait_for_termination()


async def _drive(endpoint: str, calls: int) -> float:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)
        left = calls

        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                await stub.Status(rpc_pb2.StatusRequest(), timeout=10)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        return time.perf_counter() - t0


def measure(pid: int, endpoint: str, calls: int) -> tuple[float, float]:
    asyncio.run(_drive(endpoint, min(2000, calls)))  # warm-up
    before = cpu(pid)
    elapsed = asyncio.run(_drive(endpoint, calls))
    return (cpu(pid) - before) / calls * 1e6, calls / elapsed


def server_rows(calls: int) -> list[tuple[str, float, float]]:
    rows = []
    ctx = multiprocessing.get_context("spawn")
    variants = [("grpc.aio (asyncio)", _serve_aio, ()),
                ("grpc.aio + a pass-through interceptor", _serve_aio, (True,))]
    variants += [(f"grpc sync, {n} threads", _serve_sync, (n,)) for n in (1, 4, 16)]
    if importlib.util.find_spec("grpclib") is not None:
        variants.append(("grpclib (pure Python HTTP/2)", _serve_grpclib, ()))
    for name, target, extra in variants:
        port = free_port()
        ready = ctx.Event()
        p = ctx.Process(target=target, args=(port, ready, *extra), daemon=True)
        p.start()
        try:
            if not ready.wait(20):
                raise RuntimeError(f"{name} did not start")
            us, rate = measure(p.pid, f"127.0.0.1:{port}", calls)
            rows.append((name, us, rate))
        finally:
            p.terminate()
            p.join(5)
    if shutil.which("etcd"):
        rows.append(_etcd_row(calls))
    return rows


def _etcd_row(calls: int) -> tuple[str, float, float]:
    cport, pport = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen(
            ["etcd", "--name", "e", "--data-dir", d,
             "--listen-client-urls", f"http://127.0.0.1:{cport}",
             "--advertise-client-urls", f"http://127.0.0.1:{cport}",
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", f"e=http://127.0.0.1:{pport}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with grpc.insecure_channel(f"127.0.0.1:{cport}") as ch:
                        rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=1)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            us, rate = measure(proc.pid, f"127.0.0.1:{cport}", calls)
            return ("etcd 3.4.23 Status (real work)", us, rate)
        finally:
            proc.terminate()
            proc.wait(10)


# -- hand-off between processes ---------------------------------------------

def _raft_side(conn, batch: int) -> None:
    """Echo every request back, as the raft process would answer it."""
    while True:
        msg = conn.recv_bytes()
        if msg == b"stop":
            return
        conn.send_bytes(msg)


def handoff_rows(calls: int) -> list[tuple[str, float, float]]:
    rows = []
    ctx = multiprocessing.get_context("spawn")
    req = rpc_pb2.PutRequest(key=b"k" * 16, value=b"v" * 256).SerializeToString()
    for batch in (1, 64):
        a, b = ctx.Pipe()
        p = ctx.Process(target=_raft_side, args=(b, batch), daemon=True)
        p.start()
        me = os.getpid()
        before = cpu(me) + cpu(p.pid)
        t0 = time.perf_counter()
        for _ in range(calls // batch):
            # A batch travels as one length-prefixed frame of requests.
            a.send_bytes(b"".join(len(req).to_bytes(4, "big") + req for _ in range(batch)))
            a.recv_bytes()
        elapsed = time.perf_counter() - t0
        used = cpu(me) + cpu(p.pid) - before
        a.send_bytes(b"stop")
        p.join(5)
        rows.append((f"pipe hand-off, batches of {batch}", used / calls * 1e6, calls / elapsed))
    return rows


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    print(f"{'server':40} {'CPU µs/call':>12} {'calls/s':>10}")
    for name, us, rate in server_rows(calls) + handoff_rows(calls):
        print(f"{name:40} {us:12.0f} {rate:10.0f}")


if __name__ == "__main__":
    main()
