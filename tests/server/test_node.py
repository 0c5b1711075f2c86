"""The node server below the etcd API: replication, reads, restarts,
membership and snapshots, with real peer gRPC and real files."""
from __future__ import annotations


import pytest

from engine.proto import internal_pb2
from engine.proto import raft_pb2 as pb
from engine.server.membership import MemberRecord
from tests.server.inproc import InProcCluster, eventually, get, put, run
from tests.support.ports import free_port


def test_write_on_follower_read_linearizably_elsewhere(tmp_path):
    async def go():
        c = InProcCluster(str(tmp_path))
        await c.start_all()
        try:
            lead = await c.leader()
            followers = [n for n in c.nodes.values() if n is not lead]
            r = await put(followers[0], b"k", b"v1")
            assert r.header.revision == 2
            assert await get(followers[1], b"k") == b"v1"
            assert await get(lead, b"k") == b"v1"
        finally:
            await c.stop_all()
    run(go())


def test_restart_keeps_data_and_rejoins(tmp_path):
    async def go():
        c = InProcCluster(str(tmp_path))
        await c.start_all()
        try:
            lead = await c.leader()
            for i in range(20):
                await put(lead, b"k%d" % i, b"v%d" % i)
            victim = next(n for n, node in c.nodes.items() if node is not lead)
            await c.stop(victim)
            await put(lead, b"while-down", b"x")
            node = await c.start(victim)
            assert await get(node, b"k19") == b"v19"
            assert await get(node, b"while-down") == b"x"
        finally:
            await c.stop_all()
    run(go())


def test_leader_loss_elects_new_leader_and_keeps_writes(tmp_path):
    async def go():
        c = InProcCluster(str(tmp_path))
        await c.start_all()
        try:
            lead = await c.leader()
            await put(lead, b"before", b"1")
            old_term = lead.term
            name = next(n for n, node in c.nodes.items() if node is lead)
            await c.stop(name)
            new = await c.leader()
            assert new.term > old_term
            await put(new, b"after", b"2")
            assert await get(new, b"before") == b"1"
        finally:
            await c.stop_all()
    run(go())


def test_join_as_learner_by_snapshot_then_promote(tmp_path):
    async def go():
        c = InProcCluster(str(tmp_path), extra=("--snapshot-count", "50", "--experimental-snapshot-catchup-entries", "50"))
        await c.start_all()
        try:
            lead = await c.leader()
            for i in range(200):  # past several snapshots: the log is compacted
                await put(lead, b"k%03d" % i, b"v")
            assert lead.raftlog.storage.first_index() > 1
            c.names.append("n4")
            c.peer_ports["n4"] = free_port()
            rec = MemberRecord(0, "", [f"http://127.0.0.1:{c.peer_ports['n4']}"], [])
            new_id = 0xABCDEF
            cc = pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=new_id,
                               context=internal_pb2.ConfChangeContext(member=rec.to_pb()).SerializeToString())
            await lead.propose_conf_change(cc, 5.0)
            n4 = await c.start("n4", state="existing")
            assert n4.member_id == new_id
            await eventually(lambda: n4.applier.kv.current_rev == lead.applier.kv.current_rev,
                             what="learner caught up")
            assert n4.is_learner and n4.raftlog.storage.snapshot().metadata.index > 0, \
                "the new member should have caught up from a snapshot"
            await put(lead, b"after-join", b"x")
            await eventually(lambda: n4.applier.kv.get(b"after-join") is not None, what="learner follows")
            assert n4.applier.hash_kv().hash == lead.applier.hash_kv().hash
            await lead.propose_conf_change(pb.ConfChange(type=pb.ConfChangeAddNode, node_id=new_id), 5.0)
            await eventually(lambda: not n4.is_learner, what="promotion applied on the member")
            assert len(lead.rn.raft.voters) == 4
        finally:
            await c.stop_all()
    run(go())


def test_snapshot_file_restores_into_a_new_cluster(tmp_path):
    import hashlib
    import subprocess
    import sys

    async def write_and_snapshot():
        c = InProcCluster(str(tmp_path / "old"), size=1)
        await c.start_all()
        try:
            lead = await c.leader()
            for i in range(10):
                await put(lead, b"k%d" % i, b"v%d" % i)
            data = lead.applier.snapshot_bytes()
            rev = lead.applier.kv.current_rev
        finally:
            await c.stop_all()
        (tmp_path / "snap.db").write_bytes(data + hashlib.sha256(data).digest())
        return rev

    rev = run(write_and_snapshot())
    out = subprocess.run([sys.executable, "-m", "engine", "snapshot", "restore", str(tmp_path / "snap.db"),
                          "--data-dir", str(tmp_path / "new" / "n1")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"x" * 512 + b"y" * 32)
    out = subprocess.run([sys.executable, "-m", "engine", "snapshot", "restore", str(bad),
                          "--data-dir", str(tmp_path / "other")], capture_output=True, text=True)
    assert out.returncode == 1 and "checksum mismatch" in out.stderr

    async def read_back():
        c = InProcCluster(str(tmp_path / "new"), size=1)
        await c.start_all()
        try:
            lead = await c.leader()
            assert await get(lead, b"k9") == b"v9"
            r = await put(lead, b"after", b"x")
            assert r.header.revision == rev + 1
        finally:
            await c.stop_all()
    run(read_back())


def test_periodic_auto_compaction_through_the_log(tmp_path):
    async def go():
        c = InProcCluster(str(tmp_path), extra=("--auto-compaction-mode", "periodic",
                                                "--auto-compaction-retention", "1s"))
        await c.start_all()
        try:
            lead = await c.leader()
            for i in range(5):
                await put(lead, b"k", b"v%d" % i)
            rev = lead.applier.kv.current_rev
            # Within a couple of retention periods every member has compacted
            # (the same revision: it went through the log).
            await eventually(lambda: all(n.applier.kv.compact_rev >= rev for n in c.nodes.values()),
                             timeout=10, what="auto-compaction on every member")
            assert len({n.applier.kv.compact_rev for n in c.nodes.values()}) == 1
        finally:
            await c.stop_all()
    run(go())


@pytest.mark.parametrize("size", [1, 5, 7])
def test_cluster_sizes_elect_and_replicate(tmp_path, size):
    async def go():
        c = InProcCluster(str(tmp_path), size=size)
        await c.start_all()
        try:
            lead = await c.leader(timeout=20)
            await put(lead, b"size", b"%d" % size)
            for n in c.nodes.values():
                assert await get(n, b"size") == b"%d" % size
            assert len(lead.rn.raft.voters) == size
        finally:
            await c.stop_all()
    run(go())
