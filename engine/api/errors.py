"""The one table from internal conditions to etcd's gRPC status.

Every error a handler can meet is an exception class carrying etcd's exact
text (``etcd_message``): the MVCC layer's (engine/mvcc/errors.py), the
server's (engine/server/errors.py) and the request checks made here, in the
API layer (the ones etcd's v3rpc makes before calling the server). clientv3
turns a status back into a typed error by that text, so the text goes out
verbatim; the code comes from ``GRPC_CODES`` below, which follows
etcdserver/api/v3rpc/rpctypes/error.go at v3.4.23.

Anything not in the table goes out as UNKNOWN with ``str(e)`` -- etcd's
``togRPCError`` does the same -- and never with a traceback.
"""
from __future__ import annotations

import asyncio
import logging

import grpc

from engine.auth import errors as auth_errors
from engine.mvcc import errors as mvcc
from engine.server import errors as server

log = logging.getLogger("engine.api")
Code = grpc.StatusCode


class APIError(mvcc.MVCCError):
    """A request refused by the API layer's own checks, before any call."""


class EmptyKey(APIError):
    etcd_message = "etcdserver: key is not provided"


class EmptyRequestOp(APIError):
    # etcd answers an empty RequestOp with its "key not found" error.
    etcd_message = "etcdserver: key not found"


class ValueProvided(APIError):
    etcd_message = "etcdserver: value is provided"


class LeaseProvided(APIError):
    etcd_message = "etcdserver: lease is provided"


class InvalidSortOption(APIError):
    # etcd 3.5's rpctypes.ErrGRPCInvalidSortOption (3.4.23 crashes instead).
    etcd_message = "etcdserver: invalid sort option"


class TooManyOps(APIError):
    etcd_message = "etcdserver: too many operations in txn request"


class DuplicateKey(APIError):
    etcd_message = "etcdserver: duplicate key given in txn request"


class WatchCanceled(APIError):
    etcd_message = "etcdserver: watch canceled"


GRPC_CODES: dict[type[Exception], grpc.StatusCode] = {
    # -- request checks (v3rpc/key.go and friends)
    EmptyKey: Code.INVALID_ARGUMENT,
    EmptyRequestOp: Code.INVALID_ARGUMENT,
    ValueProvided: Code.INVALID_ARGUMENT,
    LeaseProvided: Code.INVALID_ARGUMENT,
    TooManyOps: Code.INVALID_ARGUMENT,
    InvalidSortOption: Code.INVALID_ARGUMENT,
    DuplicateKey: Code.INVALID_ARGUMENT,
    WatchCanceled: Code.CANCELLED,
    # -- the store (mvcc, lease, quota, alarms)
    mvcc.Compacted: Code.OUT_OF_RANGE,
    mvcc.FutureRevision: Code.OUT_OF_RANGE,
    mvcc.KeyNotFound: Code.INVALID_ARGUMENT,
    mvcc.LeaseNotFound: Code.NOT_FOUND,
    mvcc.LeaseExists: Code.FAILED_PRECONDITION,
    mvcc.LeaseTTLTooLarge: Code.OUT_OF_RANGE,
    mvcc.NoSpace: Code.RESOURCE_EXHAUSTED,
    mvcc.Corrupt: Code.DATA_LOSS,
    mvcc.Unsupported: Code.UNIMPLEMENTED,
    mvcc.LeaseNotPrimary: Code.UNKNOWN,  # never meant to reach a client (we forward)
    # -- the server (raft, membership, leadership)
    server.NoLeader: Code.UNAVAILABLE,
    server.NotLeader: Code.FAILED_PRECONDITION,
    server.LeaderChanged: Code.UNAVAILABLE,
    server.Stopped: Code.UNAVAILABLE,
    server.Timeout: Code.UNAVAILABLE,
    # Time ran out before the request was proposed: etcd answers with its
    # context's error (code UNKNOWN), and the request was never proposed.
    server.DeadlineExceeded: Code.UNKNOWN,
    server.TimeoutDueToLeaderFail: Code.UNAVAILABLE,
    server.TimeoutWaitAppliedIndex: Code.UNAVAILABLE,
    server.TooManyRequests: Code.RESOURCE_EXHAUSTED,
    server.RequestTooLarge: Code.INVALID_ARGUMENT,
    server.MemberNotFound: Code.NOT_FOUND,
    server.MemberExists: Code.FAILED_PRECONDITION,
    server.PeerURLExists: Code.FAILED_PRECONDITION,
    server.NotEnoughStartedMembers: Code.FAILED_PRECONDITION,
    server.BadURLs: Code.INVALID_ARGUMENT,
    server.MemberNotLearner: Code.FAILED_PRECONDITION,
    server.LearnerNotReady: Code.FAILED_PRECONDITION,
    server.TooManyLearners: Code.FAILED_PRECONDITION,
    server.NotSupportedForLearner: Code.UNAVAILABLE,
    server.BadLeaderTransferee: Code.FAILED_PRECONDITION,
    server.Unhealthy: Code.UNAVAILABLE,
}
# Auth refusals (engine.auth.errors): etcd's codes, from any servicer.
GRPC_CODES.update(auth_errors.GRPC_CODES)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """(code, message) a client must see for exc."""
    if isinstance(exc, grpc.aio.AioRpcError):
        # A forwarded call failed: pass the leader's answer through as it is.
        return exc.code(), exc.details() or ""
    if isinstance(exc, asyncio.TimeoutError):
        return Code.UNAVAILABLE, server.Timeout.etcd_message
    for cls in type(exc).__mro__:
        code = GRPC_CODES.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code, exc.etcd_message  # type: ignore[attr-defined]
    return Code.UNKNOWN, str(exc) or type(exc).__name__


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the RPC with exc's status. Raises (grpc.aio's abort always does)."""
    code, message = status_of(exc)
    if code is Code.UNKNOWN:
        log.warning("unexpected error answered as UNKNOWN: %r", exc, exc_info=exc)
    await context.abort(code, message)
