"""`raftnode`: run one cluster member with etcd's flags, or a tool.

    raftnode --name n1 --data-dir d1 --listen-client-urls ... (etcd's flags)
    raftnode dump-logs <data-dir> [...]       print the WAL, one line per record
    raftnode snapshot restore <file> --data-dir DIR ...  (see README)
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading

import grpc

from engine.cli.flags import FlagError, MemberConfig, parse_args
from engine.transport import add_peer_service, make_server
from engine.transport.transport import url_target

log = logging.getLogger("raftnode")

# Seconds a SIGTERM'd member may spend stopping cleanly before it just exits.
SHUTDOWN_GRACE = 4.0


def _check_data_dir(path: str) -> None:
    """An unusable data dir is a one-line error, before anything starts."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise FlagError(f"cannot use --data-dir {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FlagError(f"cannot use --data-dir {path}: not writable")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _server_credentials(cert: str, key: str, ca: str, client_auth: bool):
    return grpc.ssl_server_credentials(
        [(_read(key), _read(cert))],
        root_certificates=_read(ca) if ca else None,
        require_client_auth=client_auth)


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


async def serve(cfg: MemberConfig, ready: asyncio.Event | None = None) -> None:
    from engine.server.node import Node

    node = Node(cfg)
    await node.start()
    max_req = cfg.max_request_bytes
    # etcd: the gRPC receive limit is max-request-bytes + 512 KiB; larger
    # requests fail in grpc, smaller ones over the limit get "request is too large".
    client = make_server([("grpc.max_receive_message_length", max_req + 512 * 1024),
                          ("grpc.max_send_message_length", 2**31 - 1)])
    try:
        from engine.api import add_services
    except ImportError:  # the API layer is not there yet
        add_services = None
    if add_services is not None:
        add_services(client, node)
    if cfg.enable_fault_injection:
        from engine.transport.fault_service import add_fault_service
        add_fault_service(client, node.faults, node.member_id)
    client_creds = (_server_credentials(cfg.cert_file, cfg.key_file, cfg.trusted_ca_file,
                                        cfg.client_cert_auth) if cfg.client_tls else None)
    _bind(client, cfg.listen_client_urls, client_creds)
    peer = make_server()
    add_peer_service(peer, node.transport)
    peer_creds = (_server_credentials(cfg.peer_cert_file, cfg.peer_key_file, cfg.peer_trusted_ca_file,
                                      cfg.peer_client_cert_auth) if cfg.peer_tls else None)
    _bind(peer, cfg.listen_peer_urls, peer_creds)
    await peer.start()
    await client.start()
    log.info("member %x of cluster %x serving clients on %s", node.member_id, node.cluster_id,
             ",".join(cfg.listen_client_urls))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        # A clean stop closes the WAL and the store, but it must not hang on
        # a peer stream that grpc is slow to cancel: everything is already
        # durable (a kill -9 is always safe), so after a grace period exit.
        t = threading.Timer(SHUTDOWN_GRACE, lambda: os._exit(0))
        t.daemon = True
        t.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):
            pass
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        await client.stop(0.5)
        await peer.stop(0.5)
        try:
            await asyncio.wait_for(node.stop(), SHUTDOWN_GRACE / 2)
        except asyncio.TimeoutError:
            log.warning("node did not stop within %.0fs; exiting", SHUTDOWN_GRACE / 2)
            os._exit(0)


def run_member(argv: list[str]) -> int:
    try:
        cfg = parse_args(argv)
        _check_data_dir(cfg.data_dir)
    except FlagError as e:
        print(f"raftnode: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.log_level.upper(), logging.INFO),
        format=f"%(asctime)s {cfg.name} %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(cfg))
    except FlagError as e:
        print(f"raftnode: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "dump-logs":
        from engine.wal.dump import main as dump_main
        return dump_main(argv[1:])
    if argv[:2] == ["snapshot", "restore"]:
        from engine.cli.restore import main as restore_main
        return restore_main(argv[2:])
    return run_member(argv)


if __name__ == "__main__":
    raise SystemExit(main())
