"""gRPC channels and stubs to each endpoint, with fast reconnects.

grpc's default reconnect backoff grows to two minutes; a member that comes
back must be seen within about a second, so the backoff is capped at 1 s.
Channels belong to the event loop that created them: make a `Connections`
inside the running loop (the app's `on_mount`, a test's coroutine).
"""
from __future__ import annotations

import dataclasses
import pathlib

import grpc
import grpc.aio

from engine.proto import rpc_pb2_grpc

CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Snapshots stream 32 KiB chunks, but Range answers over a large key space
    # can be big; etcd itself allows up to 2 MiB requests and larger answers.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return pathlib.Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.cacert),
            private_key=read(self.key),
            certificate_chain=read(self.cert),
        )


def parse_endpoints(text: str) -> list[str]:
    """"h1:p1,http://h2:p2" -> ["h1:p1", "h2:p2"] (etcdctl accepts both forms)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        for scheme in ("http://", "https://", "unix://"):
            if part.startswith(scheme):
                part = part[len(scheme):]
        if part:
            out.append(part.rstrip("/"))
    return out


class Stubs:
    """The etcd v3 stubs (and ours, when asked) for one endpoint."""

    def __init__(self, endpoint: str, tls: TlsFiles | None) -> None:
        self.endpoint = endpoint
        if tls is not None:
            self.channel = grpc.aio.secure_channel(endpoint, tls.credentials(), options=CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self._inspect = None
        self._fault = None

    @property
    def inspect(self):
        if self._inspect is None:
            from engine.proto import inspect_pb2_grpc
            self._inspect = inspect_pb2_grpc.InspectStub(self.channel)
        return self._inspect

    @property
    def fault(self):
        """The Fault stub, or None while engine/proto/fault.proto is not generated yet."""
        if self._fault is None:
            try:
                from engine.proto import fault_pb2_grpc  # written by the fault-injection work
            except ImportError:
                return None
            self._fault = fault_pb2_grpc.FaultStub(self.channel)
        return self._fault

    async def close(self) -> None:
        await self.channel.close(grace=None)


class Connections:
    """One `Stubs` per endpoint, created lazily, closed together."""

    def __init__(self, endpoints: list[str], tls: TlsFiles | None = None) -> None:
        self.tls = tls
        self._stubs: dict[str, Stubs] = {}
        self.endpoints = list(endpoints)

    def get(self, endpoint: str) -> Stubs:
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            stubs = self._stubs[endpoint] = Stubs(endpoint, self.tls)
        return stubs

    def add(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            self.endpoints.append(endpoint)

    async def close(self) -> None:
        stubs, self._stubs = list(self._stubs.values()), {}
        for s in stubs:
            await s.close()
