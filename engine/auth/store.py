"""The auth store: users, roles, key-range permissions, enabled flag and
revision, with etcd v3.4's semantics (auth/store.go).

Storage: the member's SQLite db, tables of engine/auth/schema.py. The store
is given the backend's connection and never begins, commits or rolls back:
every write happens inside the caller's transaction (the applier's batch),
so auth changes are applied exactly once with the consistent index, survive
restarts and travel in snapshots. In-memory state (the enabled flag, the
revision, the merged permissions per user) follows the writes at once;
after a rollback or a snapshot install the owner calls ``load()``, which
rebuilds it from the db. One thread at a time (the applying loop).

The rules etcd enforces and this store repeats:
  * ``root``: auth enable needs a user root holding the role root (a role
    that need not exist as a record); while auth is on, user root cannot be
    deleted nor lose role root, and role root cannot be deleted ("invalid
    auth management"). A user with role root may do everything.
  * the revision starts at 1 and grows by one with every change of users,
    roles, permissions, and with auth disable (not enable, not a grant that
    changes nothing). Requests carry the revision their token was checked
    at; one older than the store's is refused ("revision of auth store is
    old"), so a revoked permission is never used by a request in flight.
  * passwords are stored as bcrypt hashes made by the proposer
    (engine/auth/password.py); the store refuses anything else.

Permission checks (``is_*_permitted``) answer from per-user merged interval
sets (engine/auth/rangeperm.py), rebuilt when the store changes.
"""
from __future__ import annotations

import logging
import sqlite3
from typing import Callable

from engine.proto import auth_pb2, rpc_pb2

from . import errors
from .password import check_password, looks_hashed
from .rangeperm import UnifiedPerms
from .tokens import AuthInfo, SimpleTokens

log = logging.getLogger("engine.auth")

ROOT_USER = "root"
ROOT_ROLE = "root"

User = auth_pb2.User
Role = auth_pb2.Role
Permission = auth_pb2.Permission


class NotHashed(errors.AuthError):
    """A user add / password change whose password is not a bcrypt hash:
    the proposer broke the hash-before-propose rule. Refused (the same way
    on every member) rather than storing a clear password."""

    etcd_message = "raftnode: refusing a password that was not hashed before proposing"


