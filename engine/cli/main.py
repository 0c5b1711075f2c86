"""`raftnode`: run one cluster member with etcd's flags, or a tool.

    raftnode --name n1 --data-dir d1 --listen-client-urls ... (etcd's flags)
    raftnode dump-logs <data-dir> [...]       print the WAL, one line per record
    raftnode snapshot restore <file> --data-dir DIR ...  (see README)
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
import threading
import time

import grpc

from engine.cli.flags import FlagError, MemberConfig, parse_args
from engine.transport import add_peer_service, certcheck, make_server
from engine.transport.transport import SERVER_OPTIONS, peer_port, peer_receive_limit, url_target
from engine.transport.urls import split_host_port
from engine.wal import fsutil

log = logging.getLogger("raftnode")

# Seconds a SIGTERM'd (or failed) member may spend stopping cleanly before
# it just exits.
SHUTDOWN_GRACE = 3.0
# Exit status of a member that stopped because it could not go on.
EXIT_FATAL = 1


def _raise_open_file_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, as Go's runtime does for
    etcd: every peer, client and proxied peer-port connection is a
    descriptor, and running out breaks the WAL and snapshot files too."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


class _QuietAcceptErrors:
    """The loop's exception handler: asyncio logs a traceback for every
    failed accept() when descriptors run out (tens of thousands a second
    while a flood lasts); one line every few seconds says the same."""

    INTERVAL = 5.0

    def __init__(self) -> None:
        self._last = float("-inf")
        self._skipped = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if "out of system resource" in str(context.get("message", "")):
            now = time.monotonic()
            if now - self._last < self.INTERVAL:
                self._skipped += 1
                return
            self._last = now
            skipped, self._skipped = self._skipped, 0
            log.error("%s: %r (%d more since the last report)", context["message"],
                      context.get("exception"), skipped)
            return
        loop.default_exception_handler(context)


def _watch_signals(loop: asyncio.AbstractEventLoop, on_stop) -> None:
    """SIGTERM/SIGINT end the member within SHUTDOWN_GRACE seconds, whatever
    the event loop is doing.

    asyncio's own signal handlers run on the loop, so a wedged loop would
    never see them. Instead the C-level handler writes the signal number to
    a wakeup fd that a watchdog thread reads: it asks the loop to stop
    cleanly and, if that has not ended the process in time, exits."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals are the main thread's (an embedding test runs us elsewhere)
    r, w = os.pipe()
    os.set_blocking(w, False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)   # the wakeup fd does the work
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def watch() -> None:
        armed = False
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                return
            if not data:
                return
            if armed or not {signal.SIGTERM, signal.SIGINT} & set(data):
                continue
            armed = True
            log.info("signal received: stopping (at most %.0f s)", SHUTDOWN_GRACE)
            t = threading.Timer(SHUTDOWN_GRACE, _exit_now, (0, "stop took too long"))
            t.daemon = True
            t.start()
            try:
                loop.call_soon_threadsafe(on_stop)
            except RuntimeError:  # the loop is closed already
                pass

    threading.Thread(target=watch, name="signal-watchdog", daemon=True).start()


def _exit_now(code: int, why: str) -> None:
    log.warning("exiting now (%s)", why)
    logging.shutdown()
    os._exit(code)


