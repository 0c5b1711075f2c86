"""Real raftnode clusters for the API tests, driven by grpc stubs and etcdctl.

Clusters come from the shared helper (tests/support/raftnode.py): free
127.0.0.1 ports, a leader waited for with a deadline, members stopped by PID.
One 1-member and one 3-member cluster per test session keep the run short;
tests that break a cluster (kill, cut) make their own.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable, Iterator, TypeVar

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from tests.support import etcd as support_etcd
from tests.support import raftnode as support_raftnode

T = TypeVar("T")

# Faster elections than etcd's defaults keep start-up and failover short.
FAST = ("--heartbeat-interval=50", "--election-timeout=500")
PROGRESS_ENV = "RAFTUI_WATCH_PROGRESS_NOTIFY_INTERVAL"
PROGRESS_INTERVAL = 0.5  # seconds between watch progress notifications in these clusters


def _start(tmp_path_factory, size: int, extra=()) -> support_raftnode.RaftnodeCluster:
    old = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = str(PROGRESS_INTERVAL)
    try:
        c = support_raftnode.start_raftnode_cluster(
            tmp_path_factory.mktemp(f"raftnode{size}"), size=size, extra_args=(*FAST, *extra), timeout=30)
    finally:
        if old is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = old
    try:
        wait_published(c)
    except BaseException:
        c.stop()
        raise
    return c


def wait_published(c, timeout: float = 30.0) -> None:
    """Wait until every member has published its client URLs through the log
    (what forwarding to the leader and `member list` need)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with grpc.insecure_channel(c.endpoints[0]) as ch:
                ms = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=1).members
            if len(ms) == len(c.members) and all(m.clientURLs for m in ms):
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"members did not publish their client URLs within {timeout}s")
        time.sleep(0.05)  # poll interval, not synchronisation


@pytest.fixture(scope="session")
def cluster1(etcd_binaries, tmp_path_factory) -> Iterator[support_raftnode.RaftnodeCluster]:
    c = _start(tmp_path_factory, 1)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def cluster3(etcd_binaries, tmp_path_factory) -> Iterator[support_raftnode.RaftnodeCluster]:
    c = _start(tmp_path_factory, 3)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster_factory(etcd_binaries, tmp_path_factory):
    """make(size, extra=()) -> a fresh cluster of our own, stopped after the test."""
    made: list[support_raftnode.RaftnodeCluster] = []

    def make(size: int, extra=()) -> support_raftnode.RaftnodeCluster:
        c = _start(tmp_path_factory, size, extra)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()


def ctl(endpoints, *args: str, input: str | None = None, timeout: float = 20.0):
    """Run the real etcdctl; returns the CompletedProcess."""
    return support_etcd.etcdctl(endpoints, *args, input=input, timeout=timeout)


def ok(endpoints, *args: str, input: str | None = None) -> str:
    """etcdctl that must succeed; returns its stdout."""
    r = ctl(endpoints, *args, input=input)
    assert r.returncode == 0, f"etcdctl {' '.join(args)} failed: {r.stderr}"
    return r.stdout


def error_line(endpoints, *args: str, input: str | None = None) -> str:
    """etcdctl that must fail; returns its last stderr line ("Error: ...")."""
    r = ctl(endpoints, *args, input=input)
    assert r.returncode != 0, f"etcdctl {' '.join(args)} unexpectedly succeeded: {r.stdout}"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    """Run one coroutine (grpc.aio channels live inside it) with a deadline."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def channel(endpoint: str) -> grpc.Channel:
    return grpc.insecure_channel(endpoint)
