"""H2Server: the client port's gRPC server, a drop-in for the grpc.aio.Server
engine/cli/main.py builds (registration, interceptors, ports, start/stop),
on engine/transport/h2/connection.py. The contract is in the package
docstring (engine/transport/h2/__init__.py)."""
from __future__ import annotations

import asyncio
import logging
import socket

from .connection import CONN_BUFFER_CAP, OUR_CONN_WINDOW, OUR_STREAM_WINDOW, H2Connection
from .frames import (S_INITIAL_WINDOW_SIZE, S_MAX_CONCURRENT_STREAMS, S_MAX_HEADER_LIST_SIZE, settings_frame,
                     window_update_frame)

log = logging.getLogger(__name__)

DEFAULT_MAX_RECEIVE = 4 << 20                 # grpc's defaults
DEFAULT_MAX_SEND = 2**31 - 1
DEFAULT_MAX_HEADER_LIST = 16 << 10            # what grpc C-core enforces by default (hard limit)
DEFAULT_MAX_STREAMS = 1024
DEFAULT_MAX_CONNECTIONS = 4096
HANDSHAKE_TIMEOUT = 10.0                      # TLS handshake, then the HTTP/2 preface and SETTINGS


class H2Server:
    """options: grpc-style (key, value) pairs; unknown keys are ignored.
    Besides grpc's own (max message lengths, ping policy,
    grpc.max_concurrent_streams), "h2.max_connections" and
    "h2.handshake_timeout_s" set our own limits."""

    def __init__(self, options=(), interceptors=(), *, migration_thread_pool=None, handlers=None,
                 maximum_concurrent_rpcs=None, compression=None) -> None:
        opts = dict(options or ())
        self.loop = None
        self.max_receive = _limit(opts.get("grpc.max_receive_message_length"), DEFAULT_MAX_RECEIVE)
        self.max_send = _limit(opts.get("grpc.max_send_message_length"), DEFAULT_MAX_SEND)
        self.conn_buffer_cap = max(CONN_BUFFER_CAP, 8 * min(self.max_receive, 64 << 20))
        self.max_concurrent_streams = int(opts.get("grpc.max_concurrent_streams", DEFAULT_MAX_STREAMS))
        self.max_header_list = int(opts.get("grpc.max_metadata_size", DEFAULT_MAX_HEADER_LIST))
        self.max_ping_strikes = int(opts.get("grpc.http2.max_ping_strikes", 2))
        self.min_ping_interval = opts.get("grpc.http2.min_ping_interval_without_data_ms", 300000) / 1000.0
        self.permit_without_calls = bool(opts.get("grpc.keepalive_permit_without_calls", 0))
        self.max_connections = int(opts.get("h2.max_connections", DEFAULT_MAX_CONNECTIONS))
        self.handshake_timeout = float(opts.get("h2.handshake_timeout_s", HANDSHAKE_TIMEOUT))
        self.preface_bytes = (
            settings_frame([(S_MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
                            (S_INITIAL_WINDOW_SIZE, OUR_STREAM_WINDOW),
                            (S_MAX_HEADER_LIST_SIZE, self.max_header_list)])
            + window_update_frame(0, OUR_CONN_WINDOW - 65535))
        self._interceptors = list(interceptors or ())
        self.intercepted = None         # async (details) -> handler, when there are interceptors
        self._methods: dict[str, object] = {}    # "/pkg.Service/Method" -> grpc.RpcMethodHandler
        self._generic: list = []
        self._sockets: list[tuple[socket.socket, object]] = []   # (listening socket, ssl context or None)
        self._listeners: list = []
        self.connections: dict[H2Connection, None] = {}   # oldest first
        self.serving = False
        self._started = False
        self._stopping = None           # the stop() task, once stop was called
        self._terminated = asyncio.Event()
        if self._interceptors:
            self.intercepted = self._chain()
        if handlers:
            self.add_generic_rpc_handlers(handlers)

    # -- registration -------------------------------------------------------------------------
    def add_generic_rpc_handlers(self, generic_rpc_handlers) -> None:
        for h in generic_rpc_handlers:
            # grpc.method_handlers_generic_handler keeps a plain dict: take it
            # (one dict lookup per call instead of a .service() call).
            table = getattr(h, "_method_handlers", None)
            if isinstance(table, dict):
                for path, handler in table.items():
                    self._methods.setdefault(path, handler)
            else:
                self._generic.append(h)

    def add_registered_method_handlers(self, service_name: str, method_handlers) -> None:
        for method, handler in method_handlers.items():
            self._methods[f"/{service_name}/{method}"] = handler

    def lookup(self, path: str):
        """The registered handler for a method path, or None."""
        handler = self._methods.get(path)
        if handler is None and self._generic:
            from .call import HandlerCallDetails
            details = HandlerCallDetails(path, ())
            for g in self._generic:
                handler = g.service(details)
                if handler is not None:
                    break
        return handler

    def _chain(self):
        """Interceptors in order, the registry last (grpc.aio's order)."""
        async def registry(details):
            handler = self._methods.get(details.method)
            if handler is None:
                for g in self._generic:
                    handler = g.service(details)
                    if handler is not None:
                        break
            return handler

        cont = registry
        for interceptor in reversed(self._interceptors):
            cont = _link(interceptor, cont)
        return cont

    # -- ports ----------------------------------------------------------------------------------
    def add_insecure_port(self, address: str) -> int:
        return self._bind(address, None)

    def add_secure_port(self, address: str, server_credentials) -> int:
        """server_credentials: an ssl.SSLContext from server_ssl_context()."""
        return self._bind(address, server_credentials)

    def _bind(self, address: str, ssl_ctx) -> int:
        """Listen now (connections queue in the kernel until start()); the
        port, or 0 when the address cannot be bound."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        try:
            port = int(port)
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (ValueError, OSError):
            return 0
        bound = []
        for family, type_, proto, _, sockaddr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and bound:
                    sockaddr = (sockaddr[0], bound[0][0].getsockname()[1], *sockaddr[2:])
                sock.bind(sockaddr)
                sock.listen(1024)
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            bound.append((sock, ssl_ctx))
        if not bound:
            return 0
        self._sockets += bound
        if self._started:
            self.loop.create_task(self._listen(bound))
        return bound[0][0].getsockname()[1]

    async def _listen(self, socks) -> None:
        for sock, ssl_ctx in socks:
            self._listeners.append(await self.loop.create_server(
                lambda: H2Connection(self), sock=sock, ssl=ssl_ctx,
                ssl_handshake_timeout=self.handshake_timeout if ssl_ctx is not None else None))

    # -- lifetime ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self.loop = asyncio.get_running_loop()
        self._started = True
        self.serving = True
        await self._listen(self._sockets)

    def admit(self, conn: H2Connection) -> bool:
        if not self.serving:
            return False
        if len(self.connections) >= self.max_connections:
            # Full: make room by closing the oldest connection with no call
            # in flight, rather than refusing the newcomer (idle sockets
            # must not lock real clients out; grpc.aio has no cap at all).
            victim = next((c for c in self.connections if not c.streams), None)
            if victim is None:
                return False
            self.forget(victim)
            victim.evict()
        self.connections[conn] = None
        return True

    def forget(self, conn: H2Connection) -> None:
        self.connections.pop(conn, None)
        if self._stopping is not None and not self.connections and self._drained is not None \
                and not self._drained.done():
            self._drained.set_result(None)

    _drained = None

    async def stop(self, grace: float | None) -> None:
        """GOAWAY to every connection; calls in flight get `grace` seconds
        (None: none), then are cancelled. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace) -> None:
        self.serving = False
        for listener in self._listeners:
            listener.close()
        if not self._started:
            for sock, _ in self._sockets:
                sock.close()
            self._terminated.set()
            return
        self._drained = self.loop.create_future()
        for conn in list(self.connections):
            conn.goaway(0, b"server stopping")
        if self.connections and grace:
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), grace)
            except asyncio.TimeoutError:
                pass
        for conn in list(self.connections):
            conn.abort_streams()
        for listener in self._listeners:
            await listener.wait_closed()
        self._terminated.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._terminated.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


def _link(interceptor, cont):
    async def step(details):
        return await interceptor.intercept_service(cont, details)
    return step


def _limit(value, default: int) -> int:
    if value is None:
        return default
    value = int(value)
    return 2**31 - 1 if value < 0 else value      # grpc: -1 means unlimited
