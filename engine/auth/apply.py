"""Auth at apply time: etcd's authApplierV3 (etcdserver/apply_auth.go).

Two pieces the applier (engine/mvcc/apply.py) plugs in, both running inside
its batch transaction, on every member alike:

``AuthApplier.handlers()``
    request kind -> fn(InternalRequest) -> response or AuthError: the auth
    store's mutations (enable/disable, authenticate, users, roles,
    permissions). Register each with ``Applier.register(kind, fn)``.

``AuthApplier.precheck(req)``
    the permission check repeated at apply against the store AS IT IS AT
    THAT LOG POSITION, with the user and auth revision the proposer put in
    the request: an admin request needs the root role; Put / Range /
    DeleteRange / Txn need the key permissions (with prev_kv also read);
    a Put with a lease and a LeaseRevoke need write permission on every key
    already attached to that lease. Returns the refusal (an AuthError) or
    None. Set it as ``Applier.precheck``.

The API layer checks the same before proposing (a refusal there is never
proposed); this second check is what makes a permission revoked while a
request was in flight count: the request carries the revision it was
checked at and is refused as "revision of auth store is old".

One deliberate difference from etcd 3.4.23: the operations of a txn nested
in a txn are checked too (3.4 skips them, a hole later etcd closed).
"""
from __future__ import annotations

from typing import Callable, Iterable

from engine.proto import internal_pb2, rpc_pb2

from . import errors
from .store import AuthStore
from .tokens import AuthInfo

InternalRequest = internal_pb2.InternalRequest

# Requests that need the root role while auth is on (etcd's needAdminPermission;
# the list/get reads are answered by the API layer, not through the log).
ADMIN_KINDS = frozenset({
    "auth_enable", "auth_disable",
    "auth_user_add", "auth_user_delete", "auth_user_change_password",
    "auth_user_grant_role", "auth_user_revoke_role",
    "auth_role_add", "auth_role_delete",
    "auth_role_grant_permission", "auth_role_revoke_permission",
})


def info_of(req: InternalRequest) -> AuthInfo:
    return AuthInfo(req.username, req.auth_revision)


def check_txn(store: AuthStore, info: AuthInfo, txn: rpc_pb2.TxnRequest) -> None:
    """etcd's checkTxnAuth: every compare's range readable, then every op of
    both branches (nested txns too). Raises the first refusal."""
    for c in txn.compare:
        store.is_range_permitted(info, c.key, c.range_end)
    for ops in (txn.success, txn.failure):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_range":
                r = op.request_range
                store.is_range_permitted(info, r.key, r.range_end)
            elif kind == "request_put":
                store.is_put_permitted(info, op.request_put.key)
            elif kind == "request_delete_range":
                d = op.request_delete_range
                if d.prev_kv:
                    store.is_range_permitted(info, d.key, d.range_end)
                store.is_delete_range_permitted(info, d.key, d.range_end)
            elif kind == "request_txn":
                check_txn(store, info, op.request_txn)


def check_put(store: AuthStore, info: AuthInfo, put: rpc_pb2.PutRequest,
              lease_keys: Callable[[int], Iterable[bytes]]) -> None:
    store.is_put_permitted(info, put.key)
    if put.lease:
        check_lease_keys(store, info, put.lease, lease_keys)
    if put.prev_kv:
        store.is_range_permitted(info, put.key, b"")


def check_delete(store: AuthStore, info: AuthInfo, d: rpc_pb2.DeleteRangeRequest) -> None:
    store.is_delete_range_permitted(info, d.key, d.range_end)
    if d.prev_kv:
        store.is_range_permitted(info, d.key, d.range_end)


def check_lease_keys(store: AuthStore, info: AuthInfo, lease_id: int,
                     lease_keys: Callable[[int], Iterable[bytes]]) -> None:
    """etcd's checkLeasePuts: whoever attaches to or revokes a lease must be
    able to write every key already attached to it."""
    for key in lease_keys(lease_id):
        store.is_put_permitted(info, key)


class AuthApplier:
    def __init__(self, store: AuthStore, *,
                 lease_keys: Callable[[int], Iterable[bytes]] = lambda lease_id: (),
                 applying_index: Callable[[], int] = lambda: 0) -> None:
        """lease_keys(lease_id): keys attached to a lease (none if unknown);
        applying_index(): the log index of the entry being applied (simple
        tokens are named after it)."""
        self.store = store
        self.lease_keys = lease_keys
        self.applying_index = applying_index

    # -- the check before every request --------------------------------------

    def precheck(self, req: InternalRequest) -> Exception | None:
        store = self.store
        if not store.enabled:
            return None
        kind = req.WhichOneof("request")
        info = info_of(req)
        try:
            if kind in ADMIN_KINDS:
                store.is_admin_permitted(info)
            elif kind == "put":
                check_put(store, info, req.put, self.lease_keys)
            elif kind == "range":
                store.is_range_permitted(info, req.range.key, req.range.range_end)
            elif kind == "delete_range":
                check_delete(store, info, req.delete_range)
            elif kind == "txn":
                check_txn(store, info, req.txn)
            elif kind == "lease_revoke":
                check_lease_keys(store, info, req.lease_revoke.ID, self.lease_keys)
        except errors.AuthError as e:
            return e
        return None

    # -- the auth requests themselves ------------------------------------------

    def handlers(self) -> dict[str, Callable[[InternalRequest], object]]:
        s = self.store
        return {
            "auth_enable": self._guard(lambda r: s.auth_enable()),
            "auth_disable": self._guard(lambda r: s.auth_disable()),
            "authenticate": self._guard(lambda r: s.authenticate(
                r.authenticate.name, r.authenticate.simple_token, self.applying_index())),
            "auth_user_add": self._guard(lambda r: s.user_add(r.auth_user_add)),
            "auth_user_delete": self._guard(lambda r: s.user_delete(r.auth_user_delete)),
            "auth_user_change_password": self._guard(lambda r: s.user_change_password(r.auth_user_change_password)),
            "auth_user_grant_role": self._guard(lambda r: s.user_grant_role(r.auth_user_grant_role)),
            "auth_user_revoke_role": self._guard(lambda r: s.user_revoke_role(r.auth_user_revoke_role)),
            "auth_role_add": self._guard(lambda r: s.role_add(r.auth_role_add)),
            "auth_role_delete": self._guard(lambda r: s.role_delete(r.auth_role_delete)),
            "auth_role_grant_permission": self._guard(lambda r: s.role_grant_permission(r.auth_role_grant_permission)),
            "auth_role_revoke_permission": self._guard(lambda r: s.role_revoke_permission(r.auth_role_revoke_permission)),
        }

    @staticmethod
    def _guard(fn: Callable[[InternalRequest], object]) -> Callable[[InternalRequest], object]:
        def handler(req: InternalRequest) -> object:
            try:
                return fn(req)
            except errors.AuthError as e:
                return e  # a refusal, the same on every member; nothing written
        return handler

    def install(self, applier) -> None:
        """Plug into an engine.mvcc Applier: its handlers and precheck."""
        for kind, fn in self.handlers().items():
            applier.register(kind, fn)
        applier.precheck = self.precheck
