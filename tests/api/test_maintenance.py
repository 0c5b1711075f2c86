"""Maintenance and Inspect: endpoint status/health/hashkv, alarm list,
defrag, snapshot save, move-leader, through etcdctl; Inspect through grpc."""
from __future__ import annotations

import asyncio
import json

import grpc

from engine.proto import inspect_pb2 as ipb
from engine.proto import inspect_pb2_grpc, rpc_pb2, rpc_pb2_grpc

from .conftest import channel, ctl, error_line, ok, run


def test_endpoint_status_health_hashkv(cluster3):
    eps = cluster3.endpoints
    ok(eps, "put", "m/k", "v")
    st = json.loads(ok(eps, "endpoint", "status", "-w", "json"))
    leaders = {s["Status"]["leader"] for s in st}
    assert len(leaders) == 1 and leaders.pop() in {s["Status"]["header"]["member_id"] for s in st}
    for s in st:
        body = s["Status"]
        assert body["version"] == "3.4.23"
        assert body["dbSize"] > 0 and body["dbSizeInUse"] > 0
        assert body["raftIndex"] >= body["raftAppliedIndex"] > 0
        assert body["raftTerm"] == body["header"]["raft_term"]
        assert "errors" not in body and "isLearner" not in body
    r = ctl(eps, "endpoint", "health")  # etcdctl 3.4 prints this on stderr
    assert r.returncode == 0 and r.stderr.count("is healthy: successfully committed proposal") == 3
    # Every member has the same key space at the same revision.
    ok(eps, "put", "m/k", "v2")
    rev = json.loads(ok(eps, "get", "m/k", "-w", "json"))["header"]["revision"]
    for _ in range(50):
        hashes = json.loads(ok(eps, "endpoint", "hashkv", f"--rev={rev}", "-w", "json"))
        if len({h["HashKV"]["hash"] for h in hashes}) == 1:
            break
    assert len({h["HashKV"]["hash"] for h in hashes}) == 1, hashes
    assert ok(eps, "alarm", "list") == ""
    assert ok(eps, "alarm", "list", "-w", "json") == "{}\n"  # no header, like etcd 3.4


def test_defrag_snapshot_move_leader(cluster3, tmp_path):
    eps = cluster3.endpoints
    out = ok(eps, "defrag")
    assert out.count("Finished defragmenting etcd member") == 3
    snap = tmp_path / "s.db"
    r = ctl(eps[:1], "snapshot", "save", str(snap))
    assert r.returncode == 0 and r.stdout == f"Snapshot saved at {snap}\n", r.stderr
    assert snap.stat().st_size % 512 == 32
    leader = cluster3.wait_leader(10)
    target = (leader + 1) % 3
    tid = cluster3.members[target].member_id
    lid = cluster3.members[leader].member_id
    assert ok(eps, "move-leader", f"{tid:x}") == f"Leadership transferred from {lid:x} to {tid:x}\n"
    assert cluster3.wait_leader(10) == target
    # Asked of a member that is not the leader (etcdctl itself asks the leader).
    with channel(eps[leader]) as ch:
        try:
            rpc_pb2_grpc.MaintenanceStub(ch).MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=lid), timeout=5)
            raise AssertionError("MoveLeader on a follower succeeded")
        except grpc.RpcError as e:
            assert (e.code(), e.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: not leader")
    assert error_line(eps, "move-leader", "1234") == "Error: etcdserver: bad leader transferee"


def test_inspect(cluster3):
    eps = cluster3.endpoints
    leader = cluster3.wait_leader(10)
    # The put counter is the receiving member's: send the put to the leader.
    ok([eps[leader]], "put", "insp/k", "v")

    async def go():
        async with grpc.aio.insecure_channel(eps[leader]) as ch:
            stub = inspect_pb2_grpc.InspectStub(ch)
            st = await stub.RaftStatus(ipb.RaftStatusRequest(), timeout=2)
            assert st.role == ipb.LEADER and st.leader_id == st.header.member_id
            assert st.header.name == cluster3.members[leader].name
            assert len(st.voters) == 3 and len(st.progress) == 3
            assert st.commit_index >= st.applied_index > 0 and st.persisted_index == st.last_index
            assert all(p.state == ipb.REPLICATE for p in st.progress)
            tail = await stub.WalTail(ipb.WalTailRequest(limit=5), timeout=2)
            assert 0 < len(tail.entries) <= 5 and tail.entries[-1].index == tail.last_index
            assert any('put key="insp/k"' in e.text for e in tail.entries)
            older = await stub.WalTail(ipb.WalTailRequest(limit=2, before_index=tail.entries[0].index), timeout=2)
            assert [e.index for e in older.entries] == [tail.entries[0].index - 2, tail.entries[0].index - 1]
            hist = await stub.LeaderHistory(ipb.LeaderHistoryRequest(), timeout=2)
            assert any(e.kind == ipb.ELECTED for e in hist.events)
            rates = await stub.Rates(ipb.RatesRequest(), timeout=2)
            names = {r.name: r for r in rates.rates}
            assert names["put"].total >= 1 and names["commit"].total >= st.commit_index
            assert {"put", "range", "txn", "proposal", "apply", "commit", "watch_event"} <= set(names)
            # Watchers: one of ours, seen with its stream and options.
            watch_call = rpc_pb2_grpc.WatchStub(ch).Watch()
            await watch_call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                key=b"insp/", range_end=b"insp0", prev_kv=True, filters=[rpc_pb2.WatchCreateRequest.NOPUT])))
            await asyncio.wait_for(watch_call.read(), 5)
            ws = await stub.Watchers(ipb.WatchersRequest(), timeout=2)
            mine = [w for w in ws.watchers if w.key == b"insp/"]
            assert len(mine) == 1 and mine[0].prev_kv and list(mine[0].filters) == ["noput"]
            assert mine[0].stream_id and mine[0].synced and mine[0].peer
            watch_call.cancel()
            # The status stream: the current status at once.
            stream = stub.WatchStatus(ipb.WatchStatusRequest(min_interval_ms=50))
            first = await asyncio.wait_for(stream.read(), 5)
            assert first.status.role == ipb.LEADER and first.leader_events
            stream.cancel()
    run(go())
