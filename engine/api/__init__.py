"""The client-facing gRPC services of a member: etcd's v3 API (KV, Watch,
Lease, Cluster, Maintenance, Auth) and our Inspect service.

Each servicer is thin: check (etcd's interceptors, gate.py) -> validate ->
call the member or read the local store through its one seam
(engine.server.kvserver.KVServer) -> translate errors through the one
table (errors.py) -> fill the response header.
"""
from __future__ import annotations

import grpc

from engine.proto import inspect_pb2_grpc, rpc_pb2_grpc
from engine.server.kvserver import KVServer

from .auth import AuthServicer
from .cluster import ClusterServicer
from .decode import guarded
from .forward import LeaderLink
from .inspect import InspectServicer
from .kv import KVServicer
from .lease import LeaseServicer
from .maintenance import MaintenanceServicer
from .stats import Counters
from .watch import WatchRegistry, WatchServicer


def add_services(server: grpc.aio.Server, member: object, *,
                 watch_progress_interval: float | None = None) -> KVServer:
    """Register every client service for a member on server (before it starts).
    `member` is the member's KVServer, or its Node to make one of: the
    services reach the member only through the KVServer, which is returned.

    watch_progress_interval: seconds between watch progress notifications
    (etcd: 10 min); default from $RAFTUI_WATCH_PROGRESS_NOTIFY_INTERVAL.
    """
    kvs = member if isinstance(member, KVServer) else KVServer(member)
    counters = Counters()
    registry = WatchRegistry()
    link = LeaderLink(kvs)
    # Undecodable requests get grpc-go's INTERNAL status, not Python's text.
    server = guarded(server)
    rpc_pb2_grpc.add_KVServicer_to_server(KVServicer(kvs, counters), server)
    rpc_pb2_grpc.add_WatchServicer_to_server(
        WatchServicer(kvs, counters, registry, watch_progress_interval), server)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseServicer(kvs, link), server)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(kvs, link), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceServicer(kvs), server)
    rpc_pb2_grpc.add_AuthServicer_to_server(AuthServicer(kvs), server)
    inspect_pb2_grpc.add_InspectServicer_to_server(InspectServicer(kvs, counters, registry), server)
    return kvs
