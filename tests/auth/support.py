"""Helpers for tests/auth's real-process tests."""
from __future__ import annotations

import pathlib

from tests.judge import framework
from tests.support import etcd as support_etcd
from tests.support import raftnode as support_raftnode

ROOT = pathlib.Path(__file__).resolve().parents[2]


def wired() -> bool:
    """Does raftnode enforce auth end to end yet? (the store wired into the
    applier/backend by LEAD, the API's checks by STRUCTURE). Read from the
    sources: nothing is started to find out."""
    if framework.candidate_kind() == "etcd":
        return True
    try:
        from engine.server.kvserver import KVServer
    except ImportError:
        return False
    if not hasattr(KVServer, "auth_store"):
        return False
    api = ROOT / "engine" / "api"
    needed = {"submit.py": "auth_info", "kv.py": "auth_info", "watch.py": "is_range_permitted",
              "maintenance.py": "is_admin_permitted"}
    server_src = "".join(p.read_text() for p in (ROOT / "engine").glob("*/*.py")
                         if p.parent.name in ("server", "mvcc"))
    return ("AuthApplier" in server_src
            and all(word in (api / f).read_text() for f, word in needed.items()))


NOT_WIRED = "auth not wired into raftnode yet (issue 10: LEAD/STRUCTURE)"


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
