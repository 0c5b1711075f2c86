"""The auth store against etcd 3.4's rules (auth/store.go), in memory."""
from __future__ import annotations

import sqlite3

import pytest

from engine.auth import errors
from engine.auth.apply import AuthApplier
from engine.auth.password import hash_password
from engine.auth.schema import SCHEMA
from engine.auth.store import AuthStore, NotHashed
from engine.auth.tokens import AuthInfo
from engine.proto import auth_pb2, internal_pb2, rpc_pb2

IR = internal_pb2.InternalRequest
P = auth_pb2.Permission
READ, WRITE, READWRITE = P.READ, P.WRITE, P.READWRITE

# Cost 4: the lowest bcrypt allows; the production cost is tested once.
HASH = {}


def hashed(pw: str) -> str:
    if pw not in HASH:
        HASH[pw] = hash_password(pw, cost=4)
    return HASH[pw]


def new_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(SCHEMA)
    return db


@pytest.fixture
def store():
    return AuthStore(new_db())


def add_user(s, name, pw="pw", no_password=False):
    r = rpc_pb2.AuthUserAddRequest(name=name, password="" if no_password else hashed(pw))
    if no_password:
        r.options.no_password = True
    return s.user_add(r)


def grant(s, user, role):
    return s.user_grant_role(rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role))


def add_role(s, name):
    return s.role_add(rpc_pb2.AuthRoleAddRequest(name=name))


def grant_perm(s, role, typ, key, end=b""):
    return s.role_grant_permission(rpc_pb2.AuthRoleGrantPermissionRequest(
        name=role, perm=P(permType=typ, key=key, range_end=end)))


def enable_with_root(s):
    add_user(s, "root", "rootpw")
    grant(s, "root", "root")
    s.auth_enable()


def test_enable_needs_root_user_with_root_role(store):
    with pytest.raises(errors.RootUserNotExist):
        store.auth_enable()
    add_user(store, "root")
    with pytest.raises(errors.RootRoleNotExist):
        store.auth_enable()
    grant(store, "root", "root")  # the role root need not exist as a record
    rev = store.revision
    store.auth_enable()
    assert store.enabled and store.revision == rev  # enable does not bump the revision
    store.auth_enable()  # already on: ignored
    store.auth_disable()
    assert not store.enabled and store.revision == rev + 1


def test_revision_starts_at_one_and_counts_changes(store):
    assert store.revision == 1
    add_user(store, "u")          # 2
    add_role(store, "r")          # 3
    grant(store, "u", "r")        # 4
    grant(store, "u", "r")        # already granted: unchanged
    assert store.revision == 4
    with pytest.raises(errors.UserNotFound):
        grant(store, "nobody", "r")
    assert store.revision == 4