class AuthStore:
    def __init__(self, db: sqlite3.Connection | Callable[[], sqlite3.Connection], tokens=None) -> None:
        """db: the backend's connection, or a function returning its current
        one (the backend reconnects when a snapshot or a defrag swaps its
        file in: pass ``lambda: backend._db``-like accessors then)."""
        if isinstance(db, sqlite3.Connection):
            self._conn = lambda: db
        else:
            self._conn = db
        self.tokens = tokens if tokens is not None else SimpleTokens()
        self._enabled = False
        self._revision = 1
        # user name -> (merged permissions, has the root role)
        self._perms: dict[str, tuple[UnifiedPerms, bool]] = {}
        self.load()

    # -- state ----------------------------------------------------------------

    def load(self) -> None:
        """(Re)build the in-memory state from the db: at start, after a
        rolled-back batch, after a snapshot was installed."""
        was = self._enabled
        self._enabled = self._get_meta("enabled") == 1
        # etcd writes revision 1 when it creates the store; absent means that.
        self._revision = self._get_meta("revision") or 1
        self._refresh_perms()
        if self._enabled and not was:
            self.tokens.enable()
        elif was and not self._enabled:
            self.tokens.disable()

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        self.tokens.disable()

    # -- rows -------------------------------------------------------------------

    def _get_meta(self, name: str) -> int:
        r = self._conn().execute("SELECT value FROM auth_meta WHERE name = ?", (name,)).fetchone()
        return r[0] if r is not None else 0

    def _set_meta(self, name: str, value: int) -> None:
        self._conn().execute("INSERT OR REPLACE INTO auth_meta (name, value) VALUES (?, ?)", (name, value))

    # etcd's two record buckets: table -> (record column, message type).
    _USERS = ("auth_users", "user", User)
    _ROLES = ("auth_roles", "role", Role)

    def _get(self, kind, name: str):
        table, col, cls = kind
        r = self._conn().execute(f"SELECT {col} FROM {table} WHERE name = ?", (name.encode(),)).fetchone()
        return cls.FromString(r[0]) if r is not None else None

    def _put(self, kind, record) -> None:
        table, col, _ = kind
        self._conn().execute(f"INSERT OR REPLACE INTO {table} (name, {col}) VALUES (?, ?)",
                             (record.name, record.SerializeToString(deterministic=True)))

    def _delete(self, kind, name: str) -> None:
        self._conn().execute(f"DELETE FROM {kind[0]} WHERE name = ?", (name.encode(),))

    def _all(self, kind) -> list:
        table, col, cls = kind
        return [cls.FromString(b) for (b,) in self._conn().execute(f"SELECT {col} FROM {table} ORDER BY name")]

    def _names(self, kind) -> list[str]:
        return [b.decode(errors="surrogateescape") for (b,) in
                self._conn().execute(f"SELECT name FROM {kind[0]} ORDER BY name")]

    def _get_user(self, name: str) -> User | None:
        return self._get(self._USERS, name)

    def _get_role(self, name: str) -> Role | None:
        return self._get(self._ROLES, name)

    def _commit_revision(self) -> None:
        self._revision += 1
        self._set_meta("revision", self._revision)

    def _changed(self) -> None:
        """After every change of users/roles/permissions (etcd's
        commitRevision + refreshRangePermCache)."""
        self._commit_revision()
        self._refresh_perms()

    def _refresh_perms(self) -> None:
        roles = {r.name.decode(errors="surrogateescape"): r for r in self._all(self._ROLES)}
        perms: dict[str, tuple[UnifiedPerms, bool]] = {}
        for u in self._all(self._USERS):
            granted = [p for name in u.roles if name in roles for p in roles[name].keyPermission]
            perms[u.name.decode(errors="surrogateescape")] = (UnifiedPerms(granted), ROOT_ROLE in u.roles)
        self._perms = perms

    # -- enable / disable / authenticate (applied) ----------------------------

    def auth_enable(self) -> rpc_pb2.AuthEnableResponse:
        if self._enabled:
            return rpc_pb2.AuthEnableResponse()  # already on: ignored, as etcd
        u = self._get_user(ROOT_USER)
        if u is None:
            raise errors.RootUserNotExist()
        if ROOT_ROLE not in u.roles:
            raise errors.RootRoleNotExist()
        self._set_meta("enabled", 1)
        self._enabled = True
        self.tokens.enable()
        self._refresh_perms()
        log.info("enabled authentication")
        return rpc_pb2.AuthEnableResponse()

    def auth_disable(self) -> rpc_pb2.AuthDisableResponse:
        if not self._enabled:
            return rpc_pb2.AuthDisableResponse()
        self._set_meta("enabled", 0)
        self._commit_revision()
        self._enabled = False
        self.tokens.disable()  # every token is void
        log.info("disabled authentication")
        return rpc_pb2.AuthDisableResponse()

    def authenticate(self, name: str, simple_token: str = "", index: int = 0) -> rpc_pb2.AuthenticateResponse:
        """Apply an Authenticate entry at log ``index``: the password was
        checked by the proposer (``check_password``); register the token."""
        if not self._enabled:
            raise errors.AuthNotEnabled()
        u = self._get_user(name)
        if u is None or u.options.no_password:
            raise errors.AuthFailed()
        token = self.tokens.assign(name, self._revision, prefix=simple_token, index=index)
        return rpc_pb2.AuthenticateResponse(token=token)

    # -- passwords (proposer side) ---------------------------------------------

    def password_to_check(self, name: str) -> tuple[int, bytes]:
        """etcd's CheckPassword, first half: (the revision now, the stored
        hash) for the caller to compare off the loop (``check_password``),
        or the refusal."""
        if not self._enabled:
            raise errors.AuthNotEnabled()
        u = self._get_user(name)
        if u is None:
            raise errors.AuthFailed()
        if u.options.no_password:
            raise errors.NoPasswordUser()
        return self._revision, u.password

    def check_password(self, name: str, password: str) -> int:
        """etcd's CheckPassword in one call (bcrypt on this thread): the
        revision the password was checked at."""
        revision, hashed = self.password_to_check(name)
        if not check_password(hashed, password):
            raise errors.AuthFailed()
        return revision

    # -- users (applied) ------------------------------------------------------

    def user_add(self, r: rpc_pb2.AuthUserAddRequest) -> rpc_pb2.AuthUserAddResponse:
        """r.password holds the bcrypt hash (made by the proposer), or is
        empty for a user with options.no_password."""
        if not r.name:
            raise errors.UserEmpty()
        no_password = r.HasField("options") and r.options.no_password
        if not no_password and not looks_hashed(r.password):
            raise NotHashed()
        if self._get_user(r.name) is not None:
            raise errors.UserAlreadyExist()
        u = User(name=r.name.encode(), password=b"" if no_password else r.password.encode())
        u.options.no_password = no_password
        self._put(self._USERS, u)
        self._changed()
        log.info("added a user %r", r.name)
        return rpc_pb2.AuthUserAddResponse()

    def user_delete(self, r: rpc_pb2.AuthUserDeleteRequest) -> rpc_pb2.AuthUserDeleteResponse:
        if self._enabled and r.name == ROOT_USER:
            raise errors.InvalidAuthMgmt()
        if self._get_user(r.name) is None:
            raise errors.UserNotFound()
        self._delete(self._USERS, r.name)
        self._changed()
        self.tokens.invalidate_user(r.name)
        return rpc_pb2.AuthUserDeleteResponse()

    def user_change_password(self, r: rpc_pb2.AuthUserChangePasswordRequest) -> rpc_pb2.AuthUserChangePasswordResponse:
        """r.password holds the bcrypt hash made by the proposer."""
        if not looks_hashed(r.password):
            raise NotHashed()
        u = self._get_user(r.name)
        if u is None:
            raise errors.UserNotFound()
        u.password = r.password.encode()  # roles and options kept
        self._put(self._USERS, u)
        self._changed()
        self.tokens.invalidate_user(r.name)
        return rpc_pb2.AuthUserChangePasswordResponse()

    def user_grant_role(self, r: rpc_pb2.AuthUserGrantRoleRequest) -> rpc_pb2.AuthUserGrantRoleResponse:
        u = self._get_user(r.user)
        if u is None:
            raise errors.UserNotFound()
        if r.role != ROOT_ROLE and self._get_role(r.role) is None:
            raise errors.RoleNotFound()
        if r.role in u.roles:
            return rpc_pb2.AuthUserGrantRoleResponse()  # nothing changes, no new revision
        roles = sorted([*u.roles, r.role])
        del u.roles[:]
        u.roles.extend(roles)
        self._put(self._USERS, u)
        self._changed()
        return rpc_pb2.AuthUserGrantRoleResponse()

    def user_revoke_role(self, r: rpc_pb2.AuthUserRevokeRoleRequest) -> rpc_pb2.AuthUserRevokeRoleResponse:
        if self._enabled and r.name == ROOT_USER and r.role == ROOT_ROLE:
            raise errors.InvalidAuthMgmt()
        u = self._get_user(r.name)
        if u is None:
            raise errors.UserNotFound()
        kept = [x for x in u.roles if x != r.role]
        if len(kept) == len(u.roles):
            raise errors.RoleNotGranted()
        del u.roles[:]
        u.roles.extend(kept)
        self._put(self._USERS, u)
        self._changed()
        return rpc_pb2.AuthUserRevokeRoleResponse()

    # -- roles (applied) -------------------------------------------------------

    def role_add(self, r: rpc_pb2.AuthRoleAddRequest) -> rpc_pb2.AuthRoleAddResponse:
        if not r.name:
            raise errors.RoleEmpty()
        if self._get_role(r.name) is not None:
            raise errors.RoleAlreadyExist()
        self._put(self._ROLES, Role(name=r.name.encode()))
        # etcd bumps the revision; a role without permissions changes no
        # user's permissions, so the merged sets stay as they are.
        self._commit_revision()
        return rpc_pb2.AuthRoleAddResponse()

    def role_delete(self, r: rpc_pb2.AuthRoleDeleteRequest) -> rpc_pb2.AuthRoleDeleteResponse:
        if self._enabled and r.role == ROOT_ROLE:
            raise errors.InvalidAuthMgmt()
        if self._get_role(r.role) is None:
            raise errors.RoleNotFound()
        self._delete(self._ROLES, r.role)
        # The role is taken from every user that had it (etcd does the same).
        for u in self._all(self._USERS):
            if r.role in u.roles:
                kept = [x for x in u.roles if x != r.role]
                del u.roles[:]
                u.roles.extend(kept)
                self._put(self._USERS, u)
        self._changed()
        return rpc_pb2.AuthRoleDeleteResponse()

    def role_grant_permission(self, r: rpc_pb2.AuthRoleGrantPermissionRequest) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        role = self._get_role(r.name)
        if role is None:
            raise errors.RoleNotFound()
        perms = list(role.keyPermission)
        # etcd looks at the FIRST permission whose key is >= the new one's
        # (a binary search on the key alone) and updates it in place only if
        # key and range_end both match; otherwise it appends and re-sorts by
        # key. Repeated here to keep the same lists as etcd.
        idx = next((i for i, p in enumerate(perms) if p.key >= r.perm.key), len(perms))
        if idx < len(perms) and perms[idx].key == r.perm.key and perms[idx].range_end == r.perm.range_end:
            perms[idx].permType = r.perm.permType
        else:
            perms.append(Permission(permType=r.perm.permType, key=r.perm.key, range_end=r.perm.range_end))
            perms.sort(key=lambda p: p.key)  # stable, like Go's insertion sort on small lists
        new = Role(name=role.name)
        new.keyPermission.extend(perms)
        self._put(self._ROLES, new)
        self._changed()
        return rpc_pb2.AuthRoleGrantPermissionResponse()

    def role_revoke_permission(self, r: rpc_pb2.AuthRoleRevokePermissionRequest) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        role = self._get_role(r.role)
        if role is None:
            raise errors.RoleNotFound()
        kept = [p for p in role.keyPermission if p.key != r.key or p.range_end != r.range_end]
        if len(kept) == len(role.keyPermission):
            raise errors.PermissionNotGranted()
        new = Role(name=role.name)
        new.keyPermission.extend(kept)
        self._put(self._ROLES, new)
        self._changed()
        return rpc_pb2.AuthRoleRevokePermissionResponse()

    # -- reads ----------------------------------------------------------------

    def user_get(self, name: str) -> rpc_pb2.AuthUserGetResponse:
        u = self._get_user(name)
        if u is None:
            raise errors.UserNotFound()
        return rpc_pb2.AuthUserGetResponse(roles=list(u.roles))

    def user_list(self) -> rpc_pb2.AuthUserListResponse:
        return rpc_pb2.AuthUserListResponse(users=self._names(self._USERS))

    def role_get(self, name: str) -> rpc_pb2.AuthRoleGetResponse:
        role = self._get_role(name)
        if role is None:
            raise errors.RoleNotFound()
        return rpc_pb2.AuthRoleGetResponse(perm=list(role.keyPermission))

    def role_list(self) -> rpc_pb2.AuthRoleListResponse:
        return rpc_pb2.AuthRoleListResponse(roles=self._names(self._ROLES))

    def has_role(self, user: str, role: str) -> bool:
        u = self._get_user(user)
        return u is not None and role in u.roles

    # -- permission checks ----------------------------------------------------

    def _is_op_permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes, write: bool) -> None:
        if not self._enabled:
            return
        if info is None or info.revision == 0:
            raise errors.UserEmpty()  # no user given
        if info.revision < self._revision:
            raise errors.AuthOldRevision()
        entry = self._perms.get(info.username)
        if entry is None:
            raise errors.PermissionDenied()  # the user is gone
        perms, is_root = entry
        if is_root or perms.permitted(key, range_end, write):
            return
        raise errors.PermissionDenied()

    def is_range_permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes = b"") -> None:
        """Raise unless info's user may read [key, range_end) (key alone if
        range_end is empty). Nothing is checked while auth is off."""
        self._is_op_permitted(info, key, range_end, write=False)

    def is_put_permitted(self, info: AuthInfo | None, key: bytes) -> None:
        self._is_op_permitted(info, key, b"", write=True)

    def is_delete_range_permitted(self, info: AuthInfo | None, key: bytes, range_end: bytes = b"") -> None:
        self._is_op_permitted(info, key, range_end, write=True)

    def is_admin_permitted(self, info: AuthInfo | None) -> None:
        """Raise unless info's user has the root role (auth on)."""
        if not self._enabled:
            return
        if info is None or not info.username:
            raise errors.UserEmpty()
        entry = self._perms.get(info.username)
        if entry is None:
            raise errors.UserNotFound()
        if not entry[1]:
            raise errors.PermissionDenied()

    # -- tokens ----------------------------------------------------------------

    def gen_token_prefix(self) -> str:
        return self.tokens.gen_token_prefix()

    def auth_info_from_token(self, token: str) -> AuthInfo:
        """The AuthInfo a request's ``token`` metadata names, or
        InvalidAuthToken. (A simple token made at a log index this member
        has not applied yet: the caller waits for ``tokens.index_of(token)``
        first, as etcd's index waiter does.)"""
        info = self.tokens.info(token, self._revision)
        if info is None:
            raise errors.InvalidAuthToken()
        return info
