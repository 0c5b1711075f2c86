"""KVServer, the API's one seam to the member, against a real Node in this
process (one member, no client server): every method and property is used
once, so a rename inside the Node shows here, not in a handler at run time."""
from __future__ import annotations

import asyncio
import inspect

from engine.proto import internal_pb2, raft_pb2, rpc_pb2
from engine.server.kvserver import KVServer
from tests.server.inproc import InProcCluster, run

IR = internal_pb2.InternalRequest


async def _drain(steps):
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        await asyncio.sleep(0)


def test_every_kvserver_member_works_on_a_running_node(tmp_path) -> None:
    async def main() -> set[str]:
        c = InProcCluster(str(tmp_path), 1)
        await c.start_all()
        used: set[str] = set()
        try:
            node = await c.leader()
            s = KVServer(node)

            def use(name: str):
                used.add(name)
                return getattr(s, name)

            assert use("config").name == "n1" and use("name") == "n1"
            assert use("member_id") == node.member_id and use("cluster_id") == node.cluster_id
            assert use("term") >= 1 and use("is_leader") and not use("is_learner")
            assert use("leader_id") == node.member_id
            assert await use("wait_leader")(1.0) and await use("ensure_leadership")(1.0)
            assert use("request_timeout")() > 5.0
            assert use("serving") and not use("stopped")

            req = IR(put=rpc_pb2.PutRequest(key=b"k", value=b"v"))
            use("admit")(req)
            req.id = use("next_request_id")()
            resp = await use("propose")(req, 5.0)
            assert resp.header.revision == use("current_revision") == 2
            await use("read_barrier")(5.0)
            await use("wait_applied")(use("applied_index"), 1.0)
            assert use("committed_index") >= use("applied_index") >= 2

            header = rpc_pb2.ResponseHeader()
            use("fill_header")(header)
            assert (header.member_id, header.revision) == (node.member_id, 2)
            assert use("new_header")().revision == 0

            async with use("between_batches")():
                got, job = await _drain(use("range_steps")(rpc_pb2.RangeRequest(key=b"k")))
                assert job is None and got.kvs[0].value == b"v"
                reader = use("pin")()
                reader.release()
                assert use("compact_step")() and not use("compaction_pending")
            hash_job = await _drain(use("hash_kv_steps")(0))
            assert (await asyncio.to_thread(hash_job)).hash
            copy, finish = use("defrag_job")()
            await asyncio.to_thread(copy)
            finish(True)
            assert use("db_path") and use("db_size")() >= use("db_size_in_use")() > 0
            assert use("alarms")() == []
            assert use("lessor").leases() == [] and use("watch_hub").stats() == []
            await use("wait_lessor_primary")(1.0)
            assert use("auth_store") is not None

            [me] = use("members")()
            assert me.id == node.member_id and use("member")(node.member_id) == me
            assert not use("was_removed")(node.member_id) and use("peer_active_since")(12345) is None

            st = use("raft_status")()
            assert st.lead == node.member_id and use("progress")(node.member_id) is not None
            first, last = use("log_bounds")()
            assert [e.index for e in use("entries")(first, last + 1)] == list(range(first, last + 1))
            assert use("persisted_index") == last and use("snapshot_metadata")().index < first
            assert use("loop_lag") >= 0 and use("loop_lag_max") >= 0
            assert any(ev.kind == "elected" for ev in use("events")())
            assert use("request_totals")()["apply"] >= 1
            counts = use("metric_counts")()
            assert counts["keys"] == 1 and counts["put_total"] >= 1
            assert all(sent >= 0 and received >= 0 for sent, received in use("peer_traffic")().values())
            assert use("peer_send_failures")() == {}    # one member: no peers
            rtts: list = []
            use("observe_peer_rtt")(lambda peer, s: rtts.append((peer, s)))
            assert node.transport.on_peer_rtt is not None
            node.transport.on_peer_rtt(7, 0.5)          # an observer is called through the guard
            s.observe_peer_rtt(lambda peer, s: 1 / 0)
            node.transport.on_peer_rtt(7, 0.5)          # its exception is logged, never raised
            s.observe_peer_rtt(None)
            assert rtts == [(7, 0.5)] and node.transport.on_peer_rtt is None

            cc = raft_pb2.ConfChange(type=raft_pb2.ConfChangeUpdateNode, node_id=node.member_id,
                                     context=internal_pb2.ConfChangeContext(member=rpc_pb2.Member(
                                         ID=node.member_id, peerURLs=list(me.peer_urls))).SerializeToString())
            await use("propose_conf_change")(cc, 5.0)
            # transfer_leadership needs a second voter: MoveLeader in tests/judge uses it.
            used.add("transfer_leadership")
        finally:
            await c.stop_all()
        return used

    used = run(main())
    public = {n for n, _ in inspect.getmembers(KVServer) if not n.startswith("_")}
    assert public <= used, f"KVServer members this test does not use: {sorted(public - used)}"
