"""The Auth service (engine/api/auth.py) over a one-member stand-in for the
log: proposals are applied at once through the same hooks the applier uses.
Checks etcd's codes and texts, the token metadata, and that no clear
password is ever proposed."""
from __future__ import annotations

import asyncio
import sqlite3
import types

import grpc
import pytest

from engine.api.auth import AuthServicer
from engine.auth.apply import AuthApplier
from engine.auth.schema import SCHEMA
from engine.auth.store import AuthStore
from engine.proto import auth_pb2, rpc_pb2

C = grpc.StatusCode


class Aborted(Exception):
    def __init__(self, code, details):
        super().__init__(code, details)
        self.code, self.details = code, details


class Context:
    def __init__(self, token: str | None = None) -> None:
        self.md = [("token", token)] if token else []

    def invocation_metadata(self):
        return self.md

    def time_remaining(self):
        return None

    async def abort(self, code, details):
        raise Aborted(code, details)


class OneMember:
    """The KVServer methods auth.py uses; propose applies through AuthApplier."""

    def __init__(self) -> None:
        db = sqlite3.connect(":memory:", isolation_level=None)
        db.executescript(SCHEMA)
        self.auth_store = AuthStore(db)
        self.applied_index = 10
        self.aa = AuthApplier(self.auth_store, applying_index=lambda: self.applied_index)
        self.handlers = self.aa.handlers()
        self.log: list[bytes] = []
        self.config = types.SimpleNamespace(bcrypt_cost=4, max_request_bytes=1 << 20, client_cert_auth=False)
        self.is_learner, self.leader_id, self._ids = False, 1, 0

    def request_timeout(self) -> float:
        return 5.0

    def next_request_id(self) -> int:
        self._ids += 1
        return self._ids

    def admit(self, req) -> None:
        pass

    async def propose(self, req, timeout):
        self.log.append(req.SerializeToString())
        self.applied_index += 1
        result = self.aa.precheck(req) or self.handlers[req.WhichOneof("request")](req)
        if isinstance(result, Exception):
            raise result
        return result

    async def read_barrier(self, timeout) -> None:
        pass

    async def wait_applied(self, index, timeout) -> None:
        if index > self.applied_index:
            raise asyncio.TimeoutError()

    def fill_header(self, header, revision=None) -> None:
        header.cluster_id, header.member_id, header.revision = 1, 2, 3


@pytest.fixture
def member():
    return OneMember()


def call(svc, name, req, token=None):
    return asyncio.run(getattr(svc, name)(req, Context(token)))


def err(svc, name, req, token=None):
    with pytest.raises(Aborted) as e:
        call(svc, name, req, token)
    return e.value.code, e.value.details


