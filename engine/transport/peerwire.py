"""The peer port without TLS: raft streams on plain TCP, everything else gRPC.

Why: a raft message batch sent over a grpc.aio client stream costs ~56 µs
to write and ~62 µs to receive (a completion, a hop through grpc's poller
thread and a loop wakeup on each side), against a few µs for a
length-prefixed frame on an asyncio stream (docs/BENCHMARKS.md, "Floors").
Heartbeats alone made an idle leader spend most of its CPU in stream
writes. So on an http peer URL the raft stream (`Peer.Stream`'s job) goes
over the connection as frames of our own, while probes, snapshots and the
member list stay gRPC on the same port: a listener in front of the gRPC
peer server looks at each connection's first 24 bytes. Our stream starts
with MAGIC; anything else (a gRPC client's HTTP/2 preface, or garbage) is
passed through unchanged to the gRPC server listening on an internal
127.0.0.1 port, which judges it as before.

Nothing here applies to https peer URLs: with peer TLS the gRPC server owns
the port and the certificate rules (engine/transport/certcheck) stay where
they are.

The stream, after MAGIC each way (the listener answers with it, so a dialer
talking to a member without this listener, whose HTTP/2 server rejects the
bytes, falls back to `Peer.Stream`):

- dialer -> listener: frames of a 4-byte big-endian length and a serialized
  MessageBatch, checked exactly as `Peer.Stream` checks them. The first
  names sender, cluster and recipient and carries no messages: it must come
  within SNIFF_TIMEOUT of the accept and fit HELLO_LIMIT, so a stranger
  gets neither a large buffer nor an idle connection before the gate
  admitted it;
- listener -> dialer: frames of a 4-byte length, one kind byte and a body:
  KIND_ACK (empty; sent at most every ACK_INTERVAL while batches arrive: the
  dialer's proof that the member behind the port is alive, as grpc's
  keepalive pings were) or KIND_END (a gRPC status code byte and UTF-8
  details: why the stream was refused, e.g. "removed member"), after which
  the listener closes the connection.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Awaitable, Callable

log = logging.getLogger("engine.transport")

# 24 bytes, as long as HTTP/2's client preface ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
# so a gRPC server that sees it rejects it at once instead of waiting for more.
MAGIC = b"raftui peer stream v1\r\n\n"
assert len(MAGIC) == 24
LENGTH_BYTES = 4
KIND_ACK = 1
KIND_END = 2
# A dialer that wrote batches and heard no ack for this long drops the
# stream (a paused or wedged member: its kernel still accepts our bytes).
ACK_INTERVAL = 1.0
DEAD_AFTER = 10.0
# A connection that has not said what it is within this long is closed.
SNIFF_TIMEOUT = 10.0
# How long a dialer waits for the listener's MAGIC.
HANDSHAKE_TIMEOUT = 2.0
PROXY_CHUNK = 1 << 16
# After refusing a stream: how long, and how much of what the dialer still
# sends, the listener reads and drops before closing (see linger()).
LINGER_SECONDS = 1.0
LINGER_BYTES = 64 << 20
# TCP keepalive on stream sockets: a member whose host vanished (power cut,
# cable) does not leave a reader waiting for ever.
KEEPALIVE_IDLE = 10
KEEPALIVE_INTERVAL = 2
KEEPALIVE_COUNT = 5
USER_TIMEOUT_MS = 30_000


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(LENGTH_BYTES, "big") + payload


def ack_frame() -> bytes:
    return frame(bytes([KIND_ACK]))


def end_frame(code: int, details: str) -> bytes:
    return frame(bytes([KIND_END, code & 0xFF]) + details.encode("utf-8", "replace")[:4096])


def keepalive(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Unacknowledged data this old ends the connection (keepalive alone
        # does not run while data waits to be acknowledged).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)
    except (OSError, AttributeError):  # not TCP, or a platform without these
        pass


# The first frame (a header-only MessageBatch naming sender, cluster and
# recipient) is read under this limit, within SNIFF_TIMEOUT of the accept:
# nobody gets the full frame size or an idle connection before the gate
# has admitted them.
HELLO_LIMIT = 4096
# Connections not admitted yet (still greeting, or before their first frame
# passed the gate) and gRPC connections piped through: beyond these the
# listener closes new ones at once (an honest cluster needs a few per peer).
MAX_PENDING = 64
MAX_PROXIED = 256
WARN_INTERVAL = 5.0

# (reader, writer, deadline for the first frame in loop time, admitted):
# serves one stream; calls admitted() once its first frame passed the gate.
RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, float, Callable[[], None]],
                      Awaitable[None]]


class _Throttled:
    """One warning per key every WARN_INTERVAL seconds, the rest counted."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def warn(self, key: str, fmt: str, *args) -> None:
        now = time.monotonic()
        at, skipped = self._last.get(key, (-WARN_INTERVAL, 0))
        if now - at < WARN_INTERVAL:
            self._last[key] = (at, skipped + 1)
            return
        self._last[key] = (now, 0)
        if skipped:
            fmt += " (%d more since the last warning)"
            args = (*args, skipped)
        log.warning(fmt, *args)


