"""Shared pieces of the H2Server tests (issue 11): the two server factories
(grpc.aio.server, the reference, and engine.transport.h2.H2Server), small
servicers built on the generated code, and a raw HTTP/2 client that speaks
frames byte by byte (for trailers-only checks and hostile input).

pytest-asyncio is not installed: each test is a plain function that calls
`run(coro)`. Waiting is always for a condition, with a deadline; every read
of the raw client has a timeout.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import pathlib
import struct
import urllib.parse
from typing import Any, Awaitable, Callable, Iterable, NamedTuple, TypeVar

import grpc
import grpc.aio

from engine.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc

try:
    import engine.transport.h2 as h2mod
    from engine.transport.h2 import H2Server, server_ssl_context  # noqa: F401  (the contract's names)
    H2_IMPORT_ERROR: str | None = None
except Exception as e:  # the package is being built (H2BUILD); its tests skip until it imports
    h2mod = None
    H2_IMPORT_ERROR = f"{type(e).__name__}: {e}"

T = TypeVar("T")
HOST = "127.0.0.1"


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def settled(value: Callable[[], int], quiet: float = 0.5, timeout: float = 10.0, what: str = "value") -> int:
    """Wait until value() has not changed for `quiet` seconds (a writer that
    blocked); its value then. AssertionError if it still moves at `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = value(), loop.time()
    while loop.time() - since < quiet:
        if loop.time() > deadline:
            raise AssertionError(f"{what} still moving after {timeout}s: {value()}")
        await asyncio.sleep(0.05)
        if value() != last:
            last, since = value(), loop.time()
    return last


# -- the two servers ----------------------------------------------------------------

@dataclasses.dataclass
class Tls:
    """Server TLS material (paths); ca=None: no client certificates asked."""
    cert: str
    key: str
    ca: str | None = None
    require_client_auth: bool = False


def _read(path: str) -> bytes:
    return pathlib.Path(path).read_bytes()


class Wire:
    """Makes a server of one kind; both kinds take the same calls."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def server(self, options: Iterable[tuple[str, Any]] = (), interceptors=()):
        if self.name == "grpc":
            return grpc.aio.server(options=list(options), interceptors=list(interceptors))
        return h2mod.H2Server(options=list(options), interceptors=list(interceptors))

    def add_port(self, server, tls: Tls | None = None, address: str = f"{HOST}:0") -> int:
        if tls is None:
            return server.add_insecure_port(address)
        if self.name == "grpc":
            creds = grpc.ssl_server_credentials(
                [(_read(tls.key), _read(tls.cert))],
                root_certificates=_read(tls.ca) if tls.ca else None,
                require_client_auth=tls.require_client_auth or bool(tls.ca))
            return server.add_secure_port(address, creds)
        ctx = h2mod.server_ssl_context(tls.cert, tls.key, tls.ca, tls.require_client_auth)
        return server.add_secure_port(address, ctx)


WIRES = ("grpc", "h2")


def wire_or_skip(name: str) -> Wire:
    import pytest
    if name == "h2" and h2mod is None:
        pytest.skip(f"engine.transport.h2 does not import yet ({H2_IMPORT_ERROR})")
    return Wire(name)


class Served:
    def __init__(self, server, port: int) -> None:
        self.server = server
        self.port = port
        self.target = f"{HOST}:{port}"

    def channel(self, options=()) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.target, options=list(options))


@contextlib.asynccontextmanager
async def serving(wire: Wire, *servicers, options=(), interceptors=(), tls: Tls | None = None):
    """A started server with `servicers` registered (each object knows how
    to add itself: see Servicer.register); stopped at the end, always."""
    server = wire.server(options, interceptors)
    for s in servicers:
        s.register(server)
    port = wire.add_port(server, tls)
    assert port, "could not bind"
    await server.start()
    try:
        yield Served(server, port)
    finally:
        await server.stop(0)


# -- servicers ------------------------------------------------------------------------

ABORT_MESSAGE = "bad key: 100% ünïcode\nline 2 %41"


class KV(rpc_pb2_grpc.KVServicer):
    """Range does what its key says (see the branches); every call leaves a
    record of what the handler saw in self.seen."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[dict] = []
        self.cancelled: list[bool] = []      # context.cancelled() when the handler was cancelled
        self.active = 0
        self.max_active = 0
        self.finished = 0
        self.done_callbacks: list[tuple] = []

    def register(self, server) -> None:
        rpc_pb2_grpc.add_KVServicer_to_server(self, server)

    async def Range(self, request, context):
        self.calls += 1
        key = request.key
        self.seen.append({"metadata": tuple(context.invocation_metadata() or ()),
                          "peer": context.peer(), "time_remaining": context.time_remaining(),
                          "key": key})
        if key == b"raise":
            raise ValueError("boom")
        if key == b"raw_bytes":             # pre-serialized (engine/api/decode.RAW_RESPONSES)
            return rpc_pb2.RangeResponse(count=42).SerializeToString()
        if key == b"none":
            return None                     # a handler bug: nothing to serialize
        if key == b"abort":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ABORT_MESSAGE)
        if key == b"set_code":
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details("not here: 50%")
            return rpc_pb2.RangeResponse(count=7)
        if key == b"metadata":
            await context.send_initial_metadata((("initial-key", "iv"), ("initial-bin", b"\x00\x01\xff")))
            context.set_trailing_metadata((("trailing-key", "tv"), ("trailing-bin", b"\xfe\x00")))
            return rpc_pb2.RangeResponse(count=1)
        if key == b"context":
            rec = self.seen[-1]
            rec["before"] = (context.code(), context.details(), context.done(), context.cancelled())
            context.set_details("some details")
            rec["after"] = (context.code(), context.details())
            context.add_done_callback(
                lambda ctx: self.done_callbacks.append((ctx is context, ctx.done(), ctx.cancelled(), ctx.code())))
            return rpc_pb2.RangeResponse(count=1)
        if key == b"abort_seen":
            try:
                await context.abort(grpc.StatusCode.NOT_FOUND, "gone")
            except grpc.aio.AbortError:
                self.seen[-1]["aborted"] = (context.code(), context.details())
                raise
        if key == b"auth":
            self.seen[-1]["auth"] = dict(context.auth_context() or {})
            return rpc_pb2.RangeResponse(count=1)
        if key == b"big":
            return rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=b"big", value=b"v" * request.limit)])
        if key == b"sleep":
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            try:
                await asyncio.sleep(request.limit / 1000)
            except asyncio.CancelledError:
                self.cancelled.append(context.cancelled())
                raise
            finally:
                self.active -= 1
            self.finished += 1
            return rpc_pb2.RangeResponse(count=request.limit)
        # Echo: the key back, and the request's size as count.
        return rpc_pb2.RangeResponse(kvs=[kv_pb2.KeyValue(key=key, value=request.range_end)],
                                     count=request.ByteSize())

    def Put(self, request, context):
        """A plain function, not a coroutine: grpc.aio runs it too."""
        self.calls += 1
        return rpc_pb2.PutResponse(prev_kv=kv_pb2.KeyValue(key=request.key, value=request.value))


class Watch(rpc_pb2_grpc.WatchServicer):
    """Bidi as an async generator: one response per request (watch_id =
    the request's create key length), one last response after half-close
    (canceled=True), unless the first key is b"stop" (the server ends first)."""

    def __init__(self) -> None:
        self.requests = 0
        self.half_closed = 0
        self.cancelled = 0
        self.ended: list[str] = []   # how each handler ended: "returned", "cancelled", "closed", "raised"

    def register(self, server) -> None:
        rpc_pb2_grpc.add_WatchServicer_to_server(self, server)

    async def Watch(self, request_iterator, context):
        try:
            async for req in request_iterator:
                self.requests += 1
                key = req.create_request.key
                if key == b"stop":
                    yield rpc_pb2.WatchResponse(watch_id=-1)
                    return
                if key == b"raise":
                    raise ValueError("boom in a stream")
                if key == b"abort":
                    await context.abort(grpc.StatusCode.OUT_OF_RANGE, ABORT_MESSAGE)
                yield rpc_pb2.WatchResponse(watch_id=len(key), created=True)
            self.half_closed += 1
            yield rpc_pb2.WatchResponse(watch_id=self.requests, canceled=True)
            self.ended.append("returned")
        except asyncio.CancelledError:
            self.cancelled += 1
            self.ended.append("cancelled")
            raise
        except GeneratorExit:
            self.ended.append("closed")
            raise
        except BaseException:
            self.ended.append("raised")
            raise


class Lease(rpc_pb2_grpc.LeaseServicer):
    """Bidi with context.read()/write() (a coroutine, not a generator):
    answers each keep-alive with ttl = id * 2; on EOF one last answer
    (id 0, ttl = number read)."""

    def __init__(self) -> None:
        self.eof = 0

    def register(self, server) -> None:
        rpc_pb2_grpc.add_LeaseServicer_to_server(self, server)

    async def LeaseKeepAlive(self, request_iterator, context):
        n = 0
        while True:
            req = await context.read()
            if req is grpc.aio.EOF:
                self.eof += 1
                await context.write(rpc_pb2.LeaseKeepAliveResponse(ID=0, TTL=n))
                return
            n += 1
            await context.write(rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=req.ID * 2))


class Maintenance(rpc_pb2_grpc.MaintenanceServicer):
    """Snapshot streams `chunks` messages of `chunk` bytes as an async
    generator (WriteMaintenance: with context.write()); self.written counts
    the messages the handler got past (yield / write() returned)."""

    def __init__(self, chunks: int = 4, chunk: int = 1000) -> None:
        self.chunks = chunks
        self.chunk = chunk
        self.written = 0
        self.cancelled = 0
        self.status_calls = 0

    def register(self, server) -> None:
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(self, server)

    def _msg(self, i: int) -> rpc_pb2.SnapshotResponse:
        return rpc_pb2.SnapshotResponse(remaining_bytes=self.chunks - i - 1, blob=bytes([i % 251]) * self.chunk)

    async def Snapshot(self, request, context):
        try:
            for i in range(self.chunks):
                yield self._msg(i)
                self.written += 1
        except (asyncio.CancelledError, GeneratorExit):   # a generator is closed rather than cancelled at a yield
            self.cancelled += 1
            raise

    async def Status(self, request, context):
        self.status_calls += 1
        return rpc_pb2.StatusResponse(
            header=rpc_pb2.ResponseHeader(cluster_id=0x1C1, member_id=0x2C2, revision=50, raft_term=3),
            version="3.4.23", dbSize=20000, leader=0x2C2, raftIndex=50, raftTerm=3,
            raftAppliedIndex=50, dbSizeInUse=20000)


class WriteMaintenance(Maintenance):
    async def Snapshot(self, request, context):   # a coroutine using context.write()
        try:
            for i in range(self.chunks):
                await context.write(self._msg(i))
                self.written += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


# -- a raw HTTP/2 client ------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20
# RFC 9113 §7 error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM, \
    INADEQUATE_SECURITY, HTTP_1_1_REQUIRED = range(14)
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)
FRAME_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
               SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
               WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def settings_frame(pairs: Iterable[tuple[int, int]] = (), ack: bool = False) -> bytes:
    return frame(SETTINGS, FLAG_ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def window_update(sid: int, inc: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def rst_stream(sid: int, code: int = CANCEL) -> bytes:
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def grpc_message(body: bytes, compressed: bool = False, length: int | None = None) -> bytes:
    """The 5-byte gRPC prefix (flag, length) and the body; `length` lies."""
    return struct.pack(">BI", 1 if compressed else 0, len(body) if length is None else length) + body


# HPACK (RFC 7541): the encoder writes literals without indexing and
# without Huffman (simple and enough for requests); the decoder reads
# everything a server may send, Huffman included.

STATIC_TABLE = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""),
    ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""), ("set-cookie", ""),
    ("strict-transport-security", ""), ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""),
    ("via", ""), ("www-authenticate", ""))
assert len(STATIC_TABLE) == 61

# RFC 7541 Appendix B is a canonical Huffman code: the bit length of each
# symbol 0..256 (256 = EOS) defines every code.
_HUFFMAN_LENGTHS = bytes.fromhex(
    "0d171c1c1c1c1c1c1c181e1c1c1e1c1c1c1c1c1c1c1c1e1c1c1c1c1c1c1c1c1c060a0a0c0d06080b0a0a080b08060606"
    "0505050606060606060607080f060c0a0d06070707070707070707070707070707070707070707070807080d130d0e06"
    "0f05060506050606060507070606060506070605050607070707070f0b0e0d1c141614141616161716171717171718"
    "171818161718171717171516171617171816151416161717151716161815161717151516151716171714161616171616"
    "171a1a1413161716191a1a1a1b1b1a181913151a1b1b1a1b1815151a1a1c1b1b1b1418141516151517161619191818"
    "1a171a1b1a1a1b1b1b1b1b1c1b1b1b1b1b1a1e")


def _huffman_codes() -> dict[tuple[int, int], int]:
    order = sorted(range(257), key=lambda s: (_HUFFMAN_LENGTHS[s], s))
    codes: dict[tuple[int, int], int] = {}
    code, prev = 0, _HUFFMAN_LENGTHS[order[0]]
    for i, sym in enumerate(order):
        n = _HUFFMAN_LENGTHS[sym]
        if i:
            code = (code + 1) << (n - prev)
        prev = n
        codes[(n, code)] = sym
    return codes


HUFFMAN = _huffman_codes()
HUFFMAN_BY_SYMBOL = {sym: (code, n) for (n, code), sym in HUFFMAN.items()}
assert HUFFMAN_BY_SYMBOL[ord("a")] == (0x3, 5) and HUFFMAN_BY_SYMBOL[256] == (0x3fffffff, 30)


class HpackError(Exception):
    pass


def huffman_decode(data: bytes) -> bytes:
    out = bytearray()
    code = n = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            n += 1
            sym = HUFFMAN.get((n, code))
            if sym is not None:
                if sym == 256:
                    raise HpackError("EOS in a Huffman string")
                out.append(sym)
                code = n = 0
    if n > 7 or code != (1 << n) - 1:
        raise HpackError("bad Huffman padding")
    return bytes(out)


def huffman_encode(data: bytes) -> bytes:
    bits = nbits = 0
    for b in data:
        code, n = HUFFMAN_BY_SYMBOL[b]
        bits = (bits << n) | code
        nbits += n
    pad = -nbits % 8
    bits = (bits << pad) | ((1 << pad) - 1)
    return (bits).to_bytes((nbits + pad) // 8, "big")


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    top = (1 << prefix_bits) - 1
    if value < top:
        return bytes([first | value])
    out = bytearray([first | top])
    value -= top
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s: bytes, huffman: bool = False) -> bytes:
    if huffman:
        s = huffman_encode(s)
    return hpack_int(len(s), 7, 0x80 if huffman else 0) + s


def hpack_encode(headers: Iterable[tuple[str, str | bytes]], huffman: bool = False) -> bytes:
    """Literal header fields without indexing, new names (0x00)."""
    out = bytearray()
    for name, value in headers:
        v = value if isinstance(value, bytes) else value.encode("latin-1")
        out += b"\x00" + hpack_string(name.encode("latin-1"), huffman) + hpack_string(v, huffman)
    return bytes(out)


class HpackDecoder:
    def __init__(self) -> None:
        self.table: list[tuple[str, bytes]] = []   # dynamic table, newest first
        self.size = 0
        self.max_size = 4096

    def _get(self, index: int) -> tuple[str, bytes]:
        if index == 0:
            raise HpackError("index 0")
        if index <= 61:
            n, v = STATIC_TABLE[index - 1]
            return n, v.encode()
        try:
            return self.table[index - 62]
        except IndexError:
            raise HpackError(f"index {index} out of range") from None

    def _add(self, name: str, value: bytes) -> None:
        self.table.insert(0, (name, value))
        self.size += len(name) + len(value) + 32
        while self.size > self.max_size:
            n, v = self.table.pop()
            self.size -= len(n) + len(v) + 32

    @staticmethod
    def _int(block: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        top = (1 << prefix_bits) - 1
        value = block[pos] & top
        pos += 1
        if value < top:
            return value, pos
        shift = 0
        while True:
            b = block[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos

    def _str(self, block: bytes, pos: int) -> tuple[bytes, int]:
        huff = block[pos] & 0x80
        n, pos = self._int(block, pos, 7)
        raw = block[pos:pos + n]
        return (huffman_decode(raw) if huff else raw), pos + n

    def decode(self, block: bytes) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        pos = 0
        while pos < len(block):
            b = block[pos]
            if b & 0x80:
                i, pos = self._int(block, pos, 7)
                out.append(self._get(i))
                continue
            if b & 0xE0 == 0x20:
                self.max_size, pos = self._int(block, pos, 5)
                continue
            incremental = b & 0xC0 == 0x40
            i, pos = self._int(block, pos, 6 if incremental else 4)
            if i:
                name = self._get(i)[0]
            else:
                raw, pos = self._str(block, pos)
                name = raw.decode("latin-1")
            value, pos = self._str(block, pos)
            if incremental:
                self._add(name, value)
            out.append((name, value))
        return out


def request_headers(path: str, port: int = 0, timeout: str | None = None,
                    metadata: Iterable[tuple[str, str | bytes]] = ()) -> list[tuple[str, str | bytes]]:
    h: list[tuple[str, str | bytes]] = [
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", f"{HOST}:{port}"),
        ("content-type", "application/grpc"), ("te", "trailers")]
    if timeout:
        h.append(("grpc-timeout", timeout))
    h.extend(metadata)
    return h


class Frame(NamedTuple):
    type: int
    flags: int
    sid: int
    payload: bytes

    def __repr__(self) -> str:
        return f"{FRAME_NAMES.get(self.type, self.type)}(flags={self.flags:#x}, sid={self.sid}, {len(self.payload)}B)"

    @property
    def error_code(self) -> int:
        """GOAWAY's or RST_STREAM's error code."""
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        return struct.unpack(">I", self.payload[:4])[0]


class Response(NamedTuple):
    headers: list[tuple[str, bytes]]          # the first HEADERS block
    messages: list[bytes]                     # gRPC messages (prefix removed)
    trailers: list[tuple[str, bytes]] | None  # None when the response was trailers-only
    rst: int | None                           # RST_STREAM code, if the stream was reset

    def get(self, name: str) -> str | None:
        for n, v in (self.trailers if self.trailers is not None else self.headers):
            if n == name:
                return v.decode("latin-1")
        return None

    @property
    def status(self) -> int | None:
        s = self.get("grpc-status")
        return None if s is None else int(s)

    @property
    def message(self) -> str | None:
        m = self.get("grpc-message")
        return None if m is None else urllib.parse.unquote(m, errors="strict")


class Closed(Exception):
    """The server closed the connection."""


class RawH2:
    """One HTTP/2 connection, frame by frame, for tests. Every read has a
    deadline; SETTINGS and PING from the server are acknowledged as they
    arrive; frames of other streams are kept for later reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = HpackDecoder()
        self.server_settings: dict[int, int] = {}
        self.goaway: Frame | None = None
        self.backlog: list[Frame] = []
        self.eof = False
        self.preface_sent = False    # no SETTINGS ACK before our preface: it would be garbage
        self.reset = False           # the server's close came as a TCP RST
        self.conn_window = 65535     # what we may still send (RFC 9113 6.9)
        self.stream_windows: dict[int, int] = {}

    @classmethod
    async def connect(cls, port: int, *, preface: bool = True,
                      settings: Iterable[tuple[int, int]] = (), ssl=None) -> "RawH2":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, ssl=ssl, server_hostname=HOST if ssl else None), 5)
        c = cls(reader, writer)
        if preface:
            c.send(PREFACE + settings_frame(settings))
            c.preface_sent = True
        return c

    @property
    def local_port(self) -> int:
        return self.writer.get_extra_info("sockname")[1]

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    async def _read_raw(self, timeout: float) -> Frame | None:
        """The next frame, None on EOF; TimeoutError after `timeout`."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(9), timeout)
            length = int.from_bytes(head[:3], "big")
            ftype, flags, sid = struct.unpack(">BBI", head[3:])
            payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            self.eof = True
            self.reset = isinstance(e, ConnectionResetError)
            return None
        f = Frame(ftype, flags, sid & 0x7FFFFFFF, payload)
        if f.type == WINDOW_UPDATE and len(payload) == 4:
            inc = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
            if f.sid == 0:
                self.conn_window += inc
            else:
                self.stream_windows[f.sid] = self.stream_window(f.sid) + inc
        if f.type == SETTINGS and not f.flags & FLAG_ACK:
            for i in range(0, len(payload) - 5, 6):
                k, v = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[k] = v
            if self.preface_sent:
                self.send(settings_frame(ack=True))
        elif f.type == PING and not f.flags & FLAG_ACK and self.preface_sent:
            self.send(frame(PING, FLAG_ACK, 0, payload))
        elif f.type == GOAWAY:
            self.goaway = f
        return f

    def stream_window(self, sid: int) -> int:
        return self.stream_windows.get(sid, self.server_settings.get(4, 65535))

    async def send_data(self, sid: int, data: bytes, end_stream: bool = False, *,
                        stream_flow: bool = True, timeout: float = 5.0) -> None:
        """DATA frames of at most 16 KiB, each sent only when the windows
        allow it (waiting for the server's WINDOW_UPDATEs, with a deadline);
        stream_flow=False: only the connection window counts."""
        loop = asyncio.get_running_loop()
        pos = 0
        while True:
            piece = data[pos:pos + 16384]
            deadline = loop.time() + timeout
            while len(piece) > min(self.conn_window, self.stream_window(sid) if stream_flow else 1 << 31):
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"no flow-control credit within {timeout}s (connection window "
                                       f"{self.conn_window}, stream {sid} window {self.stream_window(sid)})")
                f = await self._read_raw(left)
                if f is None:
                    raise Closed(f"closed while waiting for credit (goaway={self.goaway})")
                if f.type not in (WINDOW_UPDATE, SETTINGS, PING):
                    self.backlog.append(f)
            self.conn_window -= len(piece)
            self.stream_windows[sid] = self.stream_window(sid) - len(piece)
            pos += len(piece)
            last = pos >= len(data)
            self.send(frame(DATA, FLAG_END_STREAM if last and end_stream else 0, sid, piece))
            if last:
                return
            if pos % (256 << 10) == 0:
                await self.writer.drain()

    async def read_frame(self, timeout: float = 5.0) -> Frame | None:
        if self.backlog:
            return self.backlog.pop(0)
        return await self._read_raw(timeout)

    async def handshake(self, timeout: float = 5.0) -> None:
        """Until the server's SETTINGS arrived (acked by _read_raw)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            f = await self._read_raw(max(0.01, deadline - loop.time()))
            if f is None:
                raise Closed("closed during the handshake")
            if f.type == SETTINGS and not f.flags & FLAG_ACK:
                return
            if f.type not in (SETTINGS, WINDOW_UPDATE, PING):
                self.backlog.append(f)

    async def sync(self, timeout: float = 5.0) -> None:
        """A PING round trip: the server has read everything sent before."""
        token = os.urandom(8)
        self.send(frame(PING, 0, 0, token))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            f = await self._read_raw(max(0.0, deadline - loop.time()))
            if f is None:
                raise Closed(f"closed before the PING ACK (goaway={self.goaway})")
            if f.type == PING and f.flags & FLAG_ACK and f.payload == token:
                return
            if f.type not in (SETTINGS, WINDOW_UPDATE, PING):
                self.backlog.append(f)

    def headers(self, sid: int, headers, end_stream: bool = False, end_headers: bool = True) -> None:
        flags = (FLAG_END_STREAM if end_stream else 0) | (FLAG_END_HEADERS if end_headers else 0)
        self.send(frame(HEADERS, flags, sid, hpack_encode(headers)))

    def call(self, sid: int, path: str, body: bytes = b"", *, timeout: str | None = None,
             metadata=(), raw_message: bytes | None = None, end_stream: bool = True) -> None:
        """A unary call's request: HEADERS, one DATA with the gRPC message."""
        self.headers(sid, request_headers(path, self.writer.get_extra_info("peername")[1], timeout, metadata))
        msg = grpc_message(body) if raw_message is None else raw_message
        self.send(frame(DATA, FLAG_END_STREAM if end_stream else 0, sid, msg))

    async def response(self, sid: int, timeout: float = 5.0) -> Response:
        """Read until stream `sid` ends (END_STREAM or RST_STREAM)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        headers: list[tuple[str, bytes]] | None = None
        trailers = None
        data = bytearray()
        block = bytearray()
        keep: list[Frame] = []
        pending = list(self.backlog)
        self.backlog.clear()
        try:
            while True:
                if pending:
                    f = pending.pop(0)
                else:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError(f"no end of stream {sid} within {timeout}s")
                    f = await self._read_raw(left)
                if f is None:
                    raise Closed(f"connection closed before stream {sid} ended (goaway={self.goaway})")
                if f.sid != sid or f.type in (SETTINGS, PING, GOAWAY):
                    if f.sid != 0 and f.sid != sid:
                        keep.append(f)
                    continue
                if f.type == RST_STREAM:
                    return Response(headers or [], _messages(data), trailers, f.error_code)
                if f.type == DATA:
                    data += _unpad(f)
                    if data:
                        self.send(window_update(0, len(f.payload)) + window_update(sid, len(f.payload)))
                elif f.type in (HEADERS, CONTINUATION):
                    block += _unpad(f) if f.type == HEADERS else f.payload
                    if not f.flags & FLAG_END_HEADERS:
                        continue
                    decoded = self.decoder.decode(bytes(block))
                    block.clear()
                    if headers is None:
                        headers = decoded
                    else:
                        trailers = decoded
                if f.flags & FLAG_END_STREAM and f.type in (DATA, HEADERS, CONTINUATION) and not block:
                    if headers is not None and trailers is None and not data and \
                            any(n == "grpc-status" for n, _ in headers):
                        return Response(headers, [], None, None)
                    return Response(headers or [], _messages(data), trailers, None)
        finally:
            self.backlog[:0] = keep

    async def until_closed(self, timeout: float = 5.0) -> list[Frame]:
        """Every frame until the server closes the connection; TimeoutError
        if it is still open after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        frames = list(self.backlog)
        self.backlog.clear()
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"connection still open after {timeout}s; frames: {frames[-5:]}")
            f = await self._read_raw(left)
            if f is None:
                return frames
            frames.append(f)

    async def expect_goaway(self, timeout: float = 5.0) -> Frame:
        """Read until a GOAWAY arrives (then the connection may close)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = []
        while self.goaway is None:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no GOAWAY within {timeout}s; frames: {seen[-5:]}")
            f = await self._read_raw(left)
            if f is None:
                raise Closed(f"closed without GOAWAY; frames: {seen[-5:]}")
            seen.append(f)
        return self.goaway


def _unpad(f: Frame) -> bytes:
    p = f.payload
    start = 0
    end = len(p)
    if f.flags & FLAG_PADDED:
        end -= p[0]
        start = 1
    if f.type == HEADERS and f.flags & FLAG_PRIORITY:
        start += 5
    return p[start:end]


def _messages(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos + 5 <= len(data):
        n = int.from_bytes(data[pos + 1:pos + 5], "big")
        out.append(bytes(data[pos + 5:pos + 5 + n]))
        pos += 5 + n
    return out


def b64_bin(value: bytes) -> str:
    return base64.b64encode(value).decode().rstrip("=")


RANGE = "/etcdserverpb.KV/Range"


def range_body(key: bytes, **kw) -> bytes:
    return rpc_pb2.RangeRequest(key=key, **kw).SerializeToString()


async def healthy(port: int, key: bytes = b"still-alive", tls_channel=None) -> None:
    """A well-behaved grpc.aio client on a fresh connection gets its answer."""
    ch = tls_channel or grpc.aio.insecure_channel(f"{HOST}:{port}")
    async with ch:
        r = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=key), timeout=5)
    assert r.kvs[0].key == key
