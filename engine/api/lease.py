"""etcd's Lease service.

Grant and Revoke go through the log (every member's lessor agrees).
KeepAlive and TimeToLive need the lease's clock, which runs only on the
leader: a follower forwards them to the leader (etcd's LeaseRenew and
LeaseTimeToLive in etcdserver/v3_server.go), within the request timeout.
"""
from __future__ import annotations

import time

import grpc

from engine.mvcc import errors as mvcc_errors
from engine.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from engine.server import errors as server_errors
from engine.server.kvserver import KVServer

from .errors import abort
from .forward import LeaderLink
from .gate import check, checked, request_timeout
from .submit import submit

IR = internal_pb2.InternalRequest
_I63 = (1 << 63) - 1


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, server: KVServer, link: LeaderLink) -> None:
        self.server = server
        self.link = link

    async def LeaseGrant(self, request: rpc_pb2.LeaseGrantRequest, context):
        server = self.server
        try:
            check(server, context)
            # etcd picks the id here, on the member the client asked, so
            # the log carries it and every member grants the same lease.
            while request.ID == 0:
                request.ID = server.next_request_id() & _I63
            resp = await submit(server, context, IR(lease_grant=request), admit=True)
        except Exception as e:
            await abort(context, e)
        server.fill_header(resp.header)
        return resp

    async def LeaseRevoke(self, request: rpc_pb2.LeaseRevokeRequest, context):
        try:
            check(self.server, context)
            resp = await submit(self.server, context, IR(lease_revoke=request))
        except Exception as e:
            await abort(context, e)
        self.server.fill_header(resp.header)
        return resp

    async def LeaseKeepAlive(self, request_iterator, context):
        server = self.server
        await checked(server, context)
        async for req in request_iterator:
            resp = rpc_pb2.LeaseKeepAliveResponse(ID=req.ID)
            server.fill_header(resp.header)
            try:
                resp.TTL = await self._renew(req.ID, context)
            except Exception as e:
                await abort(context, e)
            await context.write(resp)

    async def _renew(self, lease_id: int, context) -> int:
        """The lease's TTL after renewing it; 0 if it does not exist (etcd
        answers an unknown lease with TTL 0, not an error)."""
        server = self.server
        timeout = request_timeout(server, context)
        deadline = time.monotonic() + timeout
        if await self._lessor_is_primary(timeout):
            # etcd #16822: a leader whose loop is stuck (a slow fsync) may
            # have been deposed without knowing; renewing here would tell
            # the client "alive" while the new leader revokes the lease.
            # Unconfirmed: etcd's lease.ErrNotPrimary (UNKNOWN "not a
            # primary lessor"), so the client goes to another member.
            if not await server.ensure_leadership(max(0.0, deadline - time.monotonic())):
                raise mvcc_errors.LeaseNotPrimary()
            try:
                return server.lessor.keepalive(lease_id, time.monotonic())
            except mvcc_errors.LeaseNotFound:
                return 0
            except mvcc_errors.LeaseNotPrimary:
                pass  # just lost leadership: ask the new leader
        leader = await self.link.wait_leader(timeout)
        stub = rpc_pb2_grpc.LeaseStub(self.link.channel(leader))
        call = stub.LeaseKeepAlive(timeout=max(0.0, deadline - time.monotonic()))
        try:
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            got = await call.read()
        finally:
            call.cancel()
        if got is grpc.aio.EOF:
            raise server_errors.Timeout()
        return got.TTL

    async def _lessor_is_primary(self, timeout: float) -> bool:
        """True when this member's lessor holds the leases' clock. A new
        leader's lessor is promoted only once it has applied the first entry
        of its own term (etcd): in the few ms before that, wait for it here
        rather than forward the call to ourselves."""
        server = self.server
        if not server.is_leader:
            return False
        if server.lessor.primary:
            return True
        return await server.wait_lessor_primary(timeout)

    async def LeaseTimeToLive(self, request: rpc_pb2.LeaseTimeToLiveRequest, context):
        server = self.server
        try:
            check(server, context)
            resp = await self._time_to_live(request, context)
        except mvcc_errors.LeaseNotFound:
            # etcd: an unknown lease is TTL -1, not an error.
            resp = rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1)
        except Exception as e:
            await abort(context, e)
        resp.ClearField("header")
        server.fill_header(resp.header)
        return resp

    async def _time_to_live(self, request, context) -> rpc_pb2.LeaseTimeToLiveResponse:
        server = self.server
        timeout = request_timeout(server, context)
        deadline = time.monotonic() + timeout
        if await self._lessor_is_primary(timeout):
            try:
                remaining, granted, keys = server.lessor.time_to_live(
                    request.ID, time.monotonic(), keys=request.keys)
                return rpc_pb2.LeaseTimeToLiveResponse(ID=request.ID, TTL=remaining,
                                                       grantedTTL=granted, keys=keys)
            except mvcc_errors.LeaseNotPrimary:
                pass  # just lost leadership: ask the new leader
        leader = await self.link.wait_leader(timeout)
        stub = rpc_pb2_grpc.LeaseStub(self.link.channel(leader))
        return await stub.LeaseTimeToLive(request, timeout=max(0.0, deadline - time.monotonic()))

    async def LeaseLeases(self, request: rpc_pb2.LeaseLeasesRequest, context):
        server = self.server
        await checked(server, context)
        resp = rpc_pb2.LeaseLeasesResponse(
            leases=[rpc_pb2.LeaseStatus(ID=i) for i in server.lessor.leases()])
        server.fill_header(resp.header)
        return resp
