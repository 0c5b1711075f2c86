"""Auth in the member's db, through the real Applier: applied with the batch,
kept on reopen, carried by snapshots (and checked in them), kept by defrag."""
from __future__ import annotations

import sqlite3

import pytest

from engine.auth import errors
from engine.auth.password import hash_password
from engine.auth.tokens import AuthInfo
from engine.mvcc.apply import Applier
from engine.mvcc.errors import InvalidSnapshot
from engine.proto import auth_pb2, internal_pb2, rpc_pb2

IR = internal_pb2.InternalRequest
HASH = hash_password("pw", cost=4)


def _setup_requests():
    return [
        IR(id=1, auth_user_add=rpc_pb2.AuthUserAddRequest(name="root", password=HASH)),
        IR(id=2, auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")),
        IR(id=3, auth_role_add=rpc_pb2.AuthRoleAddRequest(name="r")),
        IR(id=4, auth_role_grant_permission=rpc_pb2.AuthRoleGrantPermissionRequest(
            name="r", perm=auth_pb2.Permission(permType=auth_pb2.Permission.READ, key=b"k", range_end=b"l"))),
        IR(id=5, auth_user_add=rpc_pb2.AuthUserAddRequest(name="u", password=HASH)),
        IR(id=6, auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="u", role="r")),
        IR(id=7, auth_enable=rpc_pb2.AuthEnableRequest()),
    ]


def _assert_state(a: Applier, revision: int) -> None:
    s = a.auth
    assert s.enabled and s.revision == revision
    assert list(s.user_list().users) == ["root", "u"]
    s.is_range_permitted(AuthInfo("u", revision), b"k1")
    with pytest.raises(errors.PermissionDenied):
        s.is_put_permitted(AuthInfo("u", revision), b"k1")


def test_applied_kept_snapshotted_defragged(tmp_path):
    a = Applier(str(tmp_path / "a.db"))
    res = a.apply_batch(7, _setup_requests(), indexes=list(range(1, 8)))
    assert not any(isinstance(r, Exception) for r in res), res
    rev = a.auth.revision
    # the permission re-check at apply: u may not write k1, root may
    put = lambda user, i: IR(id=i, put=rpc_pb2.PutRequest(key=b"k1", value=b"v"), username=user, auth_revision=rev)
    refused, ok = a.apply_batch(9, [put("u", 8), put("root", 9)], indexes=[8, 9])
    assert refused == errors.PermissionDenied() and isinstance(ok, rpc_pb2.PutResponse)
    # simple tokens are named after the Authenticate entry's index
    (tok,) = a.apply_batch(10, [IR(id=10, authenticate=internal_pb2.InternalAuthenticateRequest(
        name="u", simple_token="x" * 16))], indexes=[10])
    assert tok.token == "x" * 16 + ".10"
    snap = a.snapshot_bytes()
    a.defrag()
    _assert_state(a, rev)
    a.close()

    again = Applier(str(tmp_path / "a.db"))  # a restart
    _assert_state(again, rev)
    with pytest.raises(errors.InvalidAuthToken):
        again.auth.auth_info_from_token(tok.token)  # simple tokens do not survive it
    again.close()

    b = Applier(str(tmp_path / "b.db"))  # a member that gets the snapshot
    assert not b.auth.enabled
    b.restore(snap)
    _assert_state(b, rev)
    b.close()


def test_a_rolled_back_batch_leaves_auth_as_it_was(tmp_path):
    a = Applier(str(tmp_path / "db"))
    a.apply_batch(7, _setup_requests(), indexes=list(range(1, 8)))
    rev = a.auth.revision

    def boom(req):
        raise RuntimeError("disk on fire")

    a.register("member_attributes", boom)
    disable = IR(id=8, auth_disable=rpc_pb2.AuthDisableRequest(), username="root", auth_revision=rev)
    bad = IR(id=9, member_attributes=rpc_pb2.Member())
    with pytest.raises(Exception):
        a.apply_batch(9, [disable, bad], indexes=[8, 9])
    _assert_state(a, rev)  # the disable of the failed batch is gone, on disk and in memory
    a.close()


def test_a_snapshot_with_a_forged_auth_row_is_refused(tmp_path):
    a = Applier(str(tmp_path / "a.db"))
    a.apply_batch(7, _setup_requests(), indexes=list(range(1, 8)))
    path = tmp_path / "snap.db"
    path.write_bytes(a.snapshot_bytes())
    db = sqlite3.connect(path)
    db.execute("UPDATE auth_users SET user = ? WHERE name = ?", (b"\xff\xff not a user", b"u"))
    db.commit()
    db.close()
    b = Applier(str(tmp_path / "b.db"))
    with pytest.raises(InvalidSnapshot):
        b.restore(path.read_bytes())
    assert not b.auth.enabled and list(b.auth.user_list().users) == []
    a.close()
    b.close()
