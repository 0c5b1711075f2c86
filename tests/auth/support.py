"""Helpers for tests/auth's real-process tests."""
from __future__ import annotations

import pathlib

from tests.judge import framework
from tests.support import etcd as support_etcd
from tests.support import raftnode as support_raftnode


def start_pair(workdir: pathlib.Path, size: int) -> framework.Judge:
    """A real etcd cluster (the judge) and a candidate (raftnode, or etcd
    under RAFTUI_JUDGE_CANDIDATE=etcd) of `size` members each."""
    kind = framework.candidate_kind()
    ref_cluster = support_etcd.start_etcd_cluster(workdir / "etcd", size=size)
    try:
        if kind == "etcd":
            cand_cluster = support_etcd.start_etcd_cluster(workdir / "cand", size=size)
        else:
            cand_cluster = support_raftnode.start_raftnode_cluster(workdir / "cand", size=size)
    except BaseException:
        ref_cluster.stop()
        raise
    try:
        return framework.Judge(
            framework.Side("etcd", "etcd", ref_cluster, workdir / "etcd"),
            framework.Side("raftnode" if kind == "raftnode" else "etcd-candidate", kind,
                           cand_cluster, workdir / "cand"))
    except BaseException:
        ref_cluster.stop()
        cand_cluster.stop()
        raise
