"""Snapshots move both ways between raftnode and real etcd 3.4 (issue 12's
proof), each with updates, deletes, a lease and a compaction in the history:

    raftnode -> etcdctl snapshot save, status, restore -> etcd serves the keys
    etcd -> etcdctl snapshot save -> raftnode snapshot restore -> raftnode serves them

One member each side, real processes, stopped by PID."""
from __future__ import annotations

import contextlib
import json
import pathlib
import subprocess
import sys
from typing import Iterator

import pytest

from engine.cli import launch
from engine.mvcc import bbolt
from tests.support import ports
from tests.support.etcd import EtcdCluster, EtcdMember, etcdctl, start_etcd_cluster
from tests.support.raftnode import start_raftnode_cluster

from .test_bbolt import status_of


def ok(eps, *args) -> str:
    r = etcdctl(eps, *args)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def get_all(eps, *extra) -> tuple[int, list[dict]]:
    """(header revision, kvs) of every key, as etcdctl prints them in JSON."""
    out = json.loads(ok(eps, "get", "", "--prefix", "-w", "json", *extra))
    return int(out["header"]["revision"]), out.get("kvs", [])


def write_history(eps) -> dict:
    """Puts, an update, deletes, a lease with a key, a compaction and writes
    after it; what a restored member must answer the same."""
    for i in range(12):
        ok(eps, "put", f"k{i:02d}", f"v{i}")
    ok(eps, "put", "k01", "v1 again")
    ok(eps, "del", "k02")
    ok(eps, "del", "k1", "--prefix")
    lease = ok(eps, "lease", "grant", "900").split()[1]
    ok(eps, "put", "--lease=" + lease, "leased", "x" * 5000)
    rev, _ = get_all(eps)
    compacted = rev - 3
    ok(eps, "compaction", str(compacted))
    ok(eps, "put", "k03", "after the compaction")
    rev, kvs = get_all(eps)
    return {"rev": rev, "kvs": kvs, "old": get_all(eps, f"--rev={rev - 2}")[1], "lease": lease,
            "compacted": compacted}


def check_serves(eps, want: dict) -> None:
    rev, kvs = get_all(eps)
    assert (rev, kvs) == (want["rev"], want["kvs"])
    assert get_all(eps, f"--rev={want['rev'] - 2}")[1] == want["old"]
    r = etcdctl(eps, "get", "k00", f"--rev={want['compacted'] - 1}")
    assert r.returncode != 0 and "required revision has been compacted" in r.stderr
    assert want["lease"] in ok(eps, "lease", "list")
    ttl = json.loads(ok(eps, "lease", "timetolive", want["lease"], "--keys", "-w", "json"))
    assert ttl["keys"] == ["bGVhc2Vk"] and 0 < ttl["ttl"] <= 900
    out = json.loads(ok(eps, "put", "new", "v", "-w", "json"))
    assert int(out["header"]["revision"]) == want["rev"] + 1


@contextlib.contextmanager
def restored_etcd(tmp_path, snap, etcd_bin) -> Iterator[EtcdCluster]:
    """`etcdctl snapshot restore` of ``snap`` into a new one-member cluster,
    and real etcd started on it (stopped by PID on the way out)."""
    cp, pp = ports.free_ports(2)
    m = EtcdMember(name="r1", client_port=cp, peer_port=pp, data_dir=tmp_path / "r1.data",
                   log_path=tmp_path / "r1.log")
    initial = f"r1={m.peer_url}"
    ok([], "snapshot", "restore", str(snap), "--name", "r1", "--initial-cluster", initial,
       "--initial-advertise-peer-urls", m.peer_url, "--data-dir", str(m.data_dir))
    with EtcdCluster(members=[m], data_dir=tmp_path, token="restored") as c:
        c.track()
        m.proc = launch.spawn([etcd_bin, *launch.member_flags("r1", m.data_dir, m.client_url, m.peer_url,
                                                              initial, "restored"),
                               *launch.ETCD_LOG_FLAGS], m.log_path, die_with_parent=True).popen
        c.wait_healthy(30)
        yield c


def test_raftnode_snapshot_restores_into_etcd(tmp_path, etcd_binaries):
    etcd_bin, _ = etcd_binaries
    snap = tmp_path / "snap.db"
    with start_raftnode_cluster(tmp_path / "rn", size=1) as rn:
        want = write_history(rn.endpoints)
        ok(rn.endpoints, "snapshot", "save", str(snap))
    data = snap.read_bytes()
    assert bbolt.is_bbolt(str(snap)), "Maintenance.Snapshot does not stream etcd's format"
    raw = tmp_path / "raw.db"
    raw.write_bytes(data[:-32])
    status = json.loads(ok([], "snapshot", "status", str(snap), "-w", "json"))
    assert status == status_of(str(raw))
    assert status["revision"] == want["rev"]

    with restored_etcd(tmp_path, snap, etcd_bin) as c:
        check_serves(c.endpoints, want)


