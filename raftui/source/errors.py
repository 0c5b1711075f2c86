"""Turn gRPC failures into the one-line messages the console shows.

etcd's own errors already carry etcd's text (`etcdserver: ...`), which is what
the operator should read, unchanged. Transport failures get etcdctl's wording
where it has one ("context deadline exceeded").
"""
from __future__ import annotations

import grpc


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        code, details = exc.code(), (exc.details() or "").strip()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return "context deadline exceeded"
        if code == grpc.StatusCode.UNAVAILABLE and not details.startswith("etcdserver:"):
            return f"unavailable: {_short_transport(details)}"
        return details or code.name.lower()
    return str(exc) or type(exc).__name__


def is_unimplemented(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.UNIMPLEMENTED


def no_inspect(exc: BaseException) -> bool:
    """Inspect is not ours to read: the member has none (etcd), or it
    answers root only (auth on, the console logged in as another user)."""
    return is_unimplemented(exc) or (isinstance(exc, grpc.aio.AioRpcError)
                                     and exc.code() == grpc.StatusCode.PERMISSION_DENIED)


def is_transport_failure(exc: BaseException) -> bool:
    """The member did not answer (down, paused, cut off) -- as opposed to answering with an error."""
    if not isinstance(exc, grpc.aio.AioRpcError):
        return False
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    return exc.code() == grpc.StatusCode.UNAVAILABLE and not (exc.details() or "").startswith("etcdserver:")


def _short_transport(details: str) -> str:
    lowered = details.lower()
    for needle, text in (
        ("connection refused", "connection refused"),
        ("connect failed", "connection refused"),
        ("timed out", "timed out"),
        ("deadline", "timed out"),
        ("reset", "connection reset"),
    ):
        if needle in lowered:
            return text
    return details.splitlines()[0][:80] if details else "no connection"
