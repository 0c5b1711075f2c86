"""Issue 8 item 5, leases around a leader change (etcd #15247, fixed by
#16822), on in-process members with real peer gRPC and real data dirs:

* the lessor becomes primary only when the new leader applies the first
  entry of its own term, i.e. after every entry of the previous terms (a
  lease granted just before the election exists by then);
* a leader stalled in fsync, which still believes it leads, does not revoke
  a lease that the client kept alive on the new leader: revokes are
  proposed only after a ReadIndex round confirmed leadership, in the term
  the lease expired in.
"""
from __future__ import annotations

import asyncio
import threading
import time

from engine.mvcc import errors as mvcc_errors
from engine.proto import internal_pb2, rpc_pb2
from tests.server.inproc import InProcCluster, eventually, put, run

LEASE = 0x5EA5E


def _first_index_of_term(node, term: int) -> int:
    log = node.rn.raft.log
    for i in range(log.first_index(), log.last_index() + 1):
        if log.term(i) == term:
            return i
    raise AssertionError(f"no entry of term {term}")


async def _grant(node, lease_id: int, ttl: int) -> None:
    req = internal_pb2.InternalRequest(lease_grant=rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=ttl))
    await node.propose(req, 5.0)


def test_lessor_promoted_only_after_the_previous_terms_are_applied(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            promotions: list[tuple[str, int, int]] = []   # (name, term, consistent index at promote)
            for name, node in c.nodes.items():
                orig = node.applier.lessor.promote

                def spy(now, extend=0.0, _orig=orig, _name=name, _node=node):
                    promotions.append((_name, _node.term, _node.applier.consistent_index))
                    return _orig(now, extend)
                node.applier.lessor.promote = spy
            # A lease granted just before the leader changes.
            await _grant(lead, LEASE, 30)
            target_name = next(n for n, node in c.nodes.items() if node is not lead)
            target = c.nodes[target_name]
            await lead.transfer_leadership(target.member_id, 5.0)
            await eventually(lambda: target.is_leader and target.applier.lessor.primary, 10,
                             "the new leader's lessor to be promoted")
            mine = [p for p in promotions if p[0] == target_name]
            assert mine, promotions
            for _, term, ci in mine:
                first = _first_index_of_term(target, term)
                assert ci >= first, (f"promoted at consistent index {ci}, before the first entry "
                                     f"({first}) of its term {term} was applied")
            # The lease granted in the previous term is there, with its TTL.
            assert target.applier.lessor.keepalive(LEASE, time.monotonic()) == 30
        finally:
            await c.stop_all()
    run(main())


def test_keepalive_right_after_election_never_says_not_found(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            target_name = next(n for n, node in c.nodes.items() if node is not lead)
            target = c.nodes[target_name]
            outcomes: list[object] = []
            orig = target._on_soft_state

            def spy(ss, _orig=orig):
                _orig(ss)
                if target.is_leader:
                    # What a keepalive sees the moment this member leads.
                    try:
                        outcomes.append(target.applier.lessor.keepalive(LEASE, time.monotonic()))
                    except (mvcc_errors.LeaseNotFound, mvcc_errors.LeaseNotPrimary) as e:
                        outcomes.append(type(e))
            target._on_soft_state = spy
            await _grant(lead, LEASE, 30)
            await lead.transfer_leadership(target.member_id, 5.0)
            await eventually(lambda: bool(outcomes), 10, "the new leader's first keepalive")
            # Not yet primary: "ask the leader again" (the API retries), never "no such lease".
            assert outcomes[0] is not mvcc_errors.LeaseNotFound, outcomes
            assert outcomes[0] in (mvcc_errors.LeaseNotPrimary, 30), outcomes
            assert await target.wait_lessor_primary(5.0)
            assert target.applier.lessor.keepalive(LEASE, time.monotonic()) == 30
        finally:
            await c.stop_all()
    run(main())


def test_stalled_leader_does_not_revoke_a_lease_kept_alive_elsewhere(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        release = threading.Event()
        keeper: asyncio.Task | None = None
        try:
            old = await c.leader()
            await _grant(old, LEASE, 2)          # etcd's minimum TTL
            for node in c.nodes.values():
                await node.read_barrier(5.0)
                assert node.applier.lessor.lookup(LEASE) is not None
            # The leader's next fsync hangs (a stalled disk); its event loop
            # (housekeeping, the transport) keeps running meanwhile.
            wal = old.raftlog.wal
            orig_save = wal.save

            def stalled_save(*a, **kw):
                if threading.current_thread().name.startswith("wal"):
                    release.wait(30)
                return orig_save(*a, **kw)
            wal.save = stalled_save
            stuck = asyncio.ensure_future(put(old, b"stall", b"1", timeout=30))
            others = [n for n in c.nodes.values() if n is not old]

            def new_leader():
                return next((n for n in others if n.is_leader), None)
            await eventually(lambda: new_leader() is not None, 15, "a new leader while the old one is stalled")
            new = new_leader()

            async def keep_alive():   # the client, on the new leader
                while True:
                    if new.applier.lessor.primary:
                        new.applier.lessor.keepalive(LEASE, time.monotonic())
                    await asyncio.sleep(0.1)
            keeper = asyncio.ensure_future(keep_alive())
            # The stalled leader's own clock says the lease expired, and its
            # housekeeping has seen that (it offered it for revoking).
            await eventually(lambda: old.applier.lessor.lookup(LEASE).offered_at > float("-inf"), 15,
                             "the stalled leader to find the lease expired")
            assert old.is_leader   # it still believes it leads
            await eventually(lambda: any(m.term > old.term for m in old._incoming), 10,
                             "the new leader's messages to reach the stalled one")
            release.set()
            await asyncio.wait_for(asyncio.gather(stuck, return_exceptions=True), 30)
            await eventually(lambda: not old.is_leader and old.leader_id == new.member_id, 10,
                             "the old leader to follow the new one")
            await put(new, b"after", b"1")
            for node in c.nodes.values():
                await node.read_barrier(5.0)
            for name, node in c.nodes.items():
                assert node.applier.lessor.lookup(LEASE) is not None, \
                    f"{name}: the stalled leader revoked a lease kept alive on the new leader"
        finally:
            release.set()
            if keeper is not None:
                keeper.cancel()
            await c.stop_all()
    run(main())


def test_keepalive_on_a_just_elected_leader_over_grpc(hard_cluster_factory):
    """Real processes: grant, move the leadership at once, keep alive on the
    new leader: the TTL granted, never 0."""
    import grpc

    from engine.proto import rpc_pb2_grpc

    c = hard_cluster_factory(3)
    for attempt in range(3):
        lead = c.wait_leader()
        target = (lead + 1) % 3
        with grpc.insecure_channel(c.members[lead].endpoint) as ch:
            lid = rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(
                rpc_pb2.LeaseGrantRequest(ID=LEASE + attempt, TTL=30), timeout=5).ID
            rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(
                rpc_pb2.MoveLeaderRequest(targetID=c.members[target].member_id), timeout=10)
        with grpc.insecure_channel(c.members[target].endpoint) as ch:
            stub = rpc_pb2_grpc.LeaseStub(ch)
            got = list(stub.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lid)]), timeout=10))
            assert [r.TTL for r in got] == [30], got
            ttl = stub.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid), timeout=10)
            assert 25 <= ttl.TTL <= 30, ttl