def test_an_etcdctl_like_session(member):
    svc = AuthServicer(member)
    assert err(svc, "AuthEnable", rpc_pb2.AuthEnableRequest()) == (
        C.FAILED_PRECONDITION, "etcdserver: root user does not exist")
    call(svc, "UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
    assert err(svc, "UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="x")) == (
        C.FAILED_PRECONDITION, "etcdserver: user name already exists")
    assert err(svc, "UserAdd", rpc_pb2.AuthUserAddRequest(name="")) == (
        C.INVALID_ARGUMENT, "etcdserver: user name is empty")
    assert err(svc, "AuthEnable", rpc_pb2.AuthEnableRequest()) == (
        C.FAILED_PRECONDITION, "etcdserver: root user does not have root role")
    call(svc, "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    call(svc, "RoleAdd", rpc_pb2.AuthRoleAddRequest(name="reader"))
    call(svc, "RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(
        name="reader", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"a", range_end=b"b")))
    call(svc, "UserAdd", rpc_pb2.AuthUserAddRequest(name="alice", password="alicepw"))
    call(svc, "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="reader"))
    assert err(svc, "Authenticate", rpc_pb2.AuthenticateRequest(name="root", password="rootpw")) == (
        C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
    header = call(svc, "AuthEnable", rpc_pb2.AuthEnableRequest()).header
    assert header.cluster_id == 1 and header.member_id == 2

    # no token once auth is on
    assert err(svc, "UserList", rpc_pb2.AuthUserListRequest()) == (
        C.INVALID_ARGUMENT, "etcdserver: user name is empty")
    assert err(svc, "RoleAdd", rpc_pb2.AuthRoleAddRequest(name="x")) == (
        C.INVALID_ARGUMENT, "etcdserver: user name is empty")
    assert err(svc, "Authenticate", rpc_pb2.AuthenticateRequest(name="root", password="bad")) == (
        C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")
    assert err(svc, "Authenticate", rpc_pb2.AuthenticateRequest(name="ghost", password="bad")) == (
        C.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password")

    root = call(svc, "Authenticate", rpc_pb2.AuthenticateRequest(name="root", password="rootpw")).token
    prefix, index = root.split(".")
    assert len(prefix) == 16 and int(index) == member.applied_index
    alice = call(svc, "Authenticate", rpc_pb2.AuthenticateRequest(name="alice", password="alicepw")).token
    assert list(call(svc, "UserList", rpc_pb2.AuthUserListRequest(), root).users) == ["alice", "root"]
    assert list(call(svc, "RoleList", rpc_pb2.AuthRoleListRequest(), root).roles) == ["reader"]
    # alice: not an admin, but may read herself and the roles she holds
    assert err(svc, "UserList", rpc_pb2.AuthUserListRequest(), alice) == (
        C.PERMISSION_DENIED, "etcdserver: permission denied")
    assert list(call(svc, "UserGet", rpc_pb2.AuthUserGetRequest(name="alice"), alice).roles) == ["reader"]
    assert err(svc, "UserGet", rpc_pb2.AuthUserGetRequest(name="root"), alice)[0] == C.PERMISSION_DENIED
    perms = call(svc, "RoleGet", rpc_pb2.AuthRoleGetRequest(role="reader"), alice).perm
    assert [(p.key, p.range_end) for p in perms] == [(b"a", b"b")]
    assert err(svc, "RoleAdd", rpc_pb2.AuthRoleAddRequest(name="x"), alice)[0] == C.PERMISSION_DENIED
    # root's special rules
    assert err(svc, "UserDelete", rpc_pb2.AuthUserDeleteRequest(name="root"), root) == (
        C.INVALID_ARGUMENT, "etcdserver: invalid auth management")
    assert err(svc, "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root"), root) == (
        C.INVALID_ARGUMENT, "etcdserver: invalid auth management")
    assert err(svc, "RoleRevokePermission", rpc_pb2.AuthRoleRevokePermissionRequest(
        role="reader", key=b"zz"), root) == (
        C.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role")
    # a bad token
    assert err(svc, "UserList", rpc_pb2.AuthUserListRequest(), "nope.1") == (
        C.UNAUTHENTICATED, "etcdserver: invalid auth token")
    # passwd: alice's tokens are void, the new password works
    call(svc, "UserChangePassword", rpc_pb2.AuthUserChangePasswordRequest(name="alice", password="new"), root)
    assert err(svc, "UserGet", rpc_pb2.AuthUserGetRequest(name="alice"), alice)[0] == C.UNAUTHENTICATED
    call(svc, "Authenticate", rpc_pb2.AuthenticateRequest(name="alice", password="new"))
    # disable: every token void, anyone may manage again
    call(svc, "AuthDisable", rpc_pb2.AuthDisableRequest(), root)
    assert err(svc, "UserList", rpc_pb2.AuthUserListRequest(), root)[0] == C.UNAUTHENTICATED
    call(svc, "UserDelete", rpc_pb2.AuthUserDeleteRequest(name="alice"))

    # the log never saw a clear password
    log = b"".join(member.log)
    for pw in (b"rootpw", b"alicepw", b"new"):
        assert pw not in log
    assert log.count(b"$2b$04$") == 5  # 3 users + 2 refused adds (proposed, as etcd does)


def test_no_password_user_and_token_from_the_future(member):
    svc = AuthServicer(member)
    req = rpc_pb2.AuthUserAddRequest(name="np")
    req.options.no_password = True
    call(svc, "UserAdd", req)
    call(svc, "UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="r"))
    call(svc, "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    call(svc, "AuthEnable", rpc_pb2.AuthEnableRequest())
    assert err(svc, "Authenticate", rpc_pb2.AuthenticateRequest(name="np", password="")) == (
        C.UNKNOWN, "auth: authentication failed, password was given for no password user")
    # a simple token whose entry this member has not applied (and never will)
    assert err(svc, "UserList", rpc_pb2.AuthUserListRequest(), "abcdefghijklmnop.999")[0] == C.UNAUTHENTICATED
