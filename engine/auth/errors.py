"""The auth store's conditions, one exception class each, with etcd's texts.

etcd's auth package has its own errors ("auth: user not found") and the
gRPC layer (v3rpc/util.go) maps each to an rpctypes status whose text is
what clients match on ("etcdserver: user name not found"). Here a class
carries the text the client must see (``etcd_message``) and the gRPC code
(``GRPC_CODES`` below), both from etcd v3.4.23's
etcdserver/api/v3rpc/rpctypes/error.go. Errors etcd does NOT map (they leave
as UNKNOWN with the auth package's own text) say so with code UNKNOWN:
``NoPasswordUser``, and the maintenance RPCs' refusals (``raw()``).

Store methods raise these; the apply hooks (engine/auth/apply.py) return
them as per-request results, like the MVCC layer's errors.
"""
from __future__ import annotations

import grpc

Code = grpc.StatusCode


class AuthError(Exception):
    etcd_message = "etcdserver: unknown auth error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.etcd_message)

    def __eq__(self, other: object) -> bool:
        # Results of the same condition compare equal (replicas, tests).
        return type(self) is type(other) and self.args == other.args  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), self.args))


class RootUserNotExist(AuthError):
    etcd_message = "etcdserver: root user does not exist"


class RootRoleNotExist(AuthError):
    etcd_message = "etcdserver: root user does not have root role"


class UserAlreadyExist(AuthError):
    etcd_message = "etcdserver: user name already exists"


class UserEmpty(AuthError):
    etcd_message = "etcdserver: user name is empty"


class UserNotFound(AuthError):
    etcd_message = "etcdserver: user name not found"


class RoleAlreadyExist(AuthError):
    etcd_message = "etcdserver: role name already exists"


class RoleNotFound(AuthError):
    etcd_message = "etcdserver: role name not found"


class RoleEmpty(AuthError):
    etcd_message = "etcdserver: role name is empty"


class AuthFailed(AuthError):
    etcd_message = "etcdserver: authentication failed, invalid user ID or password"


class NoPasswordUser(AuthError):
    # Not in etcd's gRPC table: it leaves as UNKNOWN with the auth text.
    etcd_message = "auth: authentication failed, password was given for no password user"


class PermissionDenied(AuthError):
    etcd_message = "etcdserver: permission denied"


class RoleNotGranted(AuthError):
    etcd_message = "etcdserver: role is not granted to the user"


class PermissionNotGranted(AuthError):
    etcd_message = "etcdserver: permission is not granted to the role"


class AuthNotEnabled(AuthError):
    etcd_message = "etcdserver: authentication is not enabled"


class InvalidAuthToken(AuthError):
    etcd_message = "etcdserver: invalid auth token"


class InvalidAuthMgmt(AuthError):
    etcd_message = "etcdserver: invalid auth management"


class AuthOldRevision(AuthError):
    etcd_message = "etcdserver: revision of auth store is old"


class InvalidAuthOpts(AuthError):
    """--auth-token could not be parsed (a start-up error, never a client's)."""

    etcd_message = "auth: invalid auth options"


class RawAuthError(AuthError):
    """An auth error as etcd 3.4's maintenance service and a few others
    return it: untranslated, so the client sees UNKNOWN and the auth
    package's own text ("auth: permission denied"). Made by ``raw()``."""


# The auth package's own texts (etcd auth/store.go), for raw().
_RAW_TEXT = {
    UserEmpty: "auth: user name is empty",
    UserNotFound: "auth: user not found",
    PermissionDenied: "auth: permission denied",
    InvalidAuthToken: "auth: invalid auth token",
    AuthOldRevision: "auth: revision in header is old",
    AuthNotEnabled: "auth: authentication is not enabled",
}


def raw(exc: AuthError) -> RawAuthError:
    """exc as etcd answers it where it does not translate auth errors:
    etcd 3.4's Maintenance Defragment/Snapshot/Hash/HashKV refusals."""
    r = RawAuthError(_RAW_TEXT.get(type(exc), exc.etcd_message))
    r.etcd_message = str(r)
    return r


GRPC_CODES: dict[type[Exception], grpc.StatusCode] = {
    RootUserNotExist: Code.FAILED_PRECONDITION,
    RootRoleNotExist: Code.FAILED_PRECONDITION,
    UserAlreadyExist: Code.FAILED_PRECONDITION,
    UserEmpty: Code.INVALID_ARGUMENT,
    UserNotFound: Code.FAILED_PRECONDITION,
    RoleAlreadyExist: Code.FAILED_PRECONDITION,
    RoleNotFound: Code.FAILED_PRECONDITION,
    RoleEmpty: Code.INVALID_ARGUMENT,
    AuthFailed: Code.INVALID_ARGUMENT,
    NoPasswordUser: Code.UNKNOWN,
    PermissionDenied: Code.PERMISSION_DENIED,
    RawAuthError: Code.UNKNOWN,
    RoleNotGranted: Code.FAILED_PRECONDITION,
    PermissionNotGranted: Code.FAILED_PRECONDITION,
    AuthNotEnabled: Code.FAILED_PRECONDITION,
    InvalidAuthToken: Code.UNAUTHENTICATED,
    InvalidAuthMgmt: Code.INVALID_ARGUMENT,
    AuthOldRevision: Code.INVALID_ARGUMENT,
    InvalidAuthOpts: Code.UNKNOWN,
}


def status_of(exc: AuthError) -> tuple[grpc.StatusCode, str]:
    """(code, message) a client must see for an auth error."""
    return GRPC_CODES.get(type(exc), Code.UNKNOWN), exc.etcd_message
