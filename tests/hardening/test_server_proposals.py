"""Issue 8 item 4, "proposals never outlive their caller", on real raftnode
processes: a Put to a member without a leader fails with the client's own
deadline (or, without one, with etcd's UNKNOWN "context deadline exceeded"
after the request timeout), and is never applied later, when the cluster
heals (etcd never proposes without a leader)."""
from __future__ import annotations

import time

import grpc

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import wait_for


def _stub(endpoint: str):
    ch = grpc.insecure_channel(endpoint)
    return ch, rpc_pb2_grpc.KVStub(ch)


def _leaderless(c, i: int) -> bool:
    st = c.status(i, timeout=0.5)
    return st is not None and st.leader == 0


def test_put_without_leader_fails_and_is_never_applied(hard_cluster_factory):
    c = hard_cluster_factory(3)
    lead = c.wait_leader()
    me = (lead + 1) % 3            # a follower: it loses its leader after an election timeout
    others = [i for i in range(3) if i != me]
    ch, kv = _stub(c.members[me].endpoint)
    try:
        kv.Put(rpc_pb2.PutRequest(key=b"warm", value=b"1"), timeout=5)
        for i in others:
            c.pause(i)
        wait_for(lambda: _leaderless(c, me), 15, "the lone member to know it has no leader")
        t0 = time.monotonic()
        try:
            kv.Put(rpc_pb2.PutRequest(key=b"ghost", value=b"boo"), timeout=2.0)
            raise AssertionError("a Put without quorum succeeded")
        except grpc.RpcError as e:
            took = time.monotonic() - t0
            # etcd: the client's own deadline fires (never "no leader" after waiting).
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (e.code(), e.details())
            assert took < 4.0, took
        # Without a client deadline: the member's own request timeout (5 s +
        # 2 election timeouts) ends it with etcd's answer for "never proposed".
        t0 = time.monotonic()
        try:
            kv.Put(rpc_pb2.PutRequest(key=b"ghost2", value=b"boo"))
            raise AssertionError("a Put without quorum succeeded")
        except grpc.RpcError as e:
            took = time.monotonic() - t0
            assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN, "context deadline exceeded"), \
                (e.code(), e.details())
            assert 5.0 < took < 9.0, took
        for i in others:
            c.resume(i)
        c.wait_leader(timeout=20)

        def marker_written():
            try:
                kv.Put(rpc_pb2.PutRequest(key=b"marker", value=b"1"), timeout=2)
                return True
            except grpc.RpcError:
                return False
        # Written through the same member after the heal: anything it still
        # had queued would have gone through raft before it.
        wait_for(marker_written, 20, "a Put through the healed member")
        for i in range(3):
            ch_i, kv_i = _stub(c.members[i].endpoint)
            with ch_i:
                got = kv_i.Range(rpc_pb2.RangeRequest(key=b"marker"), timeout=5)
                assert got.count == 1
                for k in (b"ghost", b"ghost2"):
                    got = kv_i.Range(rpc_pb2.RangeRequest(key=k), timeout=5)
                    assert got.count == 0, f"member {i}: the timed-out Put of {k!r} was applied later"
    finally:
        ch.close()
        for i in others:
            c.resume(i)


# -- in-process: the answers and the queue ----------------------------------------

def test_node_timeout_before_raft_is_definite_and_dropped(tmp_path):
    import asyncio

    import pytest

    from engine.proto import internal_pb2
    from engine.proto import raft_pb2 as pb
    from engine.server import errors
    from tests.server.inproc import InProcCluster, eventually, run

    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            lone_name = next(n for n, node in c.nodes.items() if node is not lead)
            lone = c.nodes[lone_name]
            for n in list(c.nodes):
                if n != lone_name:
                    await c.stop(n)
            await eventually(lambda: lone.leader_id == 0, 10, "the lone member to lose its leader")
            req = internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"ghost", value=b"x"))
            with pytest.raises(errors.DeadlineExceeded) as ei:
                await lone.propose(req, 0.3)
            assert str(ei.value) == "context deadline exceeded"
            cc = pb.ConfChange(type=pb.ConfChangeRemoveNode, node_id=lead.member_id)
            with pytest.raises(errors.DeadlineExceeded):
                await lone.propose_conf_change(cc, 0.3)
            # Nothing of them is left for a later leader.
            lone._wake.set()
            await eventually(lambda: not lone._proposals and not lone._conf_changes, 5,
                             "the abandoned proposals to be dropped")
            assert req.id not in lone._handed and cc.id not in lone._handed
            # A caller cancelled (a client that went away) is dropped too.
            task = asyncio.ensure_future(lone.propose(
                internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=b"gone", value=b"x")), 30))
            await eventually(lambda: bool(lone._proposals), 5, "the proposal to be queued")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            lone._wake.set()
            await eventually(lambda: not lone._proposals, 5, "the cancelled proposal to be dropped")
        finally:
            await c.stop_all()
    run(main())


