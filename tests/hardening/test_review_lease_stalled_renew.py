"""Review of a1970ed (issue 8 item 5, etcd #15247 / #16822): the fix covers
the revoke side only. #16822 also made LeaseRenew check leadership
(ensureLeadership: skipped while the member processes ticks, else a
ReadIndex round) because of #15247's second symptom: "the old leader still
handles lease keep alive requests from the connected clients".

In raftui the WAL fsync runs in a worker thread, so a leader stalled in
fsync keeps its event loop, its gRPC handlers and its primary lessor:
LeaseServicer._renew answers every keepalive with the full TTL, while the
new leader (which never sees these renewals) lets the lease expire and
revokes it. The client is told "alive" while its keys are deleted.
"""
from __future__ import annotations

import asyncio
import threading
import time

from engine.api.lease import LeaseServicer
from engine.server.kvserver import KVServer
from engine.proto import internal_pb2, rpc_pb2
from tests.server.inproc import InProcCluster, eventually, put, run

LEASE = 0x5EA5F


class _Ctx:
    """Just what LeaseServicer._renew reads of a gRPC context."""

    def time_remaining(self):
        return 3.0


def test_stalled_leader_does_not_renew_a_lease_the_new_leader_revokes(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        release = threading.Event()
        try:
            old = await c.leader()
            await old.propose(internal_pb2.InternalRequest(
                lease_grant=rpc_pb2.LeaseGrantRequest(ID=LEASE, TTL=2)), 5.0)
            for node in c.nodes.values():
                await node.read_barrier(5.0)
            wal = old.raftlog.wal
            orig_save = wal.save

            def stalled_save(*a, **kw):
                if threading.current_thread().name.startswith("wal"):
                    release.wait(30)
                return orig_save(*a, **kw)
            wal.save = stalled_save
            stuck = asyncio.ensure_future(put(old, b"stall", b"1", timeout=30))
            others = [n for n in c.nodes.values() if n is not old]
            await eventually(lambda: any(n.is_leader and n.applier.lessor.primary for n in others), 15,
                             "a new leader (with a primary lessor) while the old one is stalled")
            new = next(n for n in others if n.is_leader)
            api = LeaseServicer(KVServer(old), link=None)   # the client stays on its endpoint, the old leader
            answers: list[tuple[float, int]] = []

            async def client():
                while True:
                    try:
                        answers.append((time.monotonic(), await api._renew(LEASE, _Ctx())))
                    except Exception as e:  # a refusal sends the client elsewhere
                        answers.append((time.monotonic(), -1))
                    await asyncio.sleep(0.2)
            keeper = asyncio.ensure_future(client())
            try:
                await eventually(lambda: new.applier.lessor.lookup(LEASE) is None, 15,
                                 "the new leader to revoke the lease nobody renews there")
                revoked_at = time.monotonic()
            finally:
                keeper.cancel()
            told_alive = [ttl for t, ttl in answers if ttl > 0 and t > revoked_at - 2.0]
            assert not told_alive, (f"the deposed, stalled leader answered {len(told_alive)} keepalives "
                                    f"with TTL {told_alive[:1]} in the 2 s before the new leader revoked "
                                    f"the lease (old.is_leader={old.is_leader})")
        finally:
            release.set()
            await asyncio.sleep(0.2)
            await c.stop_all()
    run(main())
