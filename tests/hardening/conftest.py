"""Shared fixtures for the hardening suite (issue 8).

Real raftnode clusters from tests/support/raftnode.py: free 127.0.0.1 ports,
a leader waited for with a deadline, every member stopped by PID.

- ``hard_cluster3``: one 3-member cluster per test module (fast elections,
  watch progress notifications every 0.5 s), members' client URLs published.
- ``hard_cluster_factory``: make(size=3, extra=()) -> a fresh cluster of the
  test's own, stopped after the test (for tests that kill or reconfigure).
- ``run(coro, timeout)``: run one coroutine (grpc.aio lives inside it) with a deadline.
- ``wait_for(cond, timeout, what)``: poll a condition with a deadline (never a bare sleep).
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable, Callable, Iterator, Sequence, TypeVar

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from tests.support import raftnode as support_raftnode

T = TypeVar("T")

# Faster elections than etcd's defaults keep start-up and failover short.
FAST = ("--heartbeat-interval=50", "--election-timeout=500")
PROGRESS_ENV = "RAFTUI_WATCH_PROGRESS_NOTIFY_INTERVAL"
PROGRESS_INTERVAL = 0.5  # seconds between periodic watch progress notifications


def start_cluster(root, size: int = 3, extra: Sequence[str] = (), *,
                  fast: bool = True, timeout: float = 40.0) -> support_raftnode.RaftnodeCluster:
    """A fresh raftnode cluster under `root` whose members have published their client URLs."""
    old = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = str(PROGRESS_INTERVAL)
    try:
        c = support_raftnode.start_raftnode_cluster(
            root, size=size, extra_args=(*(FAST if fast else ()), *extra), timeout=timeout)
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


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `cond` until it returns something truthy (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # poll interval, not synchronisation


def wait_published(c: support_raftnode.RaftnodeCluster, timeout: float = 15.0) -> None:
    """Wait until every member has published its client URLs through the log."""
    def published():
        for ep in c.endpoints:
            try:
                with grpc.insecure_channel(ep) as ch:
                    ms = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=1).members
                if len(ms) == len(c.members) and all(m.clientURLs for m in ms):
                    return True
            except grpc.RpcError:
                continue
        return False
    wait_for(published, timeout, "members to publish their client URLs")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one coroutine (grpc.aio channels live inside it) with a deadline."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def hard_cluster3(raftnode_binary, tmp_path_factory) -> Iterator[support_raftnode.RaftnodeCluster]:
    """One 3-member raftnode cluster per test module."""
    c = start_cluster(tmp_path_factory.mktemp("hard3"), 3)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def hard_cluster_factory(raftnode_binary, tmp_path_factory):
    """make(size=3, extra=(), fast=True) -> a fresh cluster of the test's own, stopped after it."""
    made: list[support_raftnode.RaftnodeCluster] = []

    def make(size: int = 3, extra: Sequence[str] = (), *, fast: bool = True) -> support_raftnode.RaftnodeCluster:
        c = start_cluster(tmp_path_factory.mktemp(f"hard{size}"), size, extra, fast=fast)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()
