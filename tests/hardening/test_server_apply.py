"""Issue 8 item 1 (server part): no committed entry, whatever it holds, may
crash apply or start. A conf change that cannot take effect is logged
(log.error) and skipped the same way on every member, the applied index
moves past it, and a member whose store holds a member record the transport
cannot use still starts.

In-process members (real peer gRPC, real data dirs) get crafted entries
straight into the raft log of the leader; one real-process test replays the
issue's typo with etcdctl.
"""
from __future__ import annotations

import logging
import subprocess

import grpc

from engine.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from engine.proto import raft_pb2 as pb
from engine.transport.transport import PeerTransport
from tests.server.inproc import InProcCluster, eventually, get, put, run


async def _commit_raw(c: InProcCluster, entry_data: bytes) -> int:
    """Append a conf-change entry holding entry_data on the leader, wait until
    every member applied past it; returns its index."""
    lead = await c.leader()
    where: list[int] = []

    def propose() -> None:
        # Appended as the leader's own, past the core's proposal checks
        # (which turn an undecodable or impossible change into a no-op): a
        # forged or corrupt entry that got committed anyway.
        r = lead.rn.raft
        assert r.append_entry([pb.Entry(type=pb.EntryConfChange, data=entry_data)])
        r.bcast_append()
        where.append(r.log.last_index())
    lead._local_calls.append(propose)
    lead._wake.set()
    await eventually(lambda: bool(where), 5, "the entry to be appended")
    index = where[0]
    await eventually(lambda: all(n.applier.consistent_index >= index and n.applied_index >= index
                                 for n in c.nodes.values()), 10, f"every member to apply past {index}")
    return index


def _cc(type_, node_id: int, peer_urls=(), name: str = "x") -> bytes:
    ctx = internal_pb2.ConfChangeContext(member=rpc_pb2.Member(ID=node_id, name=name, peerURLs=list(peer_urls)))
    return pb.ConfChange(type=type_, node_id=node_id, context=ctx.SerializeToString()).SerializeToString()


def test_bad_conf_changes_are_skipped_alike_everywhere(tmp_path, caplog, monkeypatch):
    # The transport of 407b693 raised on an https URL without peer TLS; make
    # sure apply and start survive a transport that does, whatever it does.
    orig_add = PeerTransport.add_peer

    def picky_add_peer(self, member_id, urls):
        if any(u.startswith("https://") for u in urls):
            raise ValueError(f"{urls} is https but the transport has no TLS credentials")
        return orig_add(self, member_id, urls)
    monkeypatch.setattr(PeerTransport, "add_peer", picky_add_peer)
    caplog.set_level(logging.ERROR, logger="engine.server")

    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            voters = set(lead.rn.raft.voters)
            # 1. bytes that are no ConfChange at all
            await _commit_raw(c, b"\xff\xfe not a conf change \x00")
            # 2. a member id of 0
            await _commit_raw(c, _cc(pb.ConfChangeAddNode, 0, ["http://127.0.0.1:9"]))
            # 3. UpdateNode for a member nobody knows
            await _commit_raw(c, _cc(pb.ConfChangeUpdateNode, 0xBAD, ["http://127.0.0.1:9"]))
            # 4. a learner whose URL the transport refuses
            await _commit_raw(c, _cc(pb.ConfChangeAddLearnerNode, 0x1EA, ["https://127.0.0.1:1"]))
            for name, n in c.nodes.items():
                assert n._fatal is None, f"{name}: {n._fatal!r}"
                assert set(n.rn.raft.voters) == voters
                assert 0x1EA in n.rn.raft.learners
                assert 0x1EA in n.membership.members
                assert 0xBAD not in n.membership.members and 0 not in n.membership.members
            errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
            assert "refused and skipped" in errors and "undecodable" in errors
            assert "updates unknown member" in errors
            assert "cannot use peer URLs https://127.0.0.1:1" in errors
            # Still a working cluster...
            await put(lead, b"after", b"1")
            for n in c.nodes.values():
                assert await get(n, b"after") == b"1"
            # ... whose members restart with that member record in the store.
            name = next(k for k, n in c.nodes.items() if n is not lead)
            await c.stop(name)
            node = await c.start(name)
            assert 0x1EA in node.membership.members
            await eventually(lambda: node.leader_id != 0, 10, "the restarted member to follow a leader")
            await put(await c.leader(), b"again", b"2")
            assert await get(node, b"again") == b"2"
        finally:
            await c.stop_all()
    run(main())


