"""Our own HTTP/2 gRPC server for raftnode's client port (issue 11): a
drop-in for grpc.aio.Server at ~1/10 of its CPU per call.

    server = H2Server(options=[...], interceptors=[...])
    add_KVServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")   # or add_secure_port(addr, server_ssl_context(...))
    await server.start(); ...; await server.stop(grace)

Modules: hpack (RFC 7541), frames (RFC 9113 constants), status (gRPC
status/metadata on the wire), tls (ssl context, auth context), context (the
servicer context), call (one call: stream state, handler driver),
connection (one connection: framing, flow control, limits), server
(registry, ports, lifetime).
"""
from .server import H2Server
from .tls import server_ssl_context

__all__ = ["H2Server", "server_ssl_context"]