def test_etcd_snapshot_restores_into_raftnode(tmp_path, etcd_binaries):
    snap = tmp_path / "snap.db"
    with start_etcd_cluster(tmp_path / "etcd") as e:
        want = write_history(e.endpoints)
        ok(e.endpoints, "snapshot", "save", str(snap))
    root = pathlib.Path(tmp_path / "rn")
    r = subprocess.run([sys.executable, "-m", "engine", "snapshot", "restore", str(snap),
                        "--data-dir", str(root / "n1.data")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"at revision {want['rev']}" in r.stdout
    # start_raftnode_cluster names its first member n1 with data in n1.data: the restored dir
    with start_raftnode_cluster(root, size=1) as rn:
        check_serves(rn.endpoints, want)


@pytest.mark.soak
def test_big_etcd_snapshot_reads_as_etcdctl_reads_it(tmp_path, etcd_binaries):
    """A real etcd file with branch pages, overflow pages and freed pages
    (deletes, a compaction, a defrag-free history): our reader sees exactly
    what etcdctl snapshot status hashes, and raftnode restores every key."""
    import random

    import grpc

    from engine.proto import rpc_pb2, rpc_pb2_grpc

    rng = random.Random(12)
    snap = tmp_path / "snap.db"
    with start_etcd_cluster(tmp_path / "etcd") as e:
        with grpc.insecure_channel(e.endpoints[0]) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(4000):
                size = rng.choice([0, 10, 100, 1000, 5000, 70000]) if i % 50 else 200000
                kv.Put(rpc_pb2.PutRequest(key=b"big/%05d" % rng.randrange(3000), value=b"x" * size), timeout=30)
                if i % 7 == 0:
                    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"big/%05d" % rng.randrange(3000)), timeout=30)
            kv.Compact(rpc_pb2.CompactionRequest(revision=3000, physical=True), timeout=60)
        want = get_all(e.endpoints, "--keys-only")
        ok(e.endpoints, "snapshot", "save", str(snap))
    raw = tmp_path / "raw.db"
    raw.write_bytes(snap.read_bytes()[:-32])
    with bbolt.Reader(str(raw)) as r:
        assert r.meta.freelist == bbolt.NO_FREELIST      # etcd 3.4: NoFreelistSync
    assert json.loads(ok([], "snapshot", "status", str(snap), "-w", "json")) == status_of(str(raw))
    r = subprocess.run([sys.executable, "-m", "engine", "snapshot", "restore", str(snap),
                        "--data-dir", str(tmp_path / "rn" / "n1.data")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with start_raftnode_cluster(tmp_path / "rn", size=1) as rn:
        assert get_all(rn.endpoints, "--keys-only") == want


AUTH_SETUP = (["put", "a", "1"], ["user", "add", "root:pw"], ["role", "add", "root"],
              ["user", "grant-role", "root", "root"], ["user", "add", "bob:bobpw"], ["role", "add", "r"],
              ["role", "grant-permission", "r", "read", "a"], ["user", "grant-role", "bob", "r"],
              ["auth", "enable"])


def check_auth(eps) -> None:
    """Users, roles, password hashes and the enabled flag came across."""
    assert "user name is empty" in etcdctl(eps, "get", "a").stderr
    assert ok(eps, "--user", "bob:bobpw", "get", "a") == "a\n1\n"
    assert "permission denied" in etcdctl(eps, "--user", "bob:bobpw", "put", "a", "2").stderr
    assert ok(eps, "--user", "root:pw", "user", "list") == "bob\nroot\n"


@pytest.mark.soak
def test_auth_moves_both_ways(tmp_path, etcd_binaries):
    etcd_bin, _ = etcd_binaries
    from_etcd, from_rn = tmp_path / "from-etcd.db", tmp_path / "from-rn.db"
    with start_etcd_cluster(tmp_path / "etcd") as e:
        for args in AUTH_SETUP:
            ok(e.endpoints, *args)
        ok(e.endpoints, "--user", "root:pw", "snapshot", "save", str(from_etcd))
    r = subprocess.run([sys.executable, "-m", "engine", "snapshot", "restore", str(from_etcd),
                        "--data-dir", str(tmp_path / "rn" / "n1.data")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with start_raftnode_cluster(tmp_path / "rn", size=1) as rn:
        check_auth(rn.endpoints)
        ok(rn.endpoints, "--user", "root:pw", "snapshot", "save", str(from_rn))
    with restored_etcd(tmp_path, from_rn, etcd_bin) as c:
        check_auth(c.endpoints)