def test_stopping_answers_timeout_for_what_raft_has_and_stopped_for_the_rest(tmp_path):
    """DESIGN "An answer is a promise": a proposal raft already has may still
    commit after this member stops (through the others), so its caller gets
    the indeterminate "request timed out"; one still queued (never handed to
    raft) gets the definite "server stopped"."""
    import asyncio

    import pytest

    from engine.proto import internal_pb2
    from engine.server import errors
    from tests.server.inproc import InProcCluster, eventually, run

    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            lead_name = next(n for n, node in c.nodes.items() if node is lead)
            # The leader's messages go nowhere: what it proposes cannot commit yet.
            lead.transport.send = lambda msgs: None
            handed = internal_pb2.InternalRequest(id=lead.next_request_id(),
                                                  put=rpc_pb2.PutRequest(key=b"maybe", value=b"x"))
            task = asyncio.ensure_future(lead.propose(handed, 30))
            await eventually(lambda: handed.id in lead._handed, 5, "the put to be handed to raft")
            await c.stop(lead_name)
            with pytest.raises(errors.Timeout) as ei:
                await task
            assert str(ei.value) == "etcdserver: request timed out"

            # A proposal still queued (no leader): never proposed, definite.
            names = list(c.nodes)
            await c.stop(names[0])
            lone = c.nodes[names[1]]
            await eventually(lambda: lone.leader_id == 0, 10, "the lone member to lose its leader")
            queued = internal_pb2.InternalRequest(id=lone.next_request_id(),
                                                  put=rpc_pb2.PutRequest(key=b"never", value=b"x"))
            task = asyncio.ensure_future(lone.propose(queued, 30))
            await eventually(lambda: any(p[0] == queued.id for p in lone._proposals), 5, "the put to be queued")
            await c.stop(names[1])
            with pytest.raises(errors.Stopped):
                await task
        finally:
            await c.stop_all()
    run(main())


def test_publish_retries_until_done_or_stopped(tmp_path, monkeypatch):
    """etcd's publish retries until the server stops; ours gave up after 10."""
    from engine.server import errors
    from engine.server import housekeeping as housekeeping_mod
    from tests.server.inproc import InProcCluster, eventually, run
    monkeypatch.setattr(housekeeping_mod, "PUBLISH_BACKOFF", (0.001, 0.004))

    async def main():
        c = InProcCluster(str(tmp_path), 1)
        await c.start_all()
        try:
            n = c.nodes["n1"]
            await c.leader()
            await eventually(lambda: n.membership.members[n.member_id].client_urls, 10, "published once")
            n.membership.members[n.member_id].client_urls = []   # as if never published
            orig, tries = n.propose, []

            async def failing(req, timeout, **kw):
                if req.WhichOneof("request") == "member_attributes" and len(tries) < 25:
                    tries.append(1)
                    raise errors.NoLeader()
                return await orig(req, timeout, **kw)
            n.propose = failing
            await n._publish()
            assert len(tries) == 25
            assert n.membership.members[n.member_id].client_urls == ["http://127.0.0.1:1"]
            # Stopped: no more tries.
            tries.clear()
            n.membership.members[n.member_id].client_urls = []
            n._stopped = True
            await n._publish()
            assert tries == []
            n._stopped = False
        finally:
            await c.stop_all()
    run(main())