def _check_data_dir(path: str) -> None:
    """An unusable data dir is a one-line error, before anything starts. A
    new one is private (0700, as etcd makes it); an existing one more open
    gets etcd's warning when the store opens it (engine/mvcc open_applier)."""
    try:
        fsutil.makedirs_private(path)
    except OSError as e:
        raise FlagError(f"cannot use --data-dir {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FlagError(f"cannot use --data-dir {path}: not writable")


# Which server speaks gRPC on the client URLs: "h2" (the default:
# engine/transport/h2, our own HTTP/2 server, the same servicers at a tenth
# of grpc.aio's CPU per call; issue 11) or "grpc" (grpc.aio, as before: a
# way back should a client meet something h2 does differently).
CLIENT_WIRE_ENV = "RAFTNODE_CLIENT_WIRE"
CLIENT_WIRES = ("h2", "grpc")
DEFAULT_CLIENT_WIRE = "h2"


def client_wire() -> str:
    wire = os.environ.get(CLIENT_WIRE_ENV, "").strip().lower() or DEFAULT_CLIENT_WIRE
    if wire not in CLIENT_WIRES:
        raise FlagError(f"${CLIENT_WIRE_ENV} must be one of {', '.join(CLIENT_WIRES)}, not {wire!r}")
    return wire


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _server_credentials(cert: str, key: str, ca: str, client_auth: bool):
    # etcd 3.4 (pkg/transport/listener.go ServerConfig): a trusted CA file
    # alone already requires and verifies client certificates, as does
    # --client-cert-auth / --peer-client-cert-auth.
    return grpc.ssl_server_credentials(
        [(_read(key), _read(cert))],
        root_certificates=_read(ca) if ca else None,
        require_client_auth=client_auth or bool(ca))


def _bind(server: grpc.aio.Server, urls, creds) -> None:
    for url in urls:
        target, tls = url_target(url)
        host, _, port = target.rpartition(":")
        if host in ("localhost", ""):
            target = f"127.0.0.1:{port}"
        if tls:
            bound = server.add_secure_port(target, creds)
        else:
            bound = server.add_insecure_port(target)
        if not bound:
            raise FlagError(f"cannot listen on {url}")


async def _listen_peer_port(front, urls) -> None:
    for url in urls:
        host, port = split_host_port(url_target(url)[0])
        try:
            await front.listen("127.0.0.1" if host in ("localhost", "") else host, int(port))
        except OSError as e:
            raise FlagError(f"cannot listen on {url}: {e.strerror or e}") from None


async def _listen_http(http, urls, *, metrics_only: bool) -> None:
    try:
        await http.listen(urls, metrics_only=metrics_only)
    except OSError as e:   # like a client or peer URL that cannot be bound
        raise FlagError(str(e.strerror or e)) from None


async def serve(cfg: MemberConfig, ready: asyncio.Event | None = None) -> int:
    """Run one member until SIGTERM/SIGINT (returns 0) or until it cannot go
    on (returns EXIT_FATAL)."""
    from engine.server.node import Node

    from engine.api import add_services
    from engine.api.auth import require_root
    from engine.http import HttpService
    from engine.server.kvserver import KVServer

    asyncio.get_running_loop().set_exception_handler(_QuietAcceptErrors())
    node = Node(cfg)
    await node.start()
    kvs = KVServer(node)
    http = HttpService(kvs)
    # etcd serves its metrics listener from the start (/health says false until there is a leader).
    await _listen_http(http, cfg.listen_metrics_urls, metrics_only=True)
    max_req = cfg.max_request_bytes
    # etcd: the gRPC receive limit is max-request-bytes + 512 KiB; larger
    # requests fail in grpc, smaller ones over the limit get "request is too large".
    client_options = [("grpc.max_receive_message_length", max_req + 512 * 1024),
                      ("grpc.max_send_message_length", 2**31 - 1)]
    # A call the certificate check refuses never reaches a handler, so it is
    # not counted as served either.
    client_interceptors = certcheck.server_interceptors(certcheck.listener_rules(cfg, "client"), "client")
    wire = client_wire()
    if wire == "h2":
        from engine.transport.h2 import H2Server
        client = H2Server(options=[*SERVER_OPTIONS, *client_options], interceptors=client_interceptors)
    else:
        client = make_server(client_options, interceptors=client_interceptors)
    # Services register through `counted`: every method's handler is wrapped
    # for the grpc_server_* metrics once, not by an interceptor per call.
    counted = http.instrumented(client)
    add_services(counted, kvs)
    if cfg.enable_fault_injection:
        from engine.transport.fault_service import add_fault_service
        # With auth on, root only (issue 10).
        add_fault_service(counted, node.faults, node.member_id, admit=functools.partial(require_root, kvs),
                          known_peers=lambda: node.transport.peers().keys())
    if not cfg.client_tls:
        client_creds = None
    elif wire == "h2":
        from engine.transport.h2 import server_ssl_context
        # (a CA file alone already requires client certificates there, as here)
        client_creds = server_ssl_context(cfg.cert_file, cfg.key_file, cfg.trusted_ca_file or None,
                                          cfg.client_cert_auth)
    else:
        client_creds = _server_credentials(cfg.cert_file, cfg.key_file, cfg.trusted_ca_file,
                                           cfg.client_cert_auth)
    _bind(client, cfg.listen_client_urls, client_creds)
    peer = make_server([("grpc.max_receive_message_length", peer_receive_limit(cfg.max_request_bytes))],
                       interceptors=certcheck.server_interceptors(certcheck.listener_rules(cfg, "peer"), "peer"))
    add_peer_service(peer, node.transport)
    node.transport.receive_limit = peer_receive_limit(cfg.max_request_bytes)
    peer_front = None
    if cfg.peer_tls:
        peer_creds = _server_credentials(cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file,
                                         cfg.peer_client_cert_auth)
        _bind(peer, cfg.listen_peer_urls, peer_creds)
        await peer.start()
    else:
        # Plain TCP peer URLs: raft streams as frames of our own, the rest
        # gRPC behind the same port (engine/transport/peerwire).
        internal = peer.add_insecure_port("127.0.0.1:0")
        if not internal:
            raise FlagError("cannot listen on an internal port for the peer gRPC server")
        await peer.start()
        peer_front = peer_port(node.transport, internal)
        await _listen_peer_port(peer_front, cfg.listen_peer_urls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    _watch_signals(loop, stop.set)
    stopping = loop.create_task(stop.wait())
    failing = loop.create_task(node.failed.wait())
    publishing = loop.create_task(node.published.wait())
    code = 0
    try:
        # Like etcd (its ReadyNotify), clients are served once this member's
        # name and client URLs are in the member table: `member list` never
        # shows a serving member without its URLs. The port is bound already,
        # so a client connecting meanwhile waits instead of being refused.
        await asyncio.wait({stopping, failing, publishing}, return_when=asyncio.FIRST_COMPLETED)
        if node.published.is_set() and not stop.is_set() and not node.failed.is_set():
            await client.start()
            await _listen_http(http, cfg.listen_client_http_urls, metrics_only=False)
            log.info("member %x of cluster %x serving clients on %s (%s)", node.member_id, node.cluster_id,
                     ",".join(cfg.listen_client_urls), "grpc.aio" if wire == "grpc" else "HTTP/2: engine/transport/h2")
            if ready is not None:
                ready.set()
            await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        if node.failed.is_set() and node.removed_from_cluster:
            # Removed from the cluster: stop and exit 0, as etcd does
            # (nothing for a supervisor to restart: the data dir is done).
            log.warning("member %x was removed from the cluster: stopping and exiting with status 0",
                        node.member_id)
            t = threading.Timer(SHUTDOWN_GRACE, _exit_now, (code, "stop took too long"))
            t.daemon = True
            t.start()
        elif node.failed.is_set():
            # Fatal means exit: stop answering (no stale reads, no Status from
            # a dead loop), then exit non-zero so a supervisor restarts us.
            code = EXIT_FATAL
            log.critical("member %x cannot go on (%r): stopping and exiting with status %d",
                         node.member_id, node._fatal, code)
            t = threading.Timer(SHUTDOWN_GRACE, _exit_now, (code, "fatal stop took too long"))
            t.daemon = True
            t.start()
    finally:
        stopping.cancel()
        failing.cancel()
        publishing.cancel()
        await http.stop()
        await client.stop(0.5)
        if peer_front is not None:
            await peer_front.close()
        await peer.stop(0.5)
        try:
            await asyncio.wait_for(node.stop(), SHUTDOWN_GRACE / 2)
        except asyncio.TimeoutError:
            _exit_now(code, f"node did not stop within {SHUTDOWN_GRACE / 2:.1f}s")
    return code


def run_member(argv: list[str]) -> int:
    try:
        cfg = parse_args(argv)
        client_wire()
        _check_data_dir(cfg.data_dir)
    except FlagError as e:
        print(f"raftnode: {e}", file=sys.stderr)
        return 2
    _raise_open_file_limit()
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format=f"%(asctime)s {cfg.name} %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(cfg))
    except FlagError as e:
        print(f"raftnode: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except Exception as e:  # could not start (or stop): say why, exit non-zero
        log.critical("raftnode %s failed: %r", cfg.name, e, exc_info=True)
        return EXIT_FATAL


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "dump-logs":
        from engine.api.entry_text import entry_text
        from engine.wal.dump import main as dump_main
        return dump_main(argv[1:], describe=entry_text)
    if argv[:2] == ["snapshot", "restore"]:
        from engine.cli.restore import main as restore_main
        return restore_main(argv[2:])
    return run_member(argv)


if __name__ == "__main__":
    raise SystemExit(main())
