"""Putting a request through the log, the way etcd's server does before
raft sees it (etcdserver/v3_server.go processInternalRaftRequestOnce and
v3rpc/quota.go): the quota check, the size check, then propose and wait."""
from __future__ import annotations

import logging

import grpc

from engine.mvcc import errors as mvcc_errors
from engine.proto import internal_pb2
from engine.server import errors as server_errors
from engine.server.kvserver import KVServer

from .auth import auth_info, stamp
from .gate import request_timeout

log = logging.getLogger("engine.api")
InternalRequest = internal_pb2.InternalRequest


async def submit(server: KVServer, context: grpc.aio.ServicerContext | None, req: InternalRequest, *,
                 admit: bool = False):
    """Propose req and return the applied response (raises its error).

    admit: run the quota check first (Put, Txn, LeaseGrant, as etcd does).
    When the quota is what is exceeded, the NOSPACE alarm is raised through
    the log before answering "database space exceeded", so every member
    refuses growing writes from then on.
    """
    timeout = request_timeout(server, context)
    if admit:
        try:
            server.admit(req)
        except mvcc_errors.NoSpace as e:
            alarm = getattr(e, "alarm_request", None)
            if alarm is not None:
                try:
                    await server.propose(alarm, timeout)
                except Exception as ae:  # etcd ignores the alarm's own outcome too
                    log.warning("raising the NOSPACE alarm failed: %s", ae)
            raise
    # Who asks, at which auth revision (etcd processInternalRaftRequestOnce):
    # every member re-checks the request against its auth store at apply.
    if not req.username:
        stamp(req, await auth_info(server, context))
    if not req.id:
        req.id = server.next_request_id()
    if req.ByteSize() > server.config.max_request_bytes:
        raise server_errors.RequestTooLarge()
    return await server.propose(req, timeout)
