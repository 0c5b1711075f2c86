"""Cluster through etcdctl: member list, add (learner), promote, remove,
and etcd's errors."""
from __future__ import annotations

import json
import re

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import error_line, ok


def test_member_list(cluster3):
    eps = cluster3.endpoints
    out = json.loads(ok(eps, "member", "list", "-w", "json"))
    assert "revision" not in out["header"]  # etcd 3.4 sends no revision here
    assert out["header"]["raft_term"] and out["header"]["cluster_id"]
    got = sorted((m["name"], m["peerURLs"], m["clientURLs"]) for m in out["members"])
    want = sorted((m.name, [m.peer_url], [m.client_url]) for m in cluster3.members)
    assert got == want
    table = ok(eps, "member", "list")
    for m in cluster3.members:
        assert f"{m.member_id:x}, started, {m.name}, {m.peer_url}, {m.client_url}, false" in table


def test_member_add_learner_promote_remove(cluster_factory):
    c = cluster_factory(1)
    eps = c.endpoints
    # etcdctl checks URLs itself first; the server's check answers a raw client.
    with grpc.insecure_channel(eps[0]) as ch:
        with pytest.raises(grpc.RpcError) as ei:
            rpc_pb2_grpc.ClusterStub(ch).MemberAdd(
                rpc_pb2.MemberAddRequest(peerURLs=["http://no-port"]), timeout=5)
    assert (ei.value.code(), ei.value.details()) == \
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
    assert error_line(eps, "member", "add", "dup", f"--peer-urls={c.members[0].peer_url}") == \
        "Error: etcdserver: Peer URLs already exists"
    assert error_line(eps, "member", "remove", "1234") == \
        "Error: etcdserver: member not found"
    own = c.members[0].member_id
    assert error_line(eps, "member", "promote", f"{own:x}") == \
        "Error: etcdserver: can only promote a learner member"
    out = ok(eps, "member", "add", "l1", "--learner", "--peer-urls=http://127.0.0.1:1")
    m = re.match(r"Member +([0-9a-f]+) added to cluster +([0-9a-f]+)\n", out)
    assert m, out
    lid = m.group(1)
    assert error_line(eps, "member", "add", "l2", "--learner", "--peer-urls=http://127.0.0.1:2") == \
        "Error: etcdserver: too many learner members in cluster"
    listed = ok(eps, "member", "list")
    assert f"{lid}, unstarted, , http://127.0.0.1:1, , true" in listed
    # The learner never started: it has nothing, so it is not in sync.
    assert error_line(eps, "member", "promote", lid) == \
        "Error: etcdserver: can only promote a learner member which is in sync with leader"
    out = ok(eps, "member", "update", lid, "--peer-urls=http://127.0.0.1:3")
    assert out == f"Member {int(lid, 16):16x} updated in cluster {int(m.group(2), 16):16x}\n"
    assert f"{lid}, unstarted, , http://127.0.0.1:3, , true" in ok(eps, "member", "list")
    assert error_line(eps, "member", "update", lid, f"--peer-urls={c.members[0].peer_url}") == \
        "Error: etcdserver: Peer URLs already exists"
    assert ok(eps, "member", "remove", lid) == \
        f"Member {int(lid, 16):16x} removed from cluster {int(m.group(2), 16):16x}\n"
    assert lid not in ok(eps, "member", "list")