def test_member_add_with_an_unusable_url_does_not_brick_the_member(hard_cluster_factory, etcd_binaries):
    """The issue's typo: a learner with an https peer URL on a plaintext member."""
    c = hard_cluster_factory(1)
    _, etcdctl = etcd_binaries
    ep = c.endpoints[0]
    out = subprocess.run([etcdctl, f"--endpoints={ep}", "member", "add", "x", "--learner",
                          "--peer-urls=https://127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    with grpc.insecure_channel(ep) as ch:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=5)
    c.stop_member(0)
    assert c.members[0].proc.returncode == 0
    c.restart(0)
    c.wait_leader(timeout=20)
    with grpc.insecure_channel(ep) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        kv.Put(rpc_pb2.PutRequest(key=b"k2", value=b"v"), timeout=5)
        assert kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5).count == 1
        ms = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
    assert any(m.peerURLs == ["https://127.0.0.1:1"] and m.isLearner for m in ms)


def test_member_table_rows_that_are_not_records_are_ignored(tmp_path, caplog):
    """A store restored from a hostile snapshot may hold anything in its
    member table: the member still starts (the rows are logged and left out)."""
    from engine.mvcc.apply import open_applier
    from engine.server.membership import Membership

    caplog.set_level(logging.ERROR, logger="engine.server")
    ap = open_applier(str(tmp_path / "d"), member_id=1)
    try:
        b = ap.backend
        b.put_member(1, '{"id": 1, "name": "ok", "peer_urls": ["http://127.0.0.1:2380"], "client_urls": []}')
        b.put_member(2, "not json")
        b.put_member(3, "[1, 2]")
        b.put_member(4, '{"id": 4, "bogus": true}')
        b.put_member(5, '{"id": 5, "name": "x", "peer_urls": "http://a:1", "client_urls": []}')
        b.put_member(6, '{"removed": true}')
        ms = Membership(b)
        assert sorted(ms.members) == [1] and ms.removed == {6}
        assert sum("not a member record" in r.getMessage() for r in caplog.records) == 4
    finally:
        ap.close()


def test_a_peer_message_the_core_chokes_on_is_dropped(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="engine.server")

    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            f = next(n for n in c.nodes.values() if n is not lead)
            # A heartbeat whose commit is past the log (a lying "member").
            f._on_messages([pb.Message(type=pb.MsgHeartbeat, to=f.member_id, from_=lead.member_id,
                                       term=lead.term, commit=f.rn.raft.log.last_index() + 10_000)])
            # Anything else the core raises on.
            orig = f.rn.step
            calls = []

            def step(m):
                if m.type == pb.MsgHeartbeat and not calls:
                    calls.append(m)
                    raise AssertionError("core choked")
                return orig(m)
            f.rn.step = step
            await eventually(lambda: bool(calls), 5, "a heartbeat to reach the core")
            await eventually(lambda: f.dropped_peer_messages >= 2, 5, "both messages to be dropped")
            assert f._fatal is None
            await put(lead, b"still", b"ok")
            assert await get(f, b"still") == b"ok"
            assert any("dropped MsgHeartbeat" in r.getMessage() for r in caplog.records)
        finally:
            await c.stop_all()
    run(main())


def test_a_request_whose_apply_raises_is_skipped_alike_everywhere(tmp_path, caplog):
    import asyncio

    from engine.server import errors as server_errors
    caplog.set_level(logging.ERROR, logger="engine.server")

    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            for n in c.nodes.values():
                orig = n._apply_member_attributes

                def handler(req, _orig=orig):
                    if req.member_attributes.name == "boom":
                        raise KeyError("a bug this request's content triggers")
                    return _orig(req)
                n.applier.register("member_attributes", handler)
            boom = internal_pb2.InternalRequest(member_attributes=rpc_pb2.Member(ID=lead.member_id, name="boom"))
            results = await asyncio.gather(
                put(lead, b"before", b"1"), lead.propose(boom, 5.0), put(lead, b"after", b"2"),
                return_exceptions=True)
            assert isinstance(results[1], server_errors.ApplyFailed), results
            assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception), results
            for n in c.nodes.values():
                assert n._fatal is None
                assert await get(n, b"before") == b"1" and await get(n, b"after") == b"2"
            cis = {n.applier.consistent_index for n in c.nodes.values()}
            await eventually(lambda: len({n.applier.consistent_index for n in c.nodes.values()}) == 1, 5,
                             "every member at the same applied index")
            assert sum("cannot be applied: skipped" in r.getMessage() for r in caplog.records) == 3, cis
        finally:
            await c.stop_all()
    run(main())
