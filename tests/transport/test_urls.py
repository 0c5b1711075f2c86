"""Member URLs: etcd 3.4's types.NewURLs rules, and what the transport dials.

ETCD_MEMBER_ADD is what real etcd 3.4.23 answered to a raw gRPC MemberAdd
(learner) with each URL, measured once and pinned here; the live test below
asks a real etcd again when /usr/bin/etcd is there.
"""
from __future__ import annotations

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from engine.transport.urls import URLError, dial_target, new_urls

BAD = ("INVALID_ARGUMENT", "etcdserver: given member URLs are invalid")

# url -> the stored URL etcd answered with, or BAD.
ETCD_MEMBER_ADD = {
    "unix://sock": BAD,
    "unix://sock:1": "unix://sock:1",
    "unixs://sock:1": "unixs://sock:1",
    "http://": BAD,
    "https://": BAD,
    "foo": BAD,
    "http://host": BAD,
    "http://127.0.0.1:1": "http://127.0.0.1:1",
    "https://127.0.0.1:1": "https://127.0.0.1:1",
    "http://127.0.0.1:1/": BAD,
    "http://127.0.0.1:1/p": BAD,
    "http://127.0.0.1:": "http://127.0.0.1:",
    "http://127.0.0.1:x": BAD,
    "http://127.0.0.1:99999": "http://127.0.0.1:99999",
    "http://u@127.0.0.1:5": "http://u@127.0.0.1:5",
    "http://127.0.0.1:6?q=1": "http://127.0.0.1:6?q=1",
    "http://127.0.0.1:7#f": "http://127.0.0.1:7#f",
    "ftp://127.0.0.1:8": BAD,
    " http://127.0.0.1:9 ": "http://127.0.0.1:9",
    "http://[::1]:10": "http://[::1]:10",
    "http://[::1": BAD,
    "http://[zz]:11": "http://[zz]:11",
    "http://:12": "http://:12",
    "HTTP://127.0.0.1:13": "http://127.0.0.1:13",
    "127.0.0.1:14": BAD,
    "http://host name:15": BAD,
    "": BAD,
    "http://127.0.0.1:0": "http://127.0.0.1:0",
    "http://a.b:16": "http://a.b:16",
    "http://[::1]": BAD,
}


def _ours(url: str):
    try:
        return new_urls([url])[0]
    except URLError:
        return BAD


@pytest.mark.parametrize("url", sorted(ETCD_MEMBER_ADD))
def test_new_urls_matches_etcd(url: str) -> None:
    assert _ours(url) == ETCD_MEMBER_ADD[url]


def test_new_urls_needs_one_and_sorts() -> None:
    with pytest.raises(URLError):
        new_urls([])
    assert new_urls(["http://b:2", " HTTP://a:1"]) == ["http://a:1", "http://b:2"]
    with pytest.raises(URLError):
        new_urls(["http://a:1", "http://b:2/x"])


@pytest.mark.parametrize("url,target", [
    ("http://127.0.0.1:1", ("127.0.0.1:1", False)),
    ("https://127.0.0.1:1", ("127.0.0.1:1", True)),
    ("http://[::1]:10", ("[::1]:10", False)),
    ("http://u@127.0.0.1:5?q#f", ("127.0.0.1:5", False)),
    ("http://127.0.0.1:0", None),
    ("http://127.0.0.1:", None),
    ("http://127.0.0.1:99999", None),
    ("http://:12", None),
    ("unix://sock:1", None),
    ("foo", None),
])
def test_dial_target(url: str, target) -> None:
    if target is None:
        with pytest.raises(URLError):
            dial_target(url)
    else:
        assert dial_target(url) == target


def test_live_etcd_agrees(tmp_path) -> None:
    """Ask a real etcd 3.4 the same questions (skipped without /usr/bin/etcd)."""
    from tests.support import require
    if require.etcd_path() is None:
        pytest.skip("real etcd not installed")
    from tests.support.etcd import start_etcd_cluster
    c = start_etcd_cluster(tmp_path / "etcd", 1)
    try:
        with grpc.insecure_channel(c.endpoints[0]) as ch:
            stub = rpc_pb2_grpc.ClusterStub(ch)
            for url, want in ETCD_MEMBER_ADD.items():
                try:
                    r = stub.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[url], isLearner=True),
                                       timeout=5)
                    got = r.member.peerURLs[0]
                    stub.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=r.member.ID), timeout=5)
                except grpc.RpcError as e:
                    got = (e.code().name, e.details())
                assert got == want, url
    finally:
        c.stop()
