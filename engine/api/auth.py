"""etcd's Auth service (etcdserver/api/v3rpc/auth.go + the auth half of
etcdserver/v3_server.go), over the member's auth store (engine/auth).

Writes go through the log like every other write: the handler proposes an
InternalRequest stamped with the caller's user and auth revision, and every
member applies it to its store (engine/auth/apply.py), where the admin check
is made against the store as it is at that log position -- as etcd does.
Two things happen here, before proposing, and nowhere else:
  * passwords are bcrypt-hashed (UserAdd, UserChangePassword) on a worker
    thread: the log carries only the hash;
  * Authenticate checks the password (etcd's CheckPassword, bcrypt on a
    worker), draws the simple token's random prefix and proposes; if the
    auth store changed while it waited, it checks again (etcd's loop).
Reads (UserGet/List, RoleGet/List) wait for a read barrier and answer from
the local store with etcd's apply-time rules (an admin, or the user itself /
a holder of the role).

``auth_info(server, context)`` is etcd's AuthInfoFromCtx for every service:
the user named by the ``token`` metadata clientv3 sends (or the TLS common
name under --client-cert-auth), after waiting, for a simple token, until
this member has applied the entry that made it.
"""
from __future__ import annotations

import asyncio

import grpc

from engine.auth import errors as auth_errors
from engine.auth.password import DEFAULT_COST, check_password, hash_password
from engine.auth.store import AuthStore
from engine.auth.tokens import AuthInfo
from engine.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from engine.server.kvserver import KVServer

from . import errors
from .gate import check, request_timeout

IR = internal_pb2.InternalRequest
TOKEN_KEYS = ("token", "authorization")  # rpctypes.TokenFieldNameGRPC, ...Swagger
# Authenticate retries when the store changed under its password check; a
# bound keeps a flood of auth changes from holding one client for ever.
_AUTHENTICATE_TRIES = 16


async def _submit(server, context, req: IR):
    # Imported here: submit.py uses auth_info/stamp from this module.
    from .submit import submit
    return await submit(server, context, req)


def auth_store(server) -> AuthStore | None:
    return getattr(server, "auth_store", None)


def _metadata(context) -> dict[str, str]:
    md: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        md.setdefault(key, value)
    return md


async def auth_info(server: KVServer, context: grpc.aio.ServicerContext) -> AuthInfo | None:
    """etcd's AuthInfoFromCtx: who the request is from, or None (no token,
    and no certificate name to use). Raises InvalidAuthToken for a token
    that names nobody (unknown, expired, forged, from before a restart)."""
    store = auth_store(server)
    if store is None:
        return None
    md = _metadata(context)
    token = next((md[k] for k in TOKEN_KEYS if k in md), None)
    if token is not None:
        index = store.tokens.index_of(token)
        if index is not None and index > server.applied_index:
            # A simple token made by an entry this member has not applied
            # yet (etcd's index waiter): wait for it, bounded by the request.
            wait = getattr(server, "wait_applied", None)
            if wait is not None:
                try:
                    await wait(index, request_timeout(server, context))
                except Exception:
                    raise auth_errors.InvalidAuthToken() from None
        return store.auth_info_from_token(token)
    if getattr(server.config, "client_cert_auth", False):
        return _info_from_tls(store, context, md)
    return None


def _info_from_tls(store: AuthStore, context, md: dict[str, str]) -> AuthInfo | None:
    """etcd's AuthInfoFromTLS: the verified client certificate's common name
    is the user (never for a request the gRPC gateway proxied)."""
    if "grpcgateway-accept" in md:
        return None
    try:
        names = (context.auth_context() or {}).get("x509_common_name") or []
    except Exception:
        return None
    if not names:
        return None
    cn = names[0].decode(errors="replace") if isinstance(names[0], bytes) else str(names[0])
    return AuthInfo(cn, store.revision)


async def require_root(server: KVServer, context: grpc.aio.ServicerContext) -> None:
    """Raise (an AuthError with etcd's code) unless the caller has the root
    role, while auth is on: for our own services (Inspect, Fault)."""
    store = auth_store(server)
    if store is not None and store.enabled:
        store.is_admin_permitted(await auth_info(server, context))


def stamp(req: IR, info: AuthInfo | None) -> IR:
    """Put the caller's user and auth revision into a request to propose."""
    if info is not None:
        req.username = info.username
        req.auth_revision = info.revision
    return req


async def _abort(context, exc: BaseException) -> None:
    if isinstance(exc, auth_errors.AuthError):
        await context.abort(*auth_errors.status_of(exc))
    await errors.abort(context, exc)


