"""Durability and partitions, raftnode only (real etcd has no Fault service).

- kill -9 the leader while a client streams puts: a new leader is elected,
  writes go on, and every acknowledged put is there afterwards, on every
  member, the killed one included once restarted;
- cut the leader off from all its peers through the Fault service: the
  minority refuses writes (etcdctl's deadline fires), the majority elects a
  leader and serves, and after Heal all three converge to the same HashKV.
"""
from __future__ import annotations

import threading

import grpc
import pytest

from engine.proto import fault_pb2, fault_pb2_grpc, rpc_pb2, rpc_pb2_grpc
from tests.judge.framework import candidate_kind, poll
from tests.support.etcd import etcdctl

pytestmark = pytest.mark.skipif(candidate_kind() != "raftnode",
                                reason="fault tests drive raftnode's own process helper and Fault service")


class PutStream:
    """A client thread writing dur/NNNNNN = vNNNNNN through every endpoint in turn.

    A put counts as acknowledged only when Put returned OK. A put that failed
    (its outcome unknown) is not retried under the same key."""

    def __init__(self, endpoints: list[str], prefix: str) -> None:
        self.endpoints = endpoints
        self.prefix = prefix
        self.acked: list[tuple[str, str]] = []
        self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "PutStream":
        self._thread.start()
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        channels = [grpc.insecure_channel(ep) for ep in self.endpoints]
        stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
        i, ep = 0, 0
        try:
            while not self._stop.is_set():
                key, value = f"{self.prefix}{i:06d}", f"v{i}"
                try:
                    stubs[ep].Put(rpc_pb2.PutRequest(key=key.encode(), value=value.encode()), timeout=3)
                except grpc.RpcError as e:
                    self.failed += 1
                    if len(self.errors) < 20:
                        self.errors.append(f"{self.endpoints[ep]}: {e.code()} {e.details()}")
                    ep = (ep + 1) % len(stubs)
                    if self._stop.wait(0.05):   # back off a moment after an error; returns early on stop
                        break
                else:
                    with self._lock:
                        self.acked.append((key, value))
                    ep = (ep + 1) % len(stubs)
                i += 1
        finally:
            for ch in channels:
                ch.close()


def _range(endpoint: str, prefix: str, serializable: bool) -> dict[str, str]:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=prefix.encode(), range_end=_prefix_end(prefix),
                                 serializable=serializable), timeout=5)
    return {kv.key.decode(): kv.value.decode() for kv in resp.kvs}


def _prefix_end(prefix: str) -> bytes:
    b = bytearray(prefix.encode())
    b[-1] += 1
    return bytes(b)


