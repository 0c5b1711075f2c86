"""etcd's Auth service, without auth.

raftnode has no users, roles or tokens yet (auth is out of scope for now).
Every RPC answers what etcd 3.4 answers for a cluster with auth disabled
and no users or roles -- which is exact as long as none can be created --
and the two that would create one (UserAdd, RoleAdd) say plainly that this
is not implemented (UNIMPLEMENTED), after etcd's own empty-name checks.
"""
from __future__ import annotations

from engine.proto import rpc_pb2, rpc_pb2_grpc

from . import errors
from .errors import abort
from .gate import check, fill_header


class AuthServicer(rpc_pb2_grpc.AuthServicer):
    def __init__(self, node) -> None:
        self.node = node

    async def _answer(self, context, resp=None, exc: Exception | None = None):
        try:
            check(self.node, context)
            if exc is not None:
                raise exc
        except Exception as e:
            await abort(context, e)
        fill_header(self.node, resp.header)
        return resp

    async def AuthEnable(self, request, context):
        # etcd refuses to enable auth before a root user exists.
        return await self._answer(context, exc=errors.RootUserNotExist())

    async def AuthDisable(self, request, context):
        return await self._answer(context, rpc_pb2.AuthDisableResponse())  # already off

    async def Authenticate(self, request, context):
        return await self._answer(context, exc=errors.AuthNotEnabled())

    async def UserAdd(self, request, context):
        if not request.name:
            return await self._answer(context, exc=errors.UserEmpty())
        return await self._answer(context, exc=errors.AuthUnsupported())

    async def RoleAdd(self, request, context):
        if not request.name:
            return await self._answer(context, exc=errors.RoleEmpty())
        return await self._answer(context, exc=errors.AuthUnsupported())

    async def UserList(self, request, context):
        return await self._answer(context, rpc_pb2.AuthUserListResponse())

    async def RoleList(self, request, context):
        return await self._answer(context, rpc_pb2.AuthRoleListResponse())

    async def UserGet(self, request, context):
        return await self._answer(context, exc=errors.UserNotFound())

    async def UserDelete(self, request, context):
        return await self._answer(context, exc=errors.UserNotFound())

    async def UserChangePassword(self, request, context):
        return await self._answer(context, exc=errors.UserNotFound())

    async def UserGrantRole(self, request, context):
        return await self._answer(context, exc=errors.UserNotFound())

    async def UserRevokeRole(self, request, context):
        return await self._answer(context, exc=errors.UserNotFound())

    async def RoleGet(self, request, context):
        return await self._answer(context, exc=errors.RoleNotFound())

    async def RoleDelete(self, request, context):
        return await self._answer(context, exc=errors.RoleNotFound())

    async def RoleGrantPermission(self, request, context):
        return await self._answer(context, exc=errors.RoleNotFound())

    async def RoleRevokePermission(self, request, context):
        return await self._answer(context, exc=errors.RoleNotFound())