class AuthServicer(rpc_pb2_grpc.AuthServicer):
    def __init__(self, server: KVServer) -> None:
        self.server = server

    # -- plumbing ---------------------------------------------------------------

    async def _run(self, context, work):
        """check -> work() (a coroutine giving the response) -> header."""
        server = self.server
        try:
            check(server, context)
            resp = await work()
        except Exception as e:
            await _abort(context, e)
        server.fill_header(resp.header)
        return resp

    async def _propose(self, context, req: IR):
        info = await auth_info(self.server, context)
        return await _submit(self.server, context, stamp(req, info))

    def _cost(self) -> int:
        return getattr(self.server.config, "bcrypt_cost", 0) or DEFAULT_COST

    # -- enable / disable / authenticate -----------------------------------------

    async def AuthEnable(self, request, context):
        return await self._write(context, IR(auth_enable=request))

    async def AuthDisable(self, request, context):
        return await self._write(context, IR(auth_disable=request))

    async def Authenticate(self, request, context):
        store = self.server.auth_store

        async def work():
            server = self.server
            await server.read_barrier(request_timeout(server, context))
            for _ in range(_AUTHENTICATE_TRIES):
                revision, hashed = store.password_to_check(request.name)
                ok = await asyncio.to_thread(check_password, hashed, request.password)
                if not ok:
                    raise auth_errors.AuthFailed()
                req = IR(authenticate=internal_pb2.InternalAuthenticateRequest(
                    name=request.name, simple_token=store.gen_token_prefix()))
                resp = await _submit(server, context, req)
                if revision == store.revision:
                    return resp
                # The store changed between the check and the apply (a
                # password change, say): check again, as etcd does.
            raise auth_errors.AuthOldRevision()

        return await self._run(context, work)

    # -- users ------------------------------------------------------------------

    async def UserAdd(self, request, context):
        async def work():
            req = rpc_pb2.AuthUserAddRequest(name=request.name)
            if request.HasField("options"):
                req.options.CopyFrom(request.options)
            if not request.options.no_password:
                req.password = await asyncio.to_thread(hash_password, request.password, self._cost())
            return await self._propose(context, IR(auth_user_add=req))

        return await self._run(context, work)

    async def UserChangePassword(self, request, context):
        async def work():
            hashed = await asyncio.to_thread(hash_password, request.password, self._cost())
            req = rpc_pb2.AuthUserChangePasswordRequest(name=request.name, password=hashed)
            return await self._propose(context, IR(auth_user_change_password=req))

        return await self._run(context, work)

    async def UserDelete(self, request, context):
        return await self._write(context, IR(auth_user_delete=request))

    async def UserGrantRole(self, request, context):
        return await self._write(context, IR(auth_user_grant_role=request))

    async def UserRevokeRole(self, request, context):
        return await self._write(context, IR(auth_user_revoke_role=request))

    async def UserGet(self, request, context):
        # etcd's authApplierV3.UserGet: a user may also read itself.
        return await self._admin_read(context, lambda store: store.user_get(request.name),
                                      also=lambda store, info: info.username == request.name)

    async def UserList(self, request, context):
        return await self._admin_read(context, lambda store: store.user_list())

    # -- roles ------------------------------------------------------------------

    async def RoleAdd(self, request, context):
        return await self._write(context, IR(auth_role_add=request))

    async def RoleDelete(self, request, context):
        return await self._write(context, IR(auth_role_delete=request))

    async def RoleGrantPermission(self, request, context):
        return await self._write(context, IR(auth_role_grant_permission=request))

    async def RoleRevokePermission(self, request, context):
        return await self._write(context, IR(auth_role_revoke_permission=request))

    async def RoleGet(self, request, context):
        # etcd's authApplierV3.RoleGet: a holder of the role may also read it.
        return await self._admin_read(context, lambda store: store.role_get(request.role),
                                      also=lambda store, info: store.has_role(info.username, request.role))

    async def RoleList(self, request, context):
        return await self._admin_read(context, lambda store: store.role_list())

    # -- shared -----------------------------------------------------------------

    async def _write(self, context, req: IR):
        return await self._run(context, lambda: self._propose(context, req))

    async def _admin_read(self, context, answer, also=None):
        """A read for admins only (etcd's needAdminPermission), or also for
        the callers ``also(store, info)`` admits; answered from the local
        store after a read barrier."""
        store = self.server.auth_store

        async def work():
            await self.server.read_barrier(request_timeout(self.server, context))
            info = await auth_info(self.server, context)
            try:
                store.is_admin_permitted(info)
            except auth_errors.AuthError:
                if also is None or info is None or not also(store, info):
                    raise
            return answer(store)

        return await self._run(context, work)
