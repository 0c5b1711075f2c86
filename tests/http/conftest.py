"""Fixtures of the side-by-side modules: a fresh real etcd (1 member, with a
metrics URL) and a fresh in-process raftnode member with its HTTP listeners,
per module (they see the same requests, so their revisions stay equal).
Module scope, not session: neither keeps running (and ticking) while the
rest of the suite runs."""
from __future__ import annotations

import pytest

from tests.http.member import HttpMembers
from tests.support import etcd as support_etcd
from tests.support import ports


@pytest.fixture(scope="module")
def etcd(etcd_binaries, tmp_path_factory):
    mport = ports.free_port()
    cluster = support_etcd.start_etcd_cluster(
        tmp_path_factory.mktemp("etcd-http"), size=1,
        extra_args=[f"--listen-metrics-urls=http://127.0.0.1:{mport}"])
    cluster.metrics_url = f"http://127.0.0.1:{mport}"
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    members = HttpMembers(str(tmp_path_factory.mktemp("ours-http")), 1).start()
    try:
        yield members
    finally:
        members.stop()
