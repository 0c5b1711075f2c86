"""The same etcdctl auth session against real etcd 3.4 and raftnode (issue 10).

users with and without password, roles with a key, a range, a prefix and a
from-key permission, auth enable (etcdctl adds role root itself), gets, puts
and txns as each user, wrong passwords, unknown users, a no-password user,
admin-only reads and maintenance, passwd, revoke, root's protected
grants, delete, auth disable. Output is compared as the judge compares it
(tests/judge/framework.py normalises ids, endpoints, revisions, log lines).

One member a side by default (the whole session is ~70 etcdctl runs, each
authenticating with bcrypt on the server); the 3-member pairs run under
``-m soak``. Set RAFTUI_JUDGE_CANDIDATE=etcd to check the script itself
against two real etcds.

Skipped until raftnode enforces auth end to end: the auth store wired into
the applier/backend (LEAD) and the API stamping and checking requests
(STRUCTURE: KVServer.auth_store, submit/kv/watch/maintenance checks).
"""
from __future__ import annotations

import inspect
import pathlib

import pytest

from tests.judge import framework
from tests.support import etcd as support_etcd
from tests.support import raftnode as support_raftnode

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _wired() -> bool:
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


pytestmark = pytest.mark.skipif(not _wired(), reason="auth not wired into raftnode yet (issue 10: LEAD/STRUCTURE)")


def _start_pair(workdir: pathlib.Path, size: int) -> framework.Judge:
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
    sides = []
    try:
        sides.append(framework.Side("etcd", "etcd", ref_cluster, workdir / "etcd"))
        sides.append(framework.Side("raftnode" if kind == "raftnode" else "etcd-candidate", kind,
                                    cand_cluster, workdir / "cand"))
    except BaseException:
        ref_cluster.stop()
        cand_cluster.stop()
        raise
    return framework.Judge(*sides)


@pytest.fixture
def pair(request, etcd_binaries, raftnode_binary, tmp_path):
    j = _start_pair(tmp_path, request.param)
    try:
        yield j
    finally:
        j.stop()


ROOT_U = ("--user", "root:rootpw")
ALICE = ("--user", "alice:apw")
BOB = ("--user", "bob:bpw")


def _session(case: framework.Case) -> None:
    same = case.same
    # -- set-up while auth is off: anyone may manage
    same("user", "add", "root:rootpw", rc=0)
    same("user", "add", "root:again", rc=1)                          # user name already exists
    same("role", "add", "reader", rc=0)
    same("role", "grant-permission", "reader", "read", "--prefix", "app/", rc=0)
    same("role", "grant-permission", "reader", "readwrite", "b", "c", rc=0)
    same("role", "grant-permission", "reader", "read", "solo", rc=0)
    same("role", "add", "writer", rc=0)
    same("role", "grant-permission", "writer", "write", "--from-key", "z", rc=0)
    same("role", "grant-permission", "nobody", "read", "k", rc=1)    # role name not found
    same("role", "get", "reader", rc=0)
    same("user", "add", "alice:apw", rc=0)
    same("user", "grant-role", "alice", "reader", rc=0)
    same("user", "grant-role", "alice", "nope", rc=1)                # role name not found
    same("user", "add", "bob:bpw", rc=0)
    same("user", "grant-role", "bob", "writer", rc=0)
    same("user", "add", "np", "--no-password", rc=0)
    same("put", "app/x", "1", rc=0)
    same("auth", "enable", rc=0)                                     # adds role root, grants it, enables
    same("role", "list", *ROOT_U, rc=0)
    # -- no user, wrong users
    same("get", "app/x", rc=1)                                       # user name is empty
    same("put", "app/x", "2", rc=1)
    same("get", "app/x", "--user", "alice:wrong", rc=2)              # authentication failed
    same("get", "app/x", "--user", "ghost:pw", rc=2)
    same("get", "app/x", "--user", "np:pw", rc=2)                    # no password user
    # -- each user's permissions
    same("get", "app/x", *ALICE, rc=0)
    same("get", "app/", "--from-key", *ALICE, rc=1)                  # runs past the prefix
    same("put", "app/x", "3", *ALICE, rc=1)                          # read only
    same("put", "b", "1", *ALICE, rc=0)                              # readwrite [b, c)
    same("get", "b", "d", *ALICE, rc=1)
    same("del", "b", *ALICE, rc=0)
    same("put", "zeta", "1", *BOB, rc=0)                             # write from z on
    same("get", "zeta", *BOB, rc=1)
    same("put", "app/x", "4", *ROOT_U, rc=0)
    same("get", "", "--from-key", *ROOT_U, rc=0)
    # -- txns: every compare and both branches are checked
    same("txn", *ALICE, input='value("app/x") = "4"\n\nget app/x\n\nput b 2\n\n', rc=0)
    same("txn", *ALICE, input='value("app/x") = "4"\n\nget app/x\n\nput zeta 2\n\n', rc=1)
    same("txn", *BOB, input='value("app/x") = "4"\n\nput zeta 3\n\n\n', rc=1)
    # -- admin-only and self reads
    same("user", "get", "alice", *ALICE, rc=0)
    same("user", "get", "bob", *ALICE, rc=1)
    same("role", "get", "writer", *ALICE, rc=1)
    same("user", "list", *ALICE, rc=1)
    same("role", "add", "x", *ALICE, rc=1)
    same("defrag", *ALICE, rc=1)                                     # auth: permission denied (raw)
    same("endpoint", "hashkv", *ALICE, rc=1)
    same("watch", "zz", "--rev", "1", *ALICE, rc=5)                   # canceled: permission denied
    # -- root's protected grants
    same("user", "delete", "root", *ROOT_U, rc=1)                    # invalid auth management
    same("user", "revoke-role", "root", "root", *ROOT_U, rc=1)
    same("role", "delete", "root", *ROOT_U, rc=1)
    # -- passwd, revoke, delete
    same("user", "passwd", "alice", "--interactive=false", *ROOT_U, input="apw2\n", rc=0)
    same("get", "app/x", *ALICE, rc=2)                               # the old password fails
    same("get", "app/x", "--user", "alice:apw2", rc=0)
    same("role", "revoke-permission", "reader", "app/", "--prefix", *ROOT_U, rc=0)
    same("role", "revoke-permission", "reader", "app/", "--prefix", *ROOT_U, rc=1)  # not granted
    same("get", "app/x", "--user", "alice:apw2", rc=1)
    same("user", "revoke-role", "bob", "writer", *ROOT_U, rc=0)
    same("user", "revoke-role", "bob", "writer", *ROOT_U, rc=1)      # role is not granted
    same("put", "zeta", "9", *BOB, rc=1)
    same("role", "delete", "writer", *ROOT_U, rc=0)
    same("user", "delete", "bob", *ROOT_U, rc=0)
    same("user", "delete", "bob", *ROOT_U, rc=1)
    same("role", "get", "reader", *ROOT_U, rc=0)
    same("user", "list", *ROOT_U, rc=0)
    # -- disable: open again
    same("auth", "disable", "--user", "alice:apw2", rc=1)
    same("auth", "disable", *ROOT_U, rc=0)
    same("get", "app/x", rc=0)
    same("user", "list", rc=0)
    same("auth", "disable", rc=0)                                    # already off


@pytest.mark.parametrize("pair", [1], indirect=True)
def test_auth_session_one_member(pair):
    _session(pair.case())


@pytest.mark.soak
@pytest.mark.parametrize("pair", [3], indirect=True)
def test_auth_session_three_members(pair):
    _session(pair.case())
