"""Host mode with auth (`raftui --auth`): the hosted cluster runs with
etcd's auth enabled and a root user whose password the operator gave.

    auth = ClientAuth("root", password)          # asked for with getpass, never echoed
    note = enable_root_auth(host.endpoints, auth)  # before the console opens

On a new cluster this is what an operator types with etcdctl:

    etcdctl user add root            (the password given)
    etcdctl user grant-role root root
    etcdctl auth enable

On a resumed cluster whose auth is on already, it only checks that the
password opens it. A root user that exists while auth is off gets the
password given (the operator asked for auth with that password; enabling
it with an unknown one would lock them out). Nothing is written to disk:
the password goes to the members inside the requests, where raftnode
hashes it (bcrypt) before it enters the log, as etcd does.
"""
from __future__ import annotations

import time

import grpc

from engine.proto import rpc_pb2, rpc_pb2_grpc
from raftui.source.connection import (CHANNEL_OPTIONS, NOT_ENABLED, AuthFailed, ClientAuth,
                                      TlsFiles)

from .base import HostError

# Per call; the members were just started and may still be electing.
CALL_TIMEOUT = 5.0
RETRY_EVERY = 0.2
ROOT = "root"


def _retryable(e: grpc.RpcError) -> bool:
    return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.UNKNOWN)


def enable_root_auth(endpoints: list[str], auth: ClientAuth, tls: TlsFiles | None = None,
                     timeout: float = 30.0) -> str:
    """Make sure the cluster at `endpoints` runs with auth on and `auth`
    (the root user) opens it; returns a line for the operator. Raises
    HostError (one line) when it cannot."""
    if auth.user != ROOT:
        raise HostError("--auth creates and uses the root user")
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for ep in endpoints:
            channel = (grpc.secure_channel(ep, tls.credentials(), options=CHANNEL_OPTIONS)
                       if tls is not None else grpc.insecure_channel(ep, options=CHANNEL_OPTIONS))
            try:
                return _enable(rpc_pb2_grpc.AuthStub(channel), auth)
            except AuthFailed as e:
                raise HostError(f"auth is on, but the root password given does not open it ({e})") from None
            except grpc.RpcError as e:
                if not _retryable(e):
                    raise HostError(f"cannot enable auth: {e.details()}") from None
                last = f"{ep}: {e.details()}"
            finally:
                channel.close()
        time.sleep(RETRY_EVERY)   # the members are still starting: poll again
    raise HostError(f"cannot enable auth within {timeout:.0f}s ({last})")


def _enable(stub: rpc_pb2_grpc.AuthStub, auth: ClientAuth) -> str:
    try:
        resp = stub.Authenticate(auth.request(), timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        if e.details() != NOT_ENABLED:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise AuthFailed(e.details()) from None
            raise
    else:
        auth.token, auth.enabled = resp.token, True
        return "auth is on (root)"
    # Auth is off: root with the password given, the root role, auth on.
    request = auth.request()
    created = True
    try:
        stub.UserAdd(rpc_pb2.AuthUserAddRequest(name=ROOT, password=request.password), timeout=CALL_TIMEOUT)
    except grpc.RpcError as e:
        if e.details() != "etcdserver: user name already exists":
            raise
        created = False
        stub.UserChangePassword(rpc_pb2.AuthUserChangePasswordRequest(name=ROOT, password=request.password),
                                timeout=CALL_TIMEOUT)
    del request
    stub.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user=ROOT, role=ROOT), timeout=CALL_TIMEOUT)
    stub.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=CALL_TIMEOUT)
    resp = stub.Authenticate(auth.request(), timeout=CALL_TIMEOUT)
    auth.token, auth.enabled = resp.token, True
    return ("auth enabled: root created" if created
            else "auth enabled: the existing root user has the password given")
