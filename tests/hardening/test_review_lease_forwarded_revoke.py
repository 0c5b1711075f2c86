"""Review of a1970ed: _revoke_expired checks leadership (ReadIndex round,
then _still_leading) and THEN hands the revokes to propose(), which only
queues them; the raft loop proposes them at its next _feed_core, after it
has stepped whatever came in meanwhile. If the loop was in a stalled fsync
at that moment, the member has become a follower by the time the revokes
reach the core, and a follower FORWARDS proposals to the new leader, which
applies them: the lease a client kept alive on the new leader is revoked by
the old one (the residual #15247 race etcd could not close because of its
goroutines; here the check and the hand-off are on one loop, so the loop
can drop a housekeeping revoke that is no longer a leader's).
"""
from __future__ import annotations

import asyncio
import threading
import time

from engine.proto import internal_pb2, rpc_pb2
from tests.server.inproc import InProcCluster, eventually, put, run

LEASE = 0x5EA60


def test_confirmed_revoke_is_not_forwarded_after_stepping_down(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        release = threading.Event()
        in_fsync = threading.Event()
        keeper = None
        try:
            old = await c.leader()
            await old.propose(internal_pb2.InternalRequest(
                lease_grant=rpc_pb2.LeaseGrantRequest(ID=LEASE, TTL=2)), 5.0)
            for node in c.nodes.values():
                await node.read_barrier(5.0)
            wal = old.raftlog.wal
            orig_save = wal.save
            armed = {"on": False}

            def stalled_save(*a, **kw):
                if armed["on"] and threading.current_thread().name.startswith("wal"):
                    in_fsync.set()
                    release.wait(30)
                return orig_save(*a, **kw)
            wal.save = stalled_save
            orig_barrier = old.read_barrier
            stuck = []

            async def barrier_then_stall(timeout, _orig=orig_barrier):
                await _orig(timeout)
                if not armed["on"] and old.applier.lessor.lookup(LEASE) is not None:
                    # Leadership confirmed for the expired lease; now the disk
                    # stalls (another client's write) before the revokes reach raft.
                    armed["on"] = True
                    stuck.append(asyncio.ensure_future(put(old, b"stall", b"1", timeout=30)))
                    while not in_fsync.is_set():
                        await asyncio.sleep(0.005)
            old.read_barrier = barrier_then_stall
            # The lease expires on the leader (nobody renews it there).
            await eventually(lambda: in_fsync.is_set(), 15, "the leader to confirm, then stall")
            # The revoke task runs right after the confirmation returns.
            await eventually(lambda: bool(old._proposals), 5, "the revoke queued for the (stalled) raft loop")
            others = [n for n in c.nodes.values() if n is not old]
            await eventually(lambda: any(n.is_leader and n.applier.lessor.primary for n in others), 15,
                             "a new leader while the old one is stalled")
            new = next(n for n in others if n.is_leader)
            old_term = old.term

            async def keep_alive():   # the client moved to the new leader and renews there
                while True:
                    if new.applier.lessor.primary and new.applier.lessor.lookup(LEASE) is not None:
                        new.applier.lessor.keepalive(LEASE, time.monotonic())
                    await asyncio.sleep(0.1)
            keeper = asyncio.ensure_future(keep_alive())
            await asyncio.sleep(0.5)
            release.set()
            await eventually(lambda: not old.is_leader and old.leader_id == new.member_id, 10,
                             "the old leader to follow the new one")
            await put(new, b"after", b"1")
            await asyncio.sleep(0.5)
            for node in c.nodes.values():
                await node.read_barrier(5.0)
            if new.applier.lessor.lookup(LEASE) is None:
                # Where the revoke entry came from: appended by the new leader
                # in its own term means it was forwarded to it.
                log = new.rn.raft.log
                terms = []
                for i in range(log.first_index(), log.last_index() + 1):
                    e = log.slice(i, i + 1)[0]
                    if e.data:
                        r = internal_pb2.InternalRequest()
                        try:
                            r.ParseFromString(e.data)
                        except Exception:
                            continue
                        if r.WhichOneof("request") == "lease_revoke":
                            terms.append(e.term)
                raise AssertionError(
                    f"the deposed leader's queued revoke was forwarded and applied: a lease kept alive on "
                    f"the new leader is gone (revoke entries of terms {terms}; old leader's term "
                    f"{old_term}, new leader's {new.term})")
        finally:
            release.set()
            if keeper is not None:
                keeper.cancel()
            await asyncio.sleep(0.2)
            await c.stop_all()
    run(main())
