"""What every client RPC checks before it runs: etcd's gRPC interceptors.

etcd (v3rpc/interceptor.go) refuses, before the handler runs:
  * on a learner, every unary RPC but Status and a serializable Range, and
    every stream, with "etcdserver: rpc not supported for learner";
  * when the client sent `hasleader: true` metadata (etcdctl does on watch
    streams) and the member knows no leader, with "etcdserver: no leader".
grpc.aio servers take interceptors only when they are made, and the server
is made by engine/cli before the services are added, so each handler calls
``check`` itself.

Also here: the deadline a handler gives the member (etcd's request timeout,
bounded by the client's own deadline). Handlers reach the member only
through engine.server.kvserver.KVServer.
"""
from __future__ import annotations

import grpc

from engine.server import errors as server_errors
from engine.server.kvserver import KVServer

from .errors import abort

REQUIRE_LEADER_KEY = "hasleader"


def has_require_leader(context: grpc.aio.ServicerContext) -> bool:
    for key, value in context.invocation_metadata() or ():
        if key == REQUIRE_LEADER_KEY and value == "true":
            return True
    return False


def check(server: KVServer, context: grpc.aio.ServicerContext, *, learner_ok: bool = False) -> None:
    """Raise the error etcd's interceptors would answer with, if any."""
    if server.is_learner and not learner_ok:
        raise server_errors.NotSupportedForLearner()
    if not server.leader_id and has_require_leader(context):
        raise server_errors.NoLeader()


async def checked(server: KVServer, context: grpc.aio.ServicerContext, *, learner_ok: bool = False) -> None:
    """check(), ending the RPC with the refusal's status if there is one
    (for handlers with nothing else to translate before they answer)."""
    try:
        check(server, context, learner_ok=learner_ok)
    except Exception as e:
        await abort(context, e)


# Seconds past the client's deadline the server keeps waiting (see request_timeout).
CLIENT_DEADLINE_SLACK = 0.5


def request_timeout(server: KVServer, context: grpc.aio.ServicerContext | None = None) -> float:
    """etcd's ReqTimeout (5 s + 2 election timeouts), or a little past the
    client's own deadline if that is shorter. Waiting past the deadline
    answers nobody, but stopping exactly at it would race the client's
    timer: etcd never does, so its clients see their own "context deadline
    exceeded", not a server error, when a minority member cannot commit."""
    timeout = server.request_timeout()
    if context is not None:
        left = context.time_remaining()
        if left is not None:
            timeout = max(0.0, min(timeout, left + CLIENT_DEADLINE_SLACK))
    return timeout
