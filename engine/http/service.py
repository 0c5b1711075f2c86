"""HttpService: a member's HTTP surface, on the listeners etcd has for it.

    http = HttpService(KVServer(node))
    grpc server made with interceptors=[http.grpc_interceptor]
    await http.listen(cfg.listen_metrics_urls, metrics_only=True)       # /metrics /health
    await http.listen(cfg.listen_client_http_urls, metrics_only=False)  # + /version, /v3/... gateway
    ...
    await http.stop()

A metrics listener (etcd's --listen-metrics-urls) answers /metrics and
/health only, without CORS headers; a client listener (etcd 3.5's
--listen-client-http-urls, and etcd 3.4's client URL) answers everything
with etcd's default CORS headers (`--cors=*`) and OPTIONS preflights. An
https URL is served with the member's client TLS files (--cert-file,
--key-file; a --trusted-ca-file or --client-cert-auth requires and verifies
client certificates, as etcd does; a --client-crl-file refuses a revoked
client's connection after the handshake, as etcd's listener does). The member
is reached only through its KVServer.
"""
from __future__ import annotations

import logging
import ssl
import urllib.parse
from typing import Iterable

from engine.server.kvserver import KVServer
from engine.transport import certcheck

from . import health
from .metrics import CONTENT_TYPE, Metrics
from .server import HttpServer, Request, Response

log = logging.getLogger("engine.http")

METRICS_MAX_BODY = 64 * 1024
CORS_HEADERS = (
    ("Access-Control-Allow-Headers", "accept, content-type, authorization"),
    ("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE"),
    ("Access-Control-Allow-Origin", "*"),
)


def not_found() -> Response:
    return Response.text(404, "404 page not found")


class HttpService:
    def __init__(self, kvs: KVServer) -> None:
        self.kvs = kvs
        self.metrics = Metrics(kvs)
        self.metrics.disk.attach()
        self.metrics.peer.attach(kvs)   # the transport's ping/pong round trips, once KVServer offers them
        self._servers: list[HttpServer] = []
        self._gateway = None
        self.bound: list[str] = []   # the URLs listened on, with their real ports

    @property
    def grpc_interceptor(self):
        """A grpc.aio.ServerInterceptor counting the client server's RPCs
        (for a server whose services are registered elsewhere)."""
        return self.metrics.grpc.interceptor

    def instrumented(self, server):
        """`server` to register the client services on, each method counted
        (grpc_server_* metrics) without an interceptor's per-call cost."""
        return self.metrics.grpc.instrumented(server)

    # -- listeners ----------------------------------------------------------------------

    async def listen(self, urls: Iterable[str], *, metrics_only: bool) -> list[str]:
        """Serve on each http(s)://host:port URL (port 0: any free one).
        Returns the URLs bound. Raises OSError naming the URL that failed."""
        urls = list(urls)
        if not urls:
            return []
        if metrics_only:
            handler, max_body = self._metrics_handler, METRICS_MAX_BODY
        else:
            cfg = self.kvs.config
            handler, max_body = self._client_handler, 2 * cfg.max_request_bytes + (1 << 20)
        # etcd's TLS listeners check --client-crl-file on every connection,
        # HTTP ones included (its metrics URLs take the client TLS files too).
        rules = certcheck.listener_rules(self.kvs.config, "client") \
            if any(u.startswith("https:") for u in urls) else None
        server = HttpServer(handler, max_body=max_body,
                            refuse_peer=rules.refusal_der if rules is not None else None)
        self._servers.append(server)
        bound = []
        for url in urls:
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname or "127.0.0.1"
            if host == "localhost":
                host = "127.0.0.1"
            tls = self._ssl_context() if parts.scheme == "https" else None
            try:
                port = await server.listen(host, parts.port or 0, ssl=tls)
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on {url}: {e.strerror or e}") from None
            netloc = f"[{host}]" if ":" in host else host
            bound.append(f"{parts.scheme}://{netloc}:{port}")
        self.bound += bound
        log.info("serving HTTP (%s) on %s", "metrics, health" if metrics_only else "all", ",".join(bound))
        return bound

    def _ssl_context(self) -> ssl.SSLContext:
        cfg = self.kvs.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        if cfg.trusted_ca_file:
            ctx.load_verify_locations(cfg.trusted_ca_file)
        if cfg.trusted_ca_file or cfg.client_cert_auth:
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def stop(self) -> None:
        for s in self._servers:
            await s.stop()
        self._servers.clear()
        self.metrics.disk.detach()
        self.metrics.peer.detach()

    # -- routes -------------------------------------------------------------------------

    async def _metrics_handler(self, req: Request) -> Response:
        path = req.path
        if path == "/metrics":
            return await self._metrics()
        if path == "/health":
            return await health.health(self.kvs, self.metrics.server, req)
        return not_found()

    async def _client_handler(self, req: Request) -> Response:
        resp = await self._route_client(req)
        resp.headers = [*CORS_HEADERS, *resp.headers]
        return resp

    async def _route_client(self, req: Request) -> Response:
        if req.method == "OPTIONS":   # a CORS preflight: the headers are the answer
            return Response(200, b"")
        path = req.path
        if path == "/metrics":
            return await self._metrics()
        if path == "/health":
            return await health.health(self.kvs, self.metrics.server, req)
        if path == "/version":
            return health.version(req)
        if path.startswith(("/v3/", "/v3beta/")):
            return await self._gateway_handle(req)
        return not_found()

    async def _metrics(self) -> Response:
        return Response(200, await self.metrics.render(), [("Content-Type", CONTENT_TYPE)])

    async def _gateway_handle(self, req: Request) -> Response:
        try:
            from .gateway import Gateway
        except ImportError:
            return not_found()
        if self._gateway is None:
            self._gateway = Gateway(self.kvs)
        return await self._gateway.handle(req)
