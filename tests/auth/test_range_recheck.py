"""A Range whose user lost its permission (or saw auth change at all)
while the read ran is not answered: etcd's doSerialize compares the auth
revision again after the read ("etcdserver: revision of auth store is
old", which clientv3 answers by authenticating again and retrying).

The stand-in member's range_steps take two loop turns; between them an
auth change is applied to the store, as an apply batch would be between
the slices of a big index walk on the real member."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from engine.api.auth import AuthServicer
from engine.api.kv import KVServicer
from engine.api.stats import Counters
from engine.proto import auth_pb2, rpc_pb2
from tests.auth.test_api import Aborted, Context, OneMember

OLD = (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")


class ReadingMember(OneMember):
    """OneMember with a store to read: one key, a read in two slices, and
    `during` run between them."""

    def __init__(self) -> None:
        super().__init__()
        self.is_learner, self.leader_id = False, 1
        self.during = None
        self.current_revision = 3

    def range_steps(self, request, raw=False):
        yield                        # the handler gives the loop a turn here
        if self.during is not None:
            self.during()
        resp = rpc_pb2.RangeResponse(count=1)
        resp.kvs.add(key=b"a", value=b"secret")
        return resp, None


@pytest.fixture
def setup():
    m = ReadingMember()
    auth = AuthServicer(m)

    def call(name, req, token=None):
        return asyncio.run(getattr(auth, name)(req, Context(token)))
    call("UserAdd", rpc_pb2.AuthUserAddRequest(name="root", password="rootpw"))
    call("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"))
    call("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="reader"))
    call("RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(
        name="reader", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"a", range_end=b"b")))
    call("UserAdd", rpc_pb2.AuthUserAddRequest(name="alice", password="alicepw"))
    call("UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="reader"))
    call("AuthEnable", rpc_pb2.AuthEnableRequest())
    root = call("Authenticate", rpc_pb2.AuthenticateRequest(name="root", password="rootpw")).token
    alice = call("Authenticate", rpc_pb2.AuthenticateRequest(name="alice", password="alicepw")).token
    return m, KVServicer(m, Counters()), call, root, alice


def _range(kv, token):
    return asyncio.run(kv.Range(rpc_pb2.RangeRequest(key=b"a", serializable=True), Context(token)))


def test_an_unchanged_store_answers(setup):
    m, kv, call, root, alice = setup
    assert _range(kv, alice).kvs[0].value == b"secret"


def test_a_permission_revoked_during_the_read_withholds_the_answer(setup):
    m, kv, call, root, alice = setup
    m.during = lambda: m.auth_store.user_revoke_role(
        rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="reader"))
    with pytest.raises(Aborted) as e:
        _range(kv, alice)
    assert (e.value.code, e.value.details) == OLD


def test_any_auth_change_during_the_read_counts(setup):
    # etcd compares revisions, not permissions: an unrelated change too.
    m, kv, call, root, alice = setup
    m.during = lambda: m.auth_store.role_add(rpc_pb2.AuthRoleAddRequest(name="other"))
    with pytest.raises(Aborted) as e:
        _range(kv, alice)
    assert (e.value.code, e.value.details) == OLD
    m.during = None
    # A fresh token (as clientv3 gets on this error) reads again.
    alice = call("Authenticate", rpc_pb2.AuthenticateRequest(name="alice", password="alicepw")).token
    assert _range(kv, alice).kvs[0].value == b"secret"


def test_auth_off_reads_are_not_rechecked(setup):
    m, kv, call, root, alice = setup
    call("AuthDisable", rpc_pb2.AuthDisableRequest(), root)
    m.during = lambda: m.auth_store.role_add(rpc_pb2.AuthRoleAddRequest(name="other"))
    assert _range(kv, None).kvs[0].value == b"secret"