def _missing(acked: list[tuple[str, str]], have: dict[str, str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in acked if have.get(k) != v]


def _every_member_running(cluster) -> None:
    """The module's two tests share one cluster (CI time): a member a failed test left
    killed is started again first (the partition test heals in its finally)."""
    for i, m in enumerate(cluster.members):
        if not m.running():
            cluster.restart(i)


def test_leader_kill_loses_no_acknowledged_write(raftnode3) -> None:
    cluster = raftnode3
    _every_member_running(cluster)
    old = cluster.wait_leader(15)
    stream = PutStream(cluster.endpoints, "dur/").start()
    try:
        poll(lambda: stream.count() >= 100, 30, "100 acknowledged puts before the kill")
        cluster.kill(old)                                        # SIGKILL, by PID
        at_kill = stream.count()
        new = cluster.wait_leader(15, exclude=[old])
        assert new != old
        poll(lambda: stream.count() >= at_kill + 100, 30,
             f"100 more acknowledged puts under the new leader (errors: {stream.errors[-5:]})")
    finally:
        stream.stop()
    acked = list(stream.acked)
    # Linearizable read through the survivors: every acknowledged put is there.
    survivors = [i for i in range(3) if i != old]
    have = _range(cluster.endpoints[survivors[0]], "dur/", serializable=False)
    missing = _missing(acked, have)
    assert not missing, f"{len(missing)} acknowledged puts lost after the leader was killed: {missing[:10]}"
    # The killed member comes back with its data and catches up; every member has every put.
    cluster.restart(old)
    for i in range(3):
        poll(lambda: not _missing(acked, _range(cluster.endpoints[i], "dur/", serializable=True)), 30,
             f"member {i} to hold every acknowledged put")
    assert len(acked) >= 200


def _fault(endpoint: str) -> fault_pb2_grpc.FaultStub:
    return fault_pb2_grpc.FaultStub(grpc.insecure_channel(endpoint))


def _hashkv(endpoints: list[str]) -> list[str]:
    r = etcdctl(endpoints, "endpoint", "hashkv", timeout=15)
    assert r.returncode == 0, r.stderr
    return [line.rsplit(", ", 1)[1] for line in r.stdout.splitlines() if line.strip()]


def test_partitioned_leader_minority_refuses_majority_serves_heal_converges(raftnode3) -> None:
    cluster = raftnode3
    _every_member_running(cluster)
    old = cluster.wait_leader(15)
    others = [i for i in range(3) if i != old]
    old_ep = cluster.endpoints[old]
    majority = [cluster.endpoints[i] for i in others]
    assert etcdctl(cluster.endpoints, "put", "part/before", "1", timeout=15).returncode == 0

    differences: list[str] = []
    st = _fault(old_ep).Cut(fault_pb2.CutRequest(all=True), timeout=5)
    assert st.cut_all, st
    try:
        new = cluster.wait_leader(20, exclude=[old])
        assert new in others
        # check-quorum: the cut-off leader steps down on its own.
        old_id = cluster.members[old].member_id
        poll(lambda: (lambda s: s is not None and s.leader != old_id)(cluster.status(old, timeout=1)), 15,
             "the isolated old leader to step down (check-quorum)")
        # The minority refuses writes. Like etcd, the member should hold the proposal until
        # the client's own deadline fires (etcd 3.4: "context deadline exceeded"); a quick
        # refusal with another message is a difference, reported at the end of the test so
        # the rest (majority, heal, convergence) is still checked.
        r = etcdctl([old_ep], "--command-timeout=3s", "put", "part/minority", "x", timeout=30)
        assert r.returncode != 0, f"the isolated minority accepted a write: {r}"
        last = (r.stderr.strip().splitlines() or [""])[-1]
        if last != "Error: context deadline exceeded":
            differences.append(f"minority put: etcd says 'Error: context deadline exceeded', raftnode {last!r}")
        # The majority serves reads and writes.
        r = etcdctl(majority, "put", "part/majority", "y", timeout=15)
        assert r.returncode == 0, r.stderr
        r = etcdctl(majority, "get", "part/majority", "--print-value-only", timeout=15)
        assert (r.returncode, r.stdout) == (0, "y\n"), r
        # The isolated member cannot have seen it.
        r = etcdctl([old_ep], "get", "part/", "--prefix", "--keys-only", "--consistency=s", timeout=15)
        assert r.returncode == 0 and "part/majority" not in r.stdout, r
    finally:
        healed = _fault(old_ep).Heal(fault_pb2.HealRequest(), timeout=5)
    assert not healed.cut_all and not healed.cut, healed
    # All three converge: the same HashKV everywhere, and the old leader has the majority's write.
    poll(lambda: etcdctl([old_ep], "get", "part/majority", "--print-value-only", "--consistency=s",
                         timeout=10).stdout == "y\n", 30, "the healed member to catch up")
    poll(lambda: len(set(_hashkv(cluster.endpoints))) == 1, 30, "all three members to have the same HashKV")
    r = etcdctl([old_ep], "put", "part/after", "z", timeout=15)       # and it serves writes again
    assert r.returncode == 0, r.stderr
    poll(lambda: len(set(_hashkv(cluster.endpoints))) == 1, 30, "HashKV to agree after a write through the healed member")
    def one_leader():
        sts = [cluster.status(i, timeout=1) for i in range(3)]
        leaders = {s.leader for s in sts if s is not None}
        return all(sts) and len(leaders) == 1 and 0 not in leaders
    poll(one_leader, 15, "all three members to follow the same leader")
    assert not differences, differences
