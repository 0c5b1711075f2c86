"""A real member: no clear password on disk, auth kept across a restart,
simple tokens forgotten by it (issue 10's proof, as etcd behaves).

One raftnode process: users and roles are added and a password changed;
then every file of its data dir (WAL segments, snapshots, the db and its
-wal) is searched for the clear passwords; after a kill and a restart the
users, roles, permissions and the enabled flag are all there, the old token
is refused ("invalid auth token") and a new Authenticate works.
"""
from __future__ import annotations

import pathlib

import grpc
import pytest

from engine.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc
from tests.support import raftnode as support_raftnode

# Under -m soak: the default run covers the same in-process (tests/auth/test_persistence.py:
# restart, snapshot; tests/auth/test_api.py: no clear password is ever proposed).
pytestmark = pytest.mark.soak

PASSWORDS = ("Root-Secret-1", "Alice-Secret-2", "Alice-Secret-3")


def _stubs(endpoint: str):
    ch = grpc.insecure_channel(endpoint)
    return ch, rpc_pb2_grpc.AuthStub(ch), rpc_pb2_grpc.KVStub(ch)


def test_no_clear_password_on_disk_and_restart(raftnode_binary, tmp_path):
    cluster = support_raftnode.start_raftnode_cluster(tmp_path / "c", size=1)
    try:
        ch, auth, kv = _stubs(cluster.endpoints[0])
        with ch:
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password=PASSWORDS[0]), timeout=10)
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=10)
            auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="r"), timeout=10)
            auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
                name="r", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READWRITE, key=b"k")), timeout=10)
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="alice", password=PASSWORDS[1]), timeout=10)
            auth.UserChangePassword(rpc_pb2.AuthUserChangePasswordRequest(
                name="alice", password=PASSWORDS[2]), timeout=10)
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="r"), timeout=10)
            auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=10)
            token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="alice", password=PASSWORDS[2]),
                                      timeout=10).token
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), metadata=[("token", token)], timeout=10)

        data = pathlib.Path(cluster.members[0].data_dir)
        blobs = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
        assert b"$2b$" in blobs  # the hashes are there ...
        for pw in PASSWORDS:
            assert pw.encode() not in blobs  # ... the passwords never

        cluster.kill(0)
        cluster.restart(0)
        cluster.wait_leader()
        ch, auth, kv = _stubs(cluster.endpoints[0])
        with ch:
            with pytest.raises(grpc.RpcError) as e:
                kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=[("token", token)], timeout=10)
            assert (e.value.code(), e.value.details()) == (
                grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
            with pytest.raises(grpc.RpcError) as e:
                kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=10)  # auth is still on
            assert e.value.details() == "etcdserver: user name is empty"
            token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="alice", password=PASSWORDS[2]),
                                      timeout=10).token
            md = [("token", token)]
            assert kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=md, timeout=10).kvs[0].value == b"v"
            with pytest.raises(grpc.RpcError) as e:
                kv.Put(rpc_pb2.PutRequest(key=b"other", value=b"v"), metadata=md, timeout=10)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            root = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password=PASSWORDS[0]),
                                     timeout=10).token
            users = auth.UserList(rpc_pb2.AuthUserListRequest(), metadata=[("token", root)], timeout=10)
            assert list(users.users) == ["alice", "root"]
    finally:
        cluster.stop()
