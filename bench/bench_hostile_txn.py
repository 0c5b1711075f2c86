"""Issue 8 item 3: the hostile-but-legal nested txns, raftnode vs real etcd.

    python bench/bench_hostile_txn.py            # both sizes, both systems
    python bench/bench_hostile_txn.py --only raftnode --repeat 3

For each system in turn (never both at once) it starts a fresh 3-member
cluster on free 127.0.0.1 ports (bench/cluster.py: real etcd from /usr/bin,
raftnode = `python -m engine`), sends each txn to the leader and prints the
time to answer, plus the slowest Maintenance.Status answered by that member
while the txn was processed (Status is answered on raftnode's loop, so that
is its loop stall). The txns (tests/hardening/test_storage_overlap.py):

  0.65 MiB  24 x 24 nested txns of 24 puts + 24 deletes (the issue: raftnode
            16 s on 407b693, etcd 0.33 s)
  1.2 MiB   24 x 24 nested txns of 40 puts + 40 deletes (47 s vs 0.64 s)

Every key differs between runs (a prefix per run), so each txn really writes.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import grpc  # noqa: E402

from bench.cluster import start_cluster  # noqa: E402
from engine.proto import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from tests.hardening.test_storage_overlap import hostile_txn  # noqa: E402

SIZES = {"0.65MiB": (24, 24, b"x" * 10), "1.2MiB": (24, 40, b"x" * 16)}
OPTS = [("grpc.max_send_message_length", 4 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]


def _prefixed(req: rpc_pb2.TxnRequest, prefix: bytes) -> rpc_pb2.TxnRequest:
    """The same txn with every key under `prefix` (a fresh key space per run)."""
    def fix(ops):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                op.request_put.key = prefix + op.request_put.key
            elif kind == "request_delete_range":
                op.request_delete_range.key = prefix + op.request_delete_range.key
            elif kind == "request_txn":
                fix(op.request_txn.success)
                fix(op.request_txn.failure)
    out = rpc_pb2.TxnRequest()
    out.CopyFrom(req)
    fix(out.success)
    return out


async def _one(ep: str, req: rpc_pb2.TxnRequest) -> tuple[float, float]:
    async with grpc.aio.insecure_channel(ep, options=OPTS) as ch, grpc.aio.insecure_channel(ep) as pch:
        st = rpc_pb2_grpc.MaintenanceStub(pch)
        await st.Status(rpc_pb2.StatusRequest(), timeout=10)
        done = asyncio.Event()
        worst = 0.0

        async def probe():
            nonlocal worst
            while not done.is_set():
                t0 = time.monotonic()
                await st.Status(rpc_pb2.StatusRequest(), timeout=120)
                worst = max(worst, time.monotonic() - t0)
                await asyncio.sleep(0.02)
        p = asyncio.ensure_future(probe())
        t0 = time.monotonic()
        try:
            resp = await rpc_pb2_grpc.KVStub(ch).Txn(req, timeout=120)
        finally:
            took = time.monotonic() - t0
            done.set()
            await p
        assert resp.succeeded
        return took, worst


def run(kind: str, repeat: int) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-hostile-{kind}-") as d:
        c = start_cluster(kind, d, size=3, fault_injection=True)
        try:
            ep = c.leader_endpoint() or c.endpoints[0]
            for n, (name, (w, leaf, value)) in enumerate(SIZES.items()):
                base = hostile_txn(w, leaf, value)
                for i in range(repeat):
                    # Two bytes of prefix: the 1.2 MiB txn stays under 1.5 MiB.
                    req = _prefixed(base, bytes((65 + n, 97 + i)))
                    out.setdefault(name, []).append(asyncio.run(_one(ep, req)))
        finally:
            c.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("raftnode", "etcd"))
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    kinds = [a.only] if a.only else ["raftnode", "etcd"]
    results = {k: run(k, a.repeat) for k in kinds}
    print(f"{'txn':<9} {'system':<9} {'answer s (each run)':<28} {'slowest Status s':<18}")
    for name in SIZES:
        for k in kinds:
            runs = results[k][name]
            print(f"{name:<9} {k:<9} {' '.join(f'{t:.3f}' for t, _ in runs):<28} "
                  f"{max(w for _, w in runs):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