def _dual_stack_socket(port: int) -> socket.socket | None:
    """A listening [::] socket that takes IPv4 too (what gRPC binds for
    0.0.0.0 and [::]; asyncio alone would make it IPv6-only). None where
    the host has no IPv6."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
        return sock
    except OSError:
        sock.close()
        raise


class PeerPort:
    """The listener in front of a member's gRPC peer server (plain TCP only).

    A connection that sends MAGIC gets MAGIC back and is served by
    `handle_raw`; other connections are piped to `grpc_port` on 127.0.0.1.
    Both kinds are bounded (MAX_PENDING, MAX_PROXIED, SNIFF_TIMEOUT): the
    port is open to anyone who can reach it."""

    def __init__(self, handle_raw: RawHandler, grpc_port: int) -> None:
        self._handle_raw = handle_raw
        self._grpc_port = grpc_port
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: set[asyncio.Task] = set()
        self._pending = 0
        self._proxied_open = 0
        self._warn = _Throttled()
        # Counters (tests, Inspect): streams whose first frame was admitted,
        # connections piped to gRPC, connections closed for the caps.
        self.raw_streams = 0
        self.proxied = 0
        self.turned_away = 0

    async def listen(self, host: str, port: int) -> int:
        """Listen on host:port; returns the port bound (for port 0). A
        wildcard host (0.0.0.0, ::) takes IPv4 and IPv6, as gRPC's does."""
        sock = _dual_stack_socket(port) if host in ("0.0.0.0", "::") else None
        if sock is not None:
            server = await asyncio.start_server(self._on_connection, sock=sock, limit=1 << 16)
        else:
            server = await asyncio.start_server(self._on_connection, host, port,
                                                reuse_address=True, limit=1 << 16)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.wait(list(self._conns), timeout=2.0)
        self._servers.clear()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._pending >= MAX_PENDING:
            self.turned_away += 1
            self._warn.warn("pending", "peer port: %d connections not admitted yet; closing new ones",
                            self._pending)
            writer.close()
            return
        task = asyncio.current_task()
        self._conns.add(task)
        self._pending += 1
        pending = True

        def admitted() -> None:
            nonlocal pending
            if pending:
                pending = False
                self._pending -= 1
                self.raw_streams += 1

        loop = asyncio.get_running_loop()
        deadline = loop.time() + SNIFF_TIMEOUT
        try:
            try:
                head = await asyncio.wait_for(reader.readexactly(len(MAGIC)), SNIFF_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
                return   # closed or silent before saying what it is
            if head == MAGIC:
                keepalive(writer.get_extra_info("socket"))
                writer.write(MAGIC)
                await self._handle_raw(reader, writer, deadline, admitted)
                return
            admitted_as_grpc = self._proxied_open < MAX_PROXIED
            pending = False
            self._pending -= 1
            if not admitted_as_grpc:
                self.turned_away += 1
                self._warn.warn("proxied", "peer port: %d gRPC connections open; closing new ones",
                                self._proxied_open)
                return
            self.proxied += 1
            self._proxied_open += 1
            try:
                await self._proxy(head, reader, writer)
            finally:
                self._proxied_open -= 1
        except asyncio.CancelledError:
            pass
        except Exception:  # one connection's bug must not touch the others
            log.exception("peer connection failed")
        finally:
            if pending:
                self._pending -= 1
            self._conns.discard(task)
            writer.close()

    async def _proxy(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Pipe the connection to the gRPC peer server, both ways, until
        either side closes."""
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._grpc_port)
        except OSError as e:
            self._warn.warn("upstream", "peer port: internal gRPC server unreachable: %s", e)
            return
        try:
            up_writer.write(head)
            pumps = [asyncio.ensure_future(_pump(reader, up_writer)),
                     asyncio.ensure_future(_pump(up_reader, writer))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            up_writer.close()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await src.read(PROXY_CHUNK)
            if not data:
                return
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.IncompleteReadError):
        return


async def open_stream(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Dial a peer's stream: (reader, writer) once the listener answered
    MAGIC; None if what listens there answered something else (a member
    without PeerPort: its HTTP/2 server sends its SETTINGS at once; use
    gRPC). Silence or a closed connection proves nothing (a busy member, one
    shutting down): OSError / asyncio.TimeoutError, as when nothing listens."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=1 << 16),
                                            HANDSHAKE_TIMEOUT)
    try:
        keepalive(writer.get_extra_info("socket"))
        writer.write(MAGIC)
        try:
            answer = await asyncio.wait_for(reader.readexactly(len(MAGIC)), HANDSHAKE_TIMEOUT)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise ConnectionResetError("closed before answering") from None
            answer = e.partial
        if answer != MAGIC:
            writer.close()
            return None
        return reader, writer
    except BaseException:
        writer.close()
        raise


async def linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After a refusal: close our side and discard what the dialer still
    sends for a moment, so the refusal reaches it (closing a socket with
    unread data resets the connection, and a reset can destroy the answer
    before the dialer reads it). Bounded in time and bytes."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_SECONDS
        left = LINGER_BYTES
        while left > 0:
            data = await asyncio.wait_for(reader.read(PROXY_CHUNK), max(0.0, deadline - loop.time()))
            if not data:
                return
            left -= len(data)
    except (OSError, asyncio.TimeoutError):
        return


async def read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One frame's payload. Raises ValueError for a length over `limit`
    (nothing more is read), IncompleteReadError at EOF."""
    n = int.from_bytes(await reader.readexactly(LENGTH_BYTES), "big")
    if n > limit:
        raise ValueError(f"frame of {n} bytes (at most {limit})")
    return await reader.readexactly(n)
