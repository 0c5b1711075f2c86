"""A learner answers only serializable reads and Status; NOSPACE raises the
alarm through the log and refuses growing writes, like etcd."""
from __future__ import annotations

import json
import re
import time

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import ctl, error_line, ok


def test_learner_serves_only_serializable_reads_and_status(cluster_factory):
    c = cluster_factory(1)
    voter = c.endpoints[:1]
    ok(voter, "put", "k", "v")
    m = c.plan_member("l1")
    out = ok(voter, "member", "add", "l1", "--learner", f"--peer-urls={m.peer_url}")
    lid = re.match(r"Member +([0-9a-f]+) added", out).group(1)
    initial = re.search(r'ETCD_INITIAL_CLUSTER="([^"]+)"', out).group(1)
    c.start_planned(m, initial_cluster=initial)
    learner = [m.endpoint]
    # Until it has applied its own AddLearnerNode entry, a joining member
    # does not know it is a learner (etcd learns it from its peers at start).
    deadline = time.monotonic() + 10
    while not json.loads(ok(learner, "endpoint", "status", "-w", "json"))[0]["Status"].get("isLearner"):
        assert time.monotonic() < deadline, "the learner never learnt it is one"
        time.sleep(0.05)  # poll interval, not synchronisation
    not_supported = "Error: etcdserver: rpc not supported for learner"
    # (etcdctl retries a refused get for ~2.5 s, as it does against etcd.)
    assert error_line(learner, "get", "k") == not_supported
    assert error_line(learner, "put", "k", "v2") == not_supported
    with grpc.insecure_channel(m.endpoint) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=5)
    assert (ei.value.code(), ei.value.details()) == \
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: rpc not supported for learner")
    # Serializable reads work once the learner has caught up.
    for _ in range(100):
        if ok(learner, "get", "k", "--consistency=s", "--print-value-only") == "v\n":
            break
    assert ok(learner, "get", "k", "--consistency=s", "--print-value-only") == "v\n"
    # Promotion is decided by the leader; a learner cannot even be asked.
    assert error_line(learner, "member", "promote", lid) == not_supported
    cluster_id = json.loads(ok(voter, "member", "list", "-w", "json"))["header"]["cluster_id"]
    assert ok(voter, "member", "promote", lid) == f"Member {int(lid, 16):16x} promoted in cluster {cluster_id:16x}\n"
    assert ok(learner, "get", "k", "--print-value-only") == "v\n"


def test_nospace_alarm(cluster_factory):
    c = cluster_factory(1, extra=("--quota-backend-bytes=300000",))
    eps = c.endpoints
    value = "x" * 100_000
    err = ""
    for i in range(10):
        r = ctl(eps, "put", f"big{i}", input=value)
        if r.returncode:
            err = r.stderr.strip().splitlines()[-1]
            break
    assert err == "Error: etcdserver: mvcc: database space exceeded"
    member = json.loads(ok(eps, "member", "list", "-w", "json"))["members"][0]["ID"]
    assert ok(eps, "alarm", "list") == f"memberID:{member} alarm:NOSPACE \n"
    st = json.loads(ok(eps, "endpoint", "status", "-w", "json"))[0]["Status"]
    assert st["errors"] == [f"memberID:{member} alarm:NOSPACE "]
    assert error_line(eps, "put", "small", "v") == "Error: etcdserver: mvcc: database space exceeded"
    assert error_line(eps, "lease", "grant", "100") == \
        "Error: failed to grant lease (etcdserver: mvcc: database space exceeded)"
    assert ok(eps, "del", "big", "--prefix") != ""          # deletes still work
    assert ok(eps, "alarm", "disarm") == f"memberID:{member} alarm:NOSPACE \n"
    assert ok(eps, "alarm", "list") == ""