def test_root_rules_while_enabled(store):
    enable_with_root(store)
    with pytest.raises(errors.InvalidAuthMgmt):
        store.user_delete(rpc_pb2.AuthUserDeleteRequest(name="root"))
    with pytest.raises(errors.InvalidAuthMgmt):
        store.user_revoke_role(rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root"))
    with pytest.raises(errors.InvalidAuthMgmt):
        store.role_delete(rpc_pb2.AuthRoleDeleteRequest(role="root"))
    store.auth_disable()
    store.user_revoke_role(rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root"))
    store.user_delete(rpc_pb2.AuthUserDeleteRequest(name="root"))


def test_user_and_role_errors(store):
    with pytest.raises(errors.UserEmpty):
        store.user_add(rpc_pb2.AuthUserAddRequest(name="", password=hashed("x")))
    with pytest.raises(errors.RoleEmpty):
        add_role(store, "")
    add_user(store, "u")
    with pytest.raises(errors.UserAlreadyExist):
        add_user(store, "u")
    add_role(store, "r")
    with pytest.raises(errors.RoleAlreadyExist):
        add_role(store, "r")
    with pytest.raises(errors.RoleNotFound):
        grant(store, "u", "nope")
    with pytest.raises(errors.RoleNotGranted):
        store.user_revoke_role(rpc_pb2.AuthUserRevokeRoleRequest(name="u", role="r"))
    with pytest.raises(errors.PermissionNotGranted):
        store.role_revoke_permission(rpc_pb2.AuthRoleRevokePermissionRequest(role="r", key=b"a"))
    with pytest.raises(errors.RoleNotFound):
        store.role_get("nope")
    with pytest.raises(errors.UserNotFound):
        store.user_get("nope")
    with pytest.raises(errors.UserNotFound):
        store.user_change_password(rpc_pb2.AuthUserChangePasswordRequest(name="nope", password=hashed("x")))


def test_lists_are_sorted_and_role_delete_ungrants(store):
    for n in ("zed", "amy", "bob"):
        add_user(store, n)
    for r in ("w", "a"):
        add_role(store, r)
    grant(store, "bob", "w")
    grant(store, "bob", "a")
    grant(store, "bob", "root")
    assert list(store.user_list().users) == ["amy", "bob", "zed"]
    assert list(store.role_list().roles) == ["a", "w"]  # root is no record
    assert list(store.user_get("bob").roles) == ["a", "root", "w"]
    store.role_delete(rpc_pb2.AuthRoleDeleteRequest(role="w"))
    assert list(store.user_get("bob").roles) == ["a", "root"]


def test_grant_permission_updates_in_place_or_appends_sorted(store):
    add_role(store, "r")
    grant_perm(store, "r", READ, b"m")
    grant_perm(store, "r", READ, b"a", b"c")
    grant_perm(store, "r", WRITE, b"m")        # same key and end: type updated
    perms = store.role_get("r").perm
    assert [(p.key, p.range_end, p.permType) for p in perms] == [(b"a", b"c", READ), (b"m", b"", WRITE)]
    store.role_revoke_permission(rpc_pb2.AuthRoleRevokePermissionRequest(role="r", key=b"a", range_end=b"c"))
    assert [p.key for p in store.role_get("r").perm] == [b"m"]


def test_passwords_are_stored_hashed_only(store):
    with pytest.raises(NotHashed):
        store.user_add(rpc_pb2.AuthUserAddRequest(name="u", password="clear-text"))
    add_user(store, "u", "secret")
    enable_with_root(store)
    assert store.check_password("u", "secret") == store.revision
    with pytest.raises(errors.AuthFailed):
        store.check_password("u", "wrong")
    with pytest.raises(errors.AuthFailed):
        store.check_password("nobody", "x")
    raw = b"".join(r[0] for r in store._conn().execute("SELECT user FROM auth_users"))
    assert b"secret" not in raw


def test_no_password_user(store):
    add_user(store, "np", no_password=True)
    enable_with_root(store)
    with pytest.raises(errors.NoPasswordUser):
        store.check_password("np", "")
    with pytest.raises(errors.AuthFailed):
        store.authenticate("np", "prefix", 7)


def test_authenticate_and_tokens(store):
    with pytest.raises(errors.AuthNotEnabled):
        store.check_password("root", "x")
    add_user(store, "u", "pw")
    enable_with_root(store)
    resp = store.authenticate("u", "abcdefghijklmnop", 42)
    assert resp.token == "abcdefghijklmnop.42"
    assert store.auth_info_from_token(resp.token) == AuthInfo("u", store.revision)
    with pytest.raises(errors.InvalidAuthToken):
        store.auth_info_from_token("abcdefghijklmnop.43")
    # a password change drops the user's tokens
    store.user_change_password(rpc_pb2.AuthUserChangePasswordRequest(name="u", password=hashed("pw2")))
    with pytest.raises(errors.InvalidAuthToken):
        store.auth_info_from_token(resp.token)
    t2 = store.authenticate("u", "bbbbbbbbbbbbbbbb", 50).token
    store.auth_disable()  # every token void
    store.auth_enable()
    with pytest.raises(errors.InvalidAuthToken):
        store.auth_info_from_token(t2)


def test_permission_checks(store):
    add_user(store, "u")
    add_role(store, "r")
    grant(store, "u", "r")
    grant_perm(store, "r", READ, b"foo")                  # one key
    grant_perm(store, "r", READWRITE, b"dir/", b"dir0")   # a prefix
    grant_perm(store, "r", WRITE, b"z", b"\x00")          # from key
    enable_with_root(store)
    u = AuthInfo("u", store.revision)
    store.is_range_permitted(u, b"foo")
    with pytest.raises(errors.PermissionDenied):
        store.is_put_permitted(u, b"foo")
    with pytest.raises(errors.PermissionDenied):
        store.is_range_permitted(u, b"foo", b"fop")  # a range: [foo, foo\0) is not [foo, fop)
    store.is_range_permitted(u, b"dir/", b"dir0")
    store.is_delete_range_permitted(u, b"dir/a", b"dir/b")
    with pytest.raises(errors.PermissionDenied):
        store.is_range_permitted(u, b"dir/", b"dir1")
    store.is_put_permitted(u, b"zzz")
    store.is_delete_range_permitted(u, b"z", b"\x00")
    with pytest.raises(errors.PermissionDenied):
        store.is_range_permitted(u, b"z")
    # no user / old revision / unknown user / root
    with pytest.raises(errors.UserEmpty):
        store.is_range_permitted(AuthInfo("", 0), b"foo")
    with pytest.raises(errors.AuthOldRevision):
        store.is_range_permitted(AuthInfo("u", store.revision - 1), b"foo")
    with pytest.raises(errors.PermissionDenied):
        store.is_range_permitted(AuthInfo("ghost", store.revision), b"foo")
    store.is_delete_range_permitted(AuthInfo("root", store.revision), b"\x00", b"\x00")
    # admin
    store.is_admin_permitted(AuthInfo("root", 0))
    with pytest.raises(errors.PermissionDenied):
        store.is_admin_permitted(u)
    with pytest.raises(errors.UserNotFound):
        store.is_admin_permitted(AuthInfo("ghost", 1))
    with pytest.raises(errors.UserEmpty):
        store.is_admin_permitted(None)


def test_checks_are_off_while_auth_is_off(store):
    store.is_put_permitted(None, b"x")
    store.is_admin_permitted(None)


def test_state_survives_reopen_and_rollback():
    db = new_db()
    s = AuthStore(db)
    add_user(s, "u")
    add_role(s, "r")
    grant_perm(s, "r", READ, b"a", b"b")
    grant(s, "u", "r")
    enable_with_root(s)
    rev = s.revision
    s2 = AuthStore(db)  # a restart: same db
    assert s2.enabled and s2.revision == rev
    s2.is_range_permitted(AuthInfo("u", rev), b"a1")
    # writes inside a caller's transaction that is rolled back: load() restores
    db.execute("BEGIN")
    s2.role_delete(rpc_pb2.AuthRoleDeleteRequest(role="r"))
    s2.auth_disable()
    db.execute("ROLLBACK")
    s2.load()
    assert s2.enabled and s2.revision == rev
    s2.is_range_permitted(AuthInfo("u", rev), b"a1")


def test_apply_hooks_admin_and_refusals():
    s = AuthStore(new_db())
    aa = AuthApplier(s, applying_index=lambda: 9)
    h = aa.handlers()
    assert h["auth_user_add"](IR(auth_user_add=rpc_pb2.AuthUserAddRequest(name="root", password=hashed("r")))) \
        == rpc_pb2.AuthUserAddResponse()
    h["auth_user_grant_role"](IR(auth_user_grant_role=rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")))
    assert aa.precheck(IR(auth_enable=rpc_pb2.AuthEnableRequest())) is None  # auth off: no check
    h["auth_enable"](IR(auth_enable=rpc_pb2.AuthEnableRequest()))
    add_user(s, "u")
    # an admin request from a non-root user / nobody
    req = IR(auth_role_add=rpc_pb2.AuthRoleAddRequest(name="x"), username="u", auth_revision=s.revision)
    assert aa.precheck(req) == errors.PermissionDenied()
    assert aa.precheck(IR(auth_role_add=rpc_pb2.AuthRoleAddRequest(name="x"))) == errors.UserEmpty()
    ok = IR(auth_role_add=rpc_pb2.AuthRoleAddRequest(name="x"), username="root", auth_revision=s.revision)
    assert aa.precheck(ok) is None
    # a refusal is returned, not raised
    assert h["auth_role_add"](IR(auth_role_add=rpc_pb2.AuthRoleAddRequest(name=""))) == errors.RoleEmpty()
    tok = h["authenticate"](IR(authenticate=internal_pb2.InternalAuthenticateRequest(
        name="root", simple_token="p" * 16)))
    assert tok.token == "p" * 16 + ".9"


def test_apply_precheck_txn_lease_and_stale_revision():
    s = AuthStore(new_db())
    add_user(s, "u")
    add_role(s, "r")
    grant_perm(s, "r", READWRITE, b"a", b"b")
    grant(s, "u", "r")
    enable_with_root(s)
    leases = {7: {b"a1"}, 8: {b"a1", b"zz"}}
    aa = AuthApplier(s, lease_keys=lambda lid: leases.get(lid, ()))
    rev = s.revision

    def txn(**kw):
        return IR(txn=rpc_pb2.TxnRequest(**kw), username="u", auth_revision=rev)

    put = lambda key: rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key))
    rng = lambda key: rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))
    assert aa.precheck(txn(success=[put(b"a1")], failure=[rng(b"a2")])) is None
    assert aa.precheck(txn(compare=[rpc_pb2.Compare(key=b"zz")])) == errors.PermissionDenied()
    assert aa.precheck(txn(failure=[put(b"zz")])) == errors.PermissionDenied()
    nested = rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[put(b"zz")]))
    assert aa.precheck(txn(success=[nested])) == errors.PermissionDenied()
    assert aa.precheck(IR(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=7), username="u", auth_revision=rev)) is None
    assert aa.precheck(IR(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=8), username="u", auth_revision=rev)) \
        == errors.PermissionDenied()
    assert aa.precheck(IR(put=rpc_pb2.PutRequest(key=b"a5", lease=8), username="u", auth_revision=rev)) \
        == errors.PermissionDenied()
    # a permission revoked while the request was in flight: stale revision
    s.role_revoke_permission(rpc_pb2.AuthRoleRevokePermissionRequest(role="r", key=b"a", range_end=b"b"))
    assert aa.precheck(IR(put=rpc_pb2.PutRequest(key=b"a1"), username="u", auth_revision=rev)) \
        == errors.AuthOldRevision()


def test_production_cost_hash_checks():
    from engine.auth.password import DEFAULT_COST, check_password, looks_hashed
    h = hash_password("x" * 100)  # past bcrypt's 72 bytes: cut, as Go's bcrypt
    assert h.startswith(f"$2b${DEFAULT_COST}$") and looks_hashed(h)
    assert check_password(h.encode(), "x" * 72)
    assert not check_password(h.encode(), "y")
    assert not check_password(b"garbage", "y")
