"""Shared pytest configuration."""

# --- real etcd (tests/support) ---------------------------------------------
# Fixtures that run the real etcd 3.4 as the judge. Without etcd/etcdctl the
# tests using them are skipped, or failed when RAFTUI_REQUIRE_ETCD=1 (CI).
import pathlib as _pathlib
import sys as _sys
from typing import Callable as _Callable, Iterator as _Iterator

import pytest as _pytest

_REPO_ROOT = str(_pathlib.Path(__file__).resolve().parent.parent)
if _REPO_ROOT not in _sys.path:  # `tests.support` must import under plain `pytest` too
    _sys.path.insert(0, _REPO_ROOT)

from tests.support import etcd as _support_etcd  # noqa: E402
from tests.support import require as _support_require  # noqa: E402


@_pytest.fixture(scope="session")
def etcd_binaries() -> tuple[str, str]:
    """(etcd, etcdctl) paths; skips -- or fails under RAFTUI_REQUIRE_ETCD=1 -- when missing."""
    return _support_require.require_etcd()


@_pytest.fixture(scope="module")
def real_etcd(etcd_binaries, tmp_path_factory) -> _Iterator[_support_etcd.EtcdCluster]:
    """A fresh 1-member real etcd per test module; `.endpoints` -> ["127.0.0.1:port"]."""
    cluster = _support_etcd.start_etcd_cluster(tmp_path_factory.mktemp("etcd1"), size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@_pytest.fixture(scope="module")
def real_etcd3(etcd_binaries, tmp_path_factory) -> _Iterator[_support_etcd.EtcdCluster]:
    """A fresh 3-member real etcd per test module."""
    cluster = _support_etcd.start_etcd_cluster(tmp_path_factory.mktemp("etcd3"), size=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@_pytest.fixture
def etcd_cluster_factory(
    etcd_binaries, tmp_path_factory
) -> _Iterator[_Callable[..., _support_etcd.EtcdCluster]]:
    """make(size=1, *, extra_args=(), timeout=30.0) -> a fresh cluster, stopped after the test."""
    started: list[_support_etcd.EtcdCluster] = []

    def make(size: int = 1, *, extra_args=(), timeout: float = 30.0) -> _support_etcd.EtcdCluster:
        cluster = _support_etcd.start_etcd_cluster(
            tmp_path_factory.mktemp(f"etcd{size}"), size=size, extra_args=extra_args, timeout=timeout
        )
        started.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in started:
            cluster.stop()


# --- raftnode (tests/support/raftnode.py) -------------------------------------
# Fixtures that run our own member, `python -m engine`, as real processes.
from tests.support import raftnode as _support_raftnode  # noqa: E402


@_pytest.fixture(scope="session")
def raftnode_binary() -> list[str]:
    """argv prefix that runs a member ([python, -m, engine]). Skips -- or fails under
    RAFTUI_REQUIRE_ETCD=1 -- if the engine cannot be imported (it always can; symmetry)."""
    try:
        import engine.cli.main  # noqa: F401
    except Exception as e:  # noqa: BLE001
        msg = f"engine cannot be imported: {e}"
        if _support_require.etcd_required():
            _pytest.fail(msg, pytrace=False)
        _pytest.skip(msg)
    return _support_raftnode.raftnode_command()


@_pytest.fixture(scope="module")
def raftnode3(raftnode_binary, tmp_path_factory) -> _Iterator[_support_raftnode.RaftnodeCluster]:
    """A fresh 3-member raftnode cluster (fault injection on) per test module."""
    cluster = _support_raftnode.start_raftnode_cluster(tmp_path_factory.mktemp("raftnode3"), size=3)
    try:
        yield cluster
    finally:
        cluster.stop()


@_pytest.fixture
def raftnode_cluster_factory(
    raftnode_binary, tmp_path_factory
) -> _Iterator[_Callable[..., _support_raftnode.RaftnodeCluster]]:
    """make(size=3, extra_args=(), *, fault_injection=True, timeout=30.0) -> a fresh cluster,
    stopped after the test."""
    started: list[_support_raftnode.RaftnodeCluster] = []

    def make(size: int = 3, extra_args=(), *, fault_injection: bool = True,
             timeout: float = 30.0) -> _support_raftnode.RaftnodeCluster:
        cluster = _support_raftnode.start_raftnode_cluster(
            tmp_path_factory.mktemp(f"raftnode{size}"), size=size, extra_args=extra_args,
            fault_injection=fault_injection, timeout=timeout)
        started.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in started:
            cluster.stop()
