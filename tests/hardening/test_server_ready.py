"""A member serves clients only once its name and client URLs are in the
member table (etcd's ReadyNotify): a fresh member without a quorum answers
nothing yet (its port is bound, a client waits), and as soon as it answers,
`member list` shows its client URLs. A member restarted with unchanged
attributes serves at once, even without a quorum."""
from __future__ import annotations

import time
import uuid

import grpc

from engine.proto import rpc_pb2, rpc_pb2_grpc
from tests.support import ports
from tests.support import raftnode as rn


def _status(endpoint: str, timeout: float):
    with grpc.insecure_channel(endpoint) as ch:
        return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)


def _unstarted_cluster(root, size: int = 3) -> rn.RaftnodeCluster:
    allocated = ports.free_ports(2 * size)
    token = f"raftui-test-{uuid.uuid4().hex[:12]}"
    members = [rn.RaftnodeMember(name=f"n{i + 1}", client_port=allocated[2 * i], peer_port=allocated[2 * i + 1],
                                 data_dir=root / f"n{i + 1}.data", log_path=root / f"n{i + 1}.log")
               for i in range(size)]
    c = rn.RaftnodeCluster(members=members, data_dir=root, token=token, extra_args=rn_fast(),
                           fault_injection=False)
    for m in members:
        m.member_id = rn._member_id(m.peer_url, token)
        m.args = rn._member_args(m, c.initial_cluster, "new", token, False, rn_fast())
    return c


def rn_fast() -> tuple[str, ...]:
    return ("--heartbeat-interval=50", "--election-timeout=500")


def test_fresh_member_serves_only_once_published(tmp_path):
    c = _unstarted_cluster(tmp_path)
    try:
        c._spawn(c.members[0])
        deadline = time.monotonic() + 20
        while not c.members[0].listening():
            assert time.monotonic() < deadline, "n1's client port never bound"
            time.sleep(0.05)
        # Bound, but not serving: no quorum, so nothing published.
        try:
            _status(c.endpoints[0], 1.5)
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE), e
        else:
            raise AssertionError("a member without a quorum served a client before publishing its URLs")
        for m in c.members[1:]:
            c._spawn(m)
        # The client that waits gets served once n1 has published.
        _status(c.endpoints[0], 20)
        with grpc.insecure_channel(c.endpoints[0]) as ch:
            ms = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=5).members
        me = [m for m in ms if m.name == "n1"]
        assert me and me[0].clientURLs == [c.members[0].client_url], ms

        # Restarted alone (the others stopped): same attributes, serves at once.
        for i in (1, 2):
            c.stop_member(i)
        c.kill(0)
        c.restart(0)
        _status(c.endpoints[0], 5)
    finally:
        c.stop()
