"""The test-support helpers themselves: ports, the etcd-required policy, clean shutdown."""
from __future__ import annotations

import os
import socket

import pytest

from tests.support import etcd, ports, require


def test_free_ports_are_distinct_and_bindable():
    got = ports.free_ports(20) + [ports.free_port()]
    assert len(set(got)) == len(got)
    for port in got[:5]:
        with socket.socket() as s:
            s.bind((ports.HOST, port))  # free right now


def test_missing_etcd_skips_locally(monkeypatch):
    monkeypatch.setenv("RAFTUI_ETCD", "/nonexistent/etcd")
    monkeypatch.delenv(require.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception):
        require.require_etcd()


def test_missing_etcd_fails_when_required(monkeypatch):
    monkeypatch.setenv("RAFTUI_ETCDCTL", "/nonexistent/etcdctl")
    monkeypatch.setenv(require.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="RAFTUI_REQUIRE_ETCD=1"):
        require.require_etcd()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_three_member_cluster_starts_and_stops_every_process(etcd_cluster_factory):
    cluster = etcd_cluster_factory(3)
    assert len(cluster.endpoints) == 3 and len(set(cluster.pids)) == 3
    out = etcd.etcdctl(cluster.endpoints, "member", "list", check=True)
    assert len(out.stdout.strip().splitlines()) == 3
    put = etcd.etcdctl([cluster.endpoints[0]], "put", "k", "v", check=True)
    assert put.stdout.strip() == "OK"
    # Written through member 0, readable from member 2: really one cluster.
    got = etcd.etcdctl([cluster.endpoints[2]], "get", "k", "--print-value-only", check=True)
    assert got.stdout.strip() == "v"
    pids = cluster.pids
    cluster.stop()
    assert not any(_alive(p) for p in pids)
    assert all(m.proc.returncode is not None for m in cluster.members)
    cluster.stop()  # idempotent


def test_etcdctl_reports_failure_without_raising(real_etcd):
    res = etcd.etcdctl(real_etcd.endpoints, "put", "", "v")
    assert res.returncode != 0
    assert "etcdserver: key is not provided" in res.stderr


def test_start_failure_raises_with_the_log(tmp_path, etcd_binaries):
    with pytest.raises(etcd.EtcdError, match="no-such-flag"):
        etcd.start_etcd_cluster(tmp_path, size=1, extra_args=["--no-such-flag"], timeout=10)
