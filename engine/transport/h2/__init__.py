"""Our own HTTP/2 gRPC server for raftnode's client port (issue 11).

Why: grpc.aio costs ~280-530 µs of server CPU per unary call (its C core,
Cython glue, a Task and an executor hop per call), which was 68 % of a
serializable range's CPU. A hand-written server on asyncio.Protocol does
the same call in ~15-60 µs (bench/bench_h2_floor.py: 15 µs at 64 calls in
flight, 59 µs with one; TLS 20-93 µs). engine/cli/main.py uses it when
$RAFTNODE_CLIENT_WIRE=h2; the peer port stays on grpc.aio.

The contract: a drop-in for the grpc.aio.Server main.py builds, so that
engine/api's servicers, engine/http/grpc_metrics.InstrumentedServer and
engine/transport/certcheck's interceptor run unchanged.

    server = H2Server(options=[("grpc.max_receive_message_length", N), ...],  # unknown keys ignored
                      interceptors=[...])         # grpc.aio.ServerInterceptor, called in order
    rpc_pb2_grpc.add_KVServicer_to_server(servicer, server)   # generated code, unchanged
    port = server.add_insecure_port("127.0.0.1:0")   # binds now; the port, or 0 when it cannot
    port = server.add_secure_port(addr, server_ssl_context(cert, key, ca, require_client_auth))
    await server.start()           # serving from here; connections made before wait, not refused
    await server.stop(grace)       # GOAWAY; calls get `grace` s, then are cancelled; idempotent
    await server.wait_for_termination()

Registration: add_generic_rpc_handlers / add_registered_method_handlers
with grpc.RpcMethodHandler objects, the four kinds called as grpc.aio
calls them (unary handlers return the response; streaming ones are async
generators or coroutines using context.write()/read(); request iterators
are async iterators). The servicer context has grpc.aio's methods:
invocation_metadata ("-bin" values base64-decoded), peer ("ipv4:h:p"),
auth_context (grpc's keys, x509_* from the client certificate), time_remaining,
abort (sends the status, raises grpc.aio.AbortError), set_code/set_details,
write/read, send_initial_metadata, set_trailing_metadata, cancelled, done,
add_done_callback. Statuses and messages are grpc C-core's: unknown method
UNIMPLEMENTED "Method not found!", a handler's exception UNKNOWN
"Unexpected <class '...'>: ...", "SERVER: Received/Sent message larger than
max (n vs. m)", DEADLINE_EXCEEDED "Deadline Exceeded". Options honoured:
grpc.max_receive_message_length, grpc.max_send_message_length,
grpc.max_concurrent_streams, grpc.max_metadata_size,
grpc.http2.max_ping_strikes (0 = pings are never punished: raftnode's
setting) with grpc.http2.min_ping_interval_without_data_ms, and our own
h2.max_connections, h2.handshake_timeout_s.

Where it differs from grpc.aio (on purpose):
  * a handler's first step runs in the read that completed its request,
    without a Task (call.drive); a Task is made only when it suspends, or
    after 5 ms of such steps in one read. Meanwhile asyncio.current_task()
    is not the call's, and contextvars are the connection's;
  * plain-function handlers run inline (grpc.aio: in an executor);
  * interceptors of unary-request methods run once the request is complete;
  * a status before the client sent anything on its open stream is held
    until its first message (at most 10 ms, connection.EARLY_STATUS_DELAY);
  * defaults: 1024 concurrent streams per connection, 4096 connections.

Not done yet: compression (a compressed message is UNIMPLEMENTED), server
keepalive pings and idle-connection limits, HTTP/1.1 on the same port,
grpc-status-details-bin.

Modules: hpack (RFC 7541), frames (RFC 9113 constants), status (gRPC
status and metadata on the wire), headers (request header validation), tls
(ssl context, auth context), context (the servicer context), call (one
call: stream state, the handler driver), connection (one connection:
framing, flow control, limits), server (registry, ports, lifetime).
"""
from .server import H2Server
from .tls import server_ssl_context

__all__ = ["H2Server", "server_ssl_context"]
