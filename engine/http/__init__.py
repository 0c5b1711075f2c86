"""A member's HTTP surface, beside the gRPC API (engine/api): etcd's /health,
/version and /metrics (Prometheus text, through prometheus_client) and the
v3 JSON gateway (/v3/kv/...), on etcd's --listen-metrics-urls and 3.5's
--listen-client-http-urls. It reaches the member only through KVServer.

    server.py        a bounded HTTP/1.1 server on asyncio streams
    service.py       HttpService: listeners, routes, TLS, CORS
    health.py        /health and /version
    metrics.py       the registry and etcd's server, mvcc and disk metrics
    grpc_metrics.py  grpc_server_* counters: a grpc.aio server interceptor
    gateway.py       the v3 JSON gateway's KV paths, answered by engine/api's KVServicer
"""
from .service import HttpService

__all__ = ["HttpService"]
