"""Issue 8, hostile-input suite part (a), continued: the Cluster service.

MemberList / MemberAdd / MemberRemove / MemberUpdate / MemberPromote with
mutated fields, on a real 3-member raftnode cluster of this module's own
(the verdicts, lag poller and death handling of test_hostile_rpc.Target):

- peer URLs: well-formed but unreachable (http/https, IPv4/IPv6/names),
  malformed (``unix://sock``, ``http://``, no port, port 99999, a path,
  another scheme, garbage, 10 KiB), an existing member's URL, none at all;
- ids: 0, random, 2^64-1, the members' own ids.

The cluster is never destroyed on purpose: a well-formed add is always a
learner (etcd accepts a learner it cannot reach; it is removed again at
once), updates of existing members only carry malformed URLs or the
member's own URL, removes only target ids that are not voters. After every
example the three original members are alive, there is a leader and no
stray member is left.
"""
from __future__ import annotations

from typing import Iterator

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import start_cluster, wait_for
from .test_hostile_rpc import MODES, Target, finish, props, u64

REACHABLE_LOOKING = ["http://127.0.0.1:1", "https://127.0.0.1:2", "http://[::1]:3", "http://localhost:4",
                     "https://example.invalid:2380", "http://10.255.255.1:2380"]
# What etcd's types.NewURLs refuses for sure (no scheme it knows, no host:port).
REFUSED = ["unix://sock", "http://", "http://127.0.0.1", "ftp://127.0.0.1:1", "", "://", "127.0.0.1:2380",
           "http://[::1:3"]
MALFORMED = ["unix://sock", "http://", "http://127.0.0.1", "http://127.0.0.1:99999", "http://127.0.0.1:1/path",
             "ftp://127.0.0.1:1", "", "://", "127.0.0.1:2380", "http://[::1:3", "http://h:-1", "http:// :1",
             "x" * 10240, "http://127.0.0.1:1?q=1", "http://user@127.0.0.1:1"]


def urls() -> st.SearchStrategy[list[str]]:
    one = st.one_of(st.sampled_from(REACHABLE_LOOKING), st.sampled_from(MALFORMED), st.just("EXISTING"),
                    st.text(max_size=30))
    return st.one_of(st.lists(one, min_size=0, max_size=3),
                     st.lists(st.sampled_from(REACHABLE_LOOKING), min_size=1, max_size=2, unique=True))


@pytest.fixture(scope="module")
def ctarget(raftnode_binary, tmp_path_factory) -> Iterator[Target]:
    c = start_cluster(tmp_path_factory.mktemp("hostile-cluster"), 3)
    t = None
    try:
        t = Target(c)
        yield t
    finally:
        if t is not None:
            t.close()
            print("\n".join(["hostile cluster figures:", *t.lag_report,
                             f"member restarts after deaths: {t.restarts}", *t.deaths]))
            print("\n".join(t.tally.figures()))
        c.stop()


def _cleanup(t: Target, original: set[int]) -> None:
    """Remove every member this module added; the three originals stay."""
    cl = t.stub(0, rpc_pb2_grpc.ClusterStub)
    for mid in set(t.member_ids()) - original:
        t.call("MemberRemove", cl.MemberRemove, rpc_pb2.MemberRemoveRequest(ID=mid))
    assert set(t.member_ids()) == original


@pytest.mark.parametrize("mode", MODES)
def test_membership(ctarget, mode):
    t = ctarget
    original = set(t.member_ids())
    peer_urls = {m.member_id: m.peer_url for m in t.cluster.members}
    assert len(original) == 3
    # etcd refuses any add ("unhealthy cluster") until every voter has been connected for
    # 5 s (HealthInterval): wait until a learner add goes through, then remove it.
    cl0 = t.stub(0, rpc_pb2_grpc.ClusterStub)

    def learner_added():
        try:
            r = cl0.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:9"], isLearner=True), timeout=10)
        except grpc.RpcError as e:
            assert e.details() == "etcdserver: unhealthy cluster", e
            return False
        cl0.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=r.member.ID), timeout=10)
        return True
    wait_for(learner_added, 20, "the cluster to accept a learner", interval=0.5)

    @props(mode, 60)
    @given(member=st.integers(0, 2), kind=st.sampled_from(["list", "add", "add", "remove", "update", "promote"]),
           us=urls(), learner=st.booleans(), mid=st.one_of(u64(), st.just("member"), st.just("added")),
           pick=st.integers(0, 2))
    def prop(member, kind, us, learner, mid, pick):
        cl = t.stub(member, rpc_pb2_grpc.ClusterStub)
        ids = sorted(original)
        us = [peer_urls[ids[pick]] if u == "EXISTING" else u for u in us]
        added = None
        try:
            if kind == "list":
                t.call("MemberList", cl.MemberList, rpc_pb2.MemberListRequest())
                return
            if kind == "add":
                if not any(u in REFUSED for u in us) and us:
                    # A voter nobody can reach would cost the quorum a member: unless a URL is
                    # one etcd surely refuses, the add is a learner's. (etcd accepts more than
                    # looks valid: types.NewURLs takes port 99999, SplitHostPort does not check it.)
                    learner = True
                resp = t.call("MemberAdd", cl.MemberAdd, rpc_pb2.MemberAddRequest(peerURLs=us, isLearner=learner))
                if resp is not None:
                    added = resp.member.ID
                    assert resp.member.isLearner, f"a voter was added: {resp}"
                    t.call("MemberPromote", cl.MemberPromote, rpc_pb2.MemberPromoteRequest(ID=added))
                return
            if mid == "member":
                mid = ids[pick]
            elif mid == "added":
                extra = set(t.member_ids()) - original
                mid = min(extra) if extra else 0
            if kind == "remove":
                if mid in original:
                    mid ^= 1     # never remove a voter: a neighbouring, unknown id
                t.call("MemberRemove", cl.MemberRemove, rpc_pb2.MemberRemoveRequest(ID=mid))
            elif kind == "update":
                if mid in original and not (us and all(u in (peer_urls[mid], *MALFORMED) for u in us)):
                    us = [peer_urls[mid]] if learner else [*MALFORMED[:1]]
                t.call("MemberUpdate", cl.MemberUpdate, rpc_pb2.MemberUpdateRequest(ID=mid, peerURLs=us))
            else:
                t.call("MemberPromote", cl.MemberPromote, rpc_pb2.MemberPromoteRequest(ID=mid))
        finally:
            _cleanup(t, original)
            t.cluster.wait_leader(timeout=15)

    prop()
    finish(t, "Cluster")
