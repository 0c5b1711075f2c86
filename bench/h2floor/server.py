"""h2floor: a minimal gRPC server (unary calls only) on plain asyncio.

A prototype for issue 11: how much server CPU an etcd-API unary call costs
when the HTTP/2 + gRPC framing is written by hand on asyncio.Protocol
instead of going through grpc.aio. Not used by raftnode.

What it does (server side of RFC 9113 + the gRPC-over-HTTP/2 wire):
  * connection preface, SETTINGS (ours first; theirs applied and ACKed),
    PING ACK, WINDOW_UPDATE both ways (we return credit for all received
    DATA; we respect the client's connection and stream windows and its
    MAX_FRAME_SIZE for what we send, queueing what does not fit), HEADERS +
    CONTINUATION, PADDED/PRIORITY flags, DATA carrying 5-byte
    length-prefixed gRPC messages, RST_STREAM, GOAWAY (both ways, with the
    last stream id), a request size limit (RESOURCE_EXHAUSTED).
  * response = HEADERS(:status 200, content-type application/grpc) + DATA +
    trailing HEADERS(grpc-status) with END_STREAM, built as one bytes
    object; errors as trailers-only responses with grpc-status and a
    percent-encoded grpc-message.
  * grpc-timeout parsed; an asynchronous handler that outlives it is
    cancelled with DEADLINE_EXCEEDED. Metadata is handed to handlers
    (ctx.invocation_metadata(), e.g. etcd's "token").
  * handlers: plain functions (answered inside data_received, no Task), an
    asyncio.Future (answered from its done callback), or coroutines (a Task
    per call).

Knobs (Server(..., hpack_lib=, cache=, coalesce=)) switch the fast paths
off one by one for the measurement in bench/bench_h2_floor.py:
  hpack_lib: decode requests and encode responses with the `hpack` package
             (stateful encoder, per response) instead of our own codec (engine/transport/h2/hpack.py);
  cache:     remember the decoding of header blocks that did not change the
             dynamic table, keyed by (table generation, block bytes);
  coalesce:  one transport.write per data_received for all responses it
             produced (otherwise one write per response).

TLS: Server.start(..., ssl=tls_context(cert, key, client_ca)) (ALPN h2,
client certificates required when client_ca is given).

Not done: streaming RPCs, compression, keepalive pings from our side and
ping-rate policing, a MAX_CONCURRENT_STREAMS limit, write-buffer
back-pressure (pause_reading when the client stops reading), a two-step
graceful GOAWAY, "-bin" metadata decoding.
"""
from __future__ import annotations

import asyncio
import struct
import urllib.parse

from engine.transport.h2 import hpack as hpack_lite   # the production codec (it began here)

MAX_HEADER_LIST = 65536


def _decode_bounded(dec, block: bytes):
    """The header list; too large is a connection error here, as it was in
    the prototype (the production server refuses the stream instead)."""
    fields = dec.decode(block, MAX_HEADER_LIST)
    if dec.list_size > MAX_HEADER_LIST:
        raise hpack_lite.HPACKError("header list too large")
    return fields

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# flags
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9

# gRPC status codes used here
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 12, 13, 14

FH = struct.Struct(">BHBBL")          # frame header: length (hi byte, lo 16 bits), type, flags, stream
U32 = struct.Struct(">L")

OUR_MAX_FRAME = 16384                 # we never raise SETTINGS_MAX_FRAME_SIZE
OUR_STREAM_WINDOW = 4 << 20           # SETTINGS_INITIAL_WINDOW_SIZE we announce
OUR_CONN_WINDOW = 16 << 20            # connection window after our first WINDOW_UPDATE
OUR_MAX_HEADER_LIST = 16384
MAX_MESSAGE = 4 << 20                 # grpc's default receive limit

_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return FH.pack(n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def _settings_payload(pairs) -> bytes:
    return b"".join(struct.pack(">HL", k, v) for k, v in pairs)


SERVER_PREFACE = (
    frame(SETTINGS, 0, 0, _settings_payload([
        (0x4, OUR_STREAM_WINDOW),
        (0x6, OUR_MAX_HEADER_LIST),
    ]))
    + frame(WINDOW_UPDATE, 0, 0, U32.pack(OUR_CONN_WINDOW - 65535))
)
SETTINGS_ACK = frame(SETTINGS, ACK, 0)

# Stateless response header blocks (no dynamic table: reusable forever).
RESP_HEADERS = hpack_lite.encode([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS_OK = hpack_lite.encode([("grpc-status", "0")])
_HL, _TL = len(RESP_HEADERS), len(TRAILERS_OK)
# HEADERS frame + DATA frame header + gRPC message prefix, in one pack
HEAD = struct.Struct(f">BHBBL{_HL}sBHBBLBL")
# trailing HEADERS frame
TAIL = struct.Struct(f">BHBBL{_TL}s")


def _trailers(code: int, message: str) -> list[tuple[str, str]]:
    out = [("grpc-status", str(code))]
    if message:
        out.append(("grpc-message", urllib.parse.quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")))
    return out


def parse_timeout(v: str) -> float | None:
    try:
        return int(v[:-1]) * _UNITS[v[-1]]
    except (KeyError, ValueError, IndexError):
        return None


def tls_context(cert: str, key: str, client_ca: str | None = None):
    """Server TLS: the production server's (ALPN h2, TLS 1.2+, client
    certificates required and checked against client_ca when given)."""
    from engine.transport.h2.tls import server_ssl_context
    return server_ssl_context(cert, key, client_ca, False)


class GrpcError(Exception):
    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message


class Context:
    __slots__ = ("metadata", "deadline", "_proto", "sid")

    def __init__(self, metadata, deadline, proto, sid):
        self.metadata = metadata
        self.deadline = deadline
        self._proto = proto
        self.sid = sid

    def invocation_metadata(self):
        return self.metadata

    def time_remaining(self):
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self._proto.loop.time())

    def peer_cert(self):
        """The verified client certificate (ssl.getpeercert() dict) or None."""
        return self._proto.transport.get_extra_info("peercert")

    def peer(self):
        p = self._proto.transport.get_extra_info("peername")
        return f"ipv4:{p[0]}:{p[1]}" if p else ""


class _Stream:
    __slots__ = ("method", "meta", "timeout", "body", "window", "done", "task", "timer")

    def __init__(self, method, meta, timeout):
        self.method = method
        self.meta = meta
        self.timeout = timeout
        self.body = None          # bytes, then bytearray if more than one DATA frame
        self.window = 0           # WINDOW_UPDATE credit the client gave this stream
        self.done = False         # request fully received
        self.task = None
        self.timer = None


class Server:
    """handlers: {":path": (deserialize(bytes) -> request,
                            handler(request, ctx) -> response | Future | coroutine,
                            serialize(response) -> bytes)}"""

    def __init__(self, handlers, *, hpack_lib=False, cache=True, coalesce=True, max_message=MAX_MESSAGE):
        self.handlers = handlers
        self.hpack_lib = hpack_lib
        self.cache = cache and not hpack_lib
        self.coalesce = coalesce
        self.max_message = max_message
        self._server = None
        self.connections: set[H2Protocol] = set()

    async def start(self, host: str, port: int, ssl=None):
        """ssl: an ssl.SSLContext (see tls_context) or None for cleartext h2c."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: H2Protocol(self), host, port, reuse_address=True,
                                                ssl=ssl)
        return self._server

    async def stop(self):
        for c in list(self.connections):
            c.goaway(NO_ERROR, b"server stopping")
        self._server.close()
        await self._server.wait_closed()


class H2Protocol(asyncio.Protocol):
    def __init__(self, server: Server):
        self.server = server
        self.handlers = server.handlers
        self.loop = asyncio.get_event_loop()
        self.transport = None
        self._buf = b""
        self._preface = False
        self.streams: dict[int, _Stream] = {}
        self.last_sid = 0
        self._cont = None                      # (sid, flags, [block parts]) while CONTINUATIONs are due
        self.peer_initial = 65535              # client's SETTINGS_INITIAL_WINDOW_SIZE
        self.peer_max_frame = 16384
        self.out_conn = 65535                  # what we may still send on the connection
        self.in_consumed = 0                   # received DATA not yet credited back
        self._pending: list = []               # responses waiting for window: [sid, data, trailers]
        self._out: list[bytes] = []
        self._in_batch = False
        self._flush_scheduled = False
        self._closing = False
        self._goaway_in = False
        if server.hpack_lib:
            import hpack
            self._dec = hpack.Decoder()
            self._dec.max_header_list_size = 65536
            self._enc = hpack.Encoder()
            self._hpack_error = hpack.HPACKError
        else:
            self._dec = hpack_lite.Decoder()
            self._enc = None
        self._hcache: dict[bytes, tuple] = {}

    # -- connection -------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.selected_alpn_protocol() != "h2":
            # gRPC clients all offer h2; anything else is not for us.
            transport.close()
            return
        self.server.connections.add(self)
        transport.write(SERVER_PREFACE)

    def connection_lost(self, exc):
        self.server.connections.discard(self)
        for st in self.streams.values():
            if st.task is not None:
                st.task.cancel()
            if st.timer is not None:
                st.timer.cancel()
        self.streams.clear()
        self._pending.clear()

    def goaway(self, code: int, debug: bytes = b""):
        if self._closing:
            return
        self._closing = True
        self._emit(frame(GOAWAY, 0, 0, U32.pack(self.last_sid) + U32.pack(code) + debug))
        self._flush()
        if code != NO_ERROR or not self.streams:
            self.transport.close()

    # -- output -----------------------------------------------------------
    def _emit(self, data: bytes):
        if not self.server.coalesce:
            self.transport.write(data)
            return
        self._out.append(data)
        if not self._in_batch and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self):
        self._flush_scheduled = False
        out = self._out
        if out:
            self._out = []
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    # -- input ------------------------------------------------------------
    def data_received(self, data: bytes):
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        if not self._preface:
            if len(data) < 24:
                if not PREFACE.startswith(data):
                    self.transport.close()
                self._buf = data
                return
            if data[:24] != PREFACE:
                self.transport.close()
                return
            self._preface = True
            pos = 24
        end = len(data)
        self._in_batch = True
        try:
            unpack = FH.unpack_from
            while end - pos >= 9:
                hi, lo, ftype, flags, sid = unpack(data, pos)
                length = (hi << 16) | lo
                if length > OUR_MAX_FRAME:
                    self.goaway(FRAME_SIZE_ERROR, b"frame too large")
                    return
                if end - pos - 9 < length:
                    break
                start = pos + 9
                pos = start + length
                sid &= 0x7FFFFFFF
                if self._cont is not None and ftype != CONTINUATION:
                    self.goaway(PROTOCOL_ERROR, b"CONTINUATION expected")
                    return
                if ftype == DATA:
                    self._on_data(sid, flags, data, start, length)
                elif ftype == HEADERS:
                    payload = data[start:pos]
                    if flags & (PADDED | PRIO):
                        if flags & PADDED:
                            padlen = payload[0]
                            payload = payload[1:len(payload) - padlen]
                        if flags & PRIO:
                            payload = payload[5:]
                    if flags & END_HEADERS:
                        self._on_headers(sid, flags, payload)
                    else:
                        self._cont = (sid, flags, [payload])
                elif ftype == WINDOW_UPDATE:
                    self._on_window_update(sid, data[start:pos])
                elif ftype == PING:
                    if length != 8:
                        self.goaway(FRAME_SIZE_ERROR, b"PING")
                        return
                    if not flags & ACK:
                        self._emit(frame(PING, ACK, 0, data[start:pos]))
                elif ftype == SETTINGS:
                    if not flags & ACK:
                        self._on_settings(data[start:pos])
                elif ftype == CONTINUATION:
                    if self._cont is None or self._cont[0] != sid:
                        self.goaway(PROTOCOL_ERROR, b"unexpected CONTINUATION")
                        return
                    self._cont[2].append(data[start:pos])
                    if flags & END_HEADERS:
                        csid, cflags, parts = self._cont
                        self._cont = None
                        self._on_headers(csid, cflags, b"".join(parts))
                elif ftype == RST_STREAM:
                    self._on_rst(sid)
                elif ftype == GOAWAY:
                    self._goaway_in = True
                    if not self.streams:
                        self._flush()
                        self.transport.close()
                        return
                elif ftype == PUSH_PROMISE:
                    self.goaway(PROTOCOL_ERROR, b"PUSH_PROMISE from a client")
                    return
                # PRIORITY and unknown types: ignored
                if self._closing and self.transport.is_closing():
                    return
            if pos < end:
                self._buf = data[pos:]
        except hpack_lite.HPACKError as e:
            self.goaway(COMPRESSION_ERROR, str(e).encode())
        finally:
            self._in_batch = False
            if self._out:
                self._flush()

    def _on_settings(self, payload: bytes):
        if len(payload) % 6:
            self.goaway(FRAME_SIZE_ERROR, b"SETTINGS")
            return
        for i in range(0, len(payload), 6):
            k, v = struct.unpack_from(">HL", payload, i)
            if k == 0x4:
                if v > 0x7FFFFFFF:
                    self.goaway(FLOW_CONTROL_ERROR, b"INITIAL_WINDOW_SIZE")
                    return
                self.peer_initial = v       # stream windows are peer_initial + credit - sent
            elif k == 0x5:
                if not 16384 <= v <= 0xFFFFFF:
                    self.goaway(PROTOCOL_ERROR, b"MAX_FRAME_SIZE")
                    return
                self.peer_max_frame = v
            # 0x1 HEADER_TABLE_SIZE: our encoding never uses the table.
            # 0x2 ENABLE_PUSH, 0x3 MAX_CONCURRENT_STREAMS, 0x6, 0xfe03: nothing to do.
        self._emit(SETTINGS_ACK)
        if self._pending:
            self._send_pending()

    def _on_window_update(self, sid: int, payload: bytes):
        inc = U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                self.goaway(PROTOCOL_ERROR, b"WINDOW_UPDATE 0")
                return
            self.out_conn += inc
        else:
            st = self.streams.get(sid)
            if st is not None:
                st.window += inc
        if self._pending:
            self._send_pending()

    def _on_rst(self, sid: int):
        st = self.streams.pop(sid, None)
        if st is None:
            return
        if st.task is not None:
            st.task.cancel()
        if st.timer is not None:
            st.timer.cancel()
        if self._pending:
            self._pending = [p for p in self._pending if p[0] != sid]
        self._maybe_close()

    def _maybe_close(self):
        if (self._goaway_in or self._closing) and not self.streams:
            self._flush()
            self.transport.close()

    # -- requests ---------------------------------------------------------
    def _on_headers(self, sid: int, flags: int, block: bytes):
        if sid in self.streams:
            # client trailers: not part of a unary call
            self._rst(sid, PROTOCOL_ERROR)
            return
        if not sid & 1 or sid <= self.last_sid:
            self.goaway(PROTOCOL_ERROR, b"bad stream id")
            return
        self.last_sid = sid
        req = None
        if self.server.cache:
            dec = self._dec
            hit = self._hcache.get(block)
            if hit is not None and hit[0] == dec.generation:
                req = hit[1]
            else:
                gen = dec.generation
                req = self._parse_headers(_decode_bounded(dec, block))
                if dec.generation == gen:
                    if len(self._hcache) > 256:
                        self._hcache.clear()
                    self._hcache[block] = (gen, req)
        elif self.server.hpack_lib:
            try:
                req = self._parse_headers(self._dec.decode(block))
            except self._hpack_error as e:
                raise hpack_lite.HPACKError(str(e)) from None
        else:
            req = self._parse_headers(_decode_bounded(self._dec, block))
        if self._closing:
            self._rst(sid, REFUSED_STREAM)
            return
        path, timeout, meta, error = req
        if error is not None:
            self._trailers_only(sid, *error)
            if not flags & END_STREAM:
                self._rst(sid, NO_ERROR)
            return
        method = self.handlers.get(path)
        if method is None:
            self._trailers_only(sid, UNIMPLEMENTED, f"unknown method {path}")
            if not flags & END_STREAM:
                self._rst(sid, NO_ERROR)
            return
        st = _Stream(method, meta, timeout)
        self.streams[sid] = st
        if flags & END_STREAM:
            st.done = True
            self._dispatch(sid, st)

    @staticmethod
    def _parse_headers(headers):
        """-> (path, timeout seconds or None, metadata tuple, error or None)"""
        path = None
        timeout = None
        method = None
        ctype = ""
        meta = []
        error = None
        for name, value in headers:
            if name[0] == ":":
                if name == ":path":
                    path = value
                elif name == ":method":
                    method = value
                continue
            if name == "content-type":
                ctype = value
            elif name == "grpc-timeout":
                timeout = parse_timeout(value)
            elif name == "grpc-encoding":
                if value != "identity":
                    meta.append((name, value))
            elif name in ("te", "user-agent", "grpc-accept-encoding", "accept-encoding"):
                continue
            else:
                meta.append((name, value))
        if method != "POST" or path is None:
            error = (INTERNAL, "not a gRPC request")
        elif not ctype.startswith("application/grpc"):
            error = (UNKNOWN, f"content-type {ctype!r}")
        return path, timeout, tuple(meta), error

    def _on_data(self, sid: int, flags: int, data: bytes, start: int, length: int):
        # Credit back everything received on the connection (padding too).
        self.in_consumed += length
        if self.in_consumed >= OUR_CONN_WINDOW // 4:
            self._emit(frame(WINDOW_UPDATE, 0, 0, U32.pack(self.in_consumed)))
            self.in_consumed = 0
        st = self.streams.get(sid)
        if st is None or st.done:
            if sid > self.last_sid:
                self.goaway(PROTOCOL_ERROR, b"DATA on an idle stream")
            return
        end = start + length
        if flags & PADDED:
            padlen = data[start]
            start += 1
            end -= padlen
        chunk = data[start:end]
        body = st.body
        if body is None:
            st.body = chunk
        else:
            if type(body) is bytes:
                body = st.body = bytearray(body)
            body += chunk
            if len(body) > self.server.max_message + 5:
                self._trailers_only(sid, RESOURCE_EXHAUSTED, "request message larger than max")
                self._rst(sid, NO_ERROR)
                return
            # Large request: give the stream its credit back as it arrives,
            # half a window at a time.
            half = OUR_STREAM_WINDOW // 2
            if not flags & END_STREAM and (len(body) - length) // half != len(body) // half:
                self._emit(frame(WINDOW_UPDATE, 0, sid, U32.pack(half)))
        if flags & END_STREAM:
            st.done = True
            self._dispatch(sid, st)

    def _dispatch(self, sid: int, st: _Stream):
        body = st.body
        st.body = None
        if body is None or len(body) < 5:
            self._finish_error(sid, INTERNAL, "missing request message")
            return
        if body[0] != 0:
            self._finish_error(sid, UNIMPLEMENTED, "compressed requests are not supported")
            return
        n = int.from_bytes(body[1:5], "big")
        if n != len(body) - 5:
            self._finish_error(sid, INTERNAL, "a unary call carries exactly one message")
            return
        if n > self.server.max_message:
            self._finish_error(sid, RESOURCE_EXHAUSTED, "request message larger than max")
            return
        deser, handler, ser = st.method
        try:
            request = deser(body[5:])
        except Exception:
            self._finish_error(sid, INTERNAL, "cannot parse request")
            return
        deadline = None if st.timeout is None else self.loop.time() + st.timeout
        ctx = Context(st.meta, deadline, self, sid)
        try:
            result = handler(request, ctx)
        except GrpcError as e:
            self._finish_error(sid, e.code, e.message)
            return
        except Exception as e:
            self._finish_error(sid, UNKNOWN, f"{type(e).__name__}: {e}")
            return
        if isinstance(result, asyncio.Future):
            result.add_done_callback(lambda f, sid=sid, ser=ser: self._future_done(sid, ser, f))
            self._arm_deadline(sid, st, result)
        elif asyncio.iscoroutine(result):
            task = self.loop.create_task(result)
            st.task = task
            task.add_done_callback(lambda f, sid=sid, ser=ser: self._future_done(sid, ser, f))
            self._arm_deadline(sid, st, task)
        else:
            self._respond(sid, ser(result))

    def _arm_deadline(self, sid, st, fut):
        if st.timeout is not None:
            st.timer = self.loop.call_later(st.timeout, self._deadline, sid, fut)

    def _deadline(self, sid, fut):
        st = self.streams.get(sid)
        if st is None:
            return
        st.timer = None
        st.task = None
        fut.cancel()
        self._finish_error(sid, DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _future_done(self, sid, ser, fut):
        st = self.streams.get(sid)
        if st is None or fut.cancelled():
            return          # reset, timed out, or the connection is gone
        st.task = None
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        e = fut.exception()
        if e is None:
            try:
                payload = ser(fut.result())
            except Exception as e2:
                self._finish_error(sid, INTERNAL, f"cannot serialize response: {e2}")
                return
            self._respond(sid, payload)
        elif isinstance(e, GrpcError):
            self._finish_error(sid, e.code, e.message)
        else:
            self._finish_error(sid, UNKNOWN, f"{type(e).__name__}: {e}")

    # -- responses ----------------------------------------------------------
    def _respond(self, sid: int, payload: bytes):
        st = self.streams.pop(sid)
        n = len(payload) + 5
        if self.server.hpack_lib:
            enc = self._enc.encode
            h = enc([(":status", "200"), ("content-type", "application/grpc")])
            t = enc([("grpc-status", "0")])
            if n <= self.out_conn and n <= self.peer_initial + st.window and n <= self.peer_max_frame:
                self.out_conn -= n
                self._emit(frame(HEADERS, END_HEADERS, sid, h)
                           + FH.pack(n >> 16, n & 0xFFFF, DATA, 0, sid) + b"\0" + U32.pack(n - 5) + payload
                           + frame(HEADERS, END_HEADERS | END_STREAM, sid, t))
            else:
                self._emit(frame(HEADERS, END_HEADERS, sid, h))
                self._queue(sid, st, b"\0" + U32.pack(n - 5) + payload, frame(HEADERS, END_HEADERS | END_STREAM, sid, t))
        elif n <= self.out_conn and n <= self.peer_initial + st.window and n <= self.peer_max_frame:
            # The fast path: everything fits the windows and one frame.
            self.out_conn -= n
            self._emit(HEAD.pack(0, _HL, HEADERS, END_HEADERS, sid, RESP_HEADERS,
                                 n >> 16, n & 0xFFFF, DATA, 0, sid, 0, n - 5)
                       + payload + TAIL.pack(0, _TL, HEADERS, END_HEADERS | END_STREAM, sid, TRAILERS_OK))
        else:
            self._emit(frame(HEADERS, END_HEADERS, sid, RESP_HEADERS))
            self._queue(sid, st, b"\0" + U32.pack(n - 5) + payload,
                        frame(HEADERS, END_HEADERS | END_STREAM, sid, TRAILERS_OK))
        if self._goaway_in or self._closing:
            self._maybe_close()

    def _queue(self, sid, st, data, trailers):
        # Keep the stream's record so its WINDOW_UPDATEs still count.
        self.streams[sid] = st
        st.done = True
        self._pending.append([sid, st, memoryview(data), 0, trailers])
        self._send_pending()

    def _send_pending(self):
        keep = []
        for item in self._pending:
            sid, st, data, sent, trailers = item
            while sent < len(data):
                room = min(self.out_conn, self.peer_initial + st.window - sent, self.peer_max_frame, len(data) - sent)
                if room <= 0:
                    break
                self._emit(frame(DATA, 0, sid, bytes(data[sent:sent + room])))
                self.out_conn -= room
                sent += room
            item[3] = sent
            if sent < len(data):
                keep.append(item)
            else:
                self._emit(trailers)
                self.streams.pop(sid, None)
        self._pending = keep
        if self._goaway_in or self._closing:
            self._maybe_close()

    def _trailers_only(self, sid: int, code: int, message: str):
        headers = [(":status", "200"), ("content-type", "application/grpc")] + _trailers(code, message)
        block = self._enc.encode(headers) if self._enc is not None else hpack_lite.encode(headers)
        self._emit(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))

    def _finish_error(self, sid: int, code: int, message: str):
        st = self.streams.pop(sid, None)
        if st is not None and st.timer is not None:
            st.timer.cancel()
        self._trailers_only(sid, code, message)
        if st is not None and not st.done:
            self._rst(sid, NO_ERROR)
        if self._goaway_in or self._closing:
            self._maybe_close()

    def _rst(self, sid: int, code: int):
        self.streams.pop(sid, None)
        self._emit(frame(RST_STREAM, 0, sid, U32.pack(code)))


# -- the etcd methods the measurement uses -------------------------------------

def etcd_handlers(async_handlers: bool = False, filled_status: bool = False):
    """Status answers an empty StatusResponse (bench_grpc_floor's floor) or,
    with filled_status, one like a lone etcd member's (etcdctl's table
    printer needs the header)."""
    import sys
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from engine.proto import rpc_pb2

    def status(req, ctx):
        return rpc_pb2.StatusResponse()

    if filled_status:
        def status(req, ctx):
            return rpc_pb2.StatusResponse(
                header=rpc_pb2.ResponseHeader(cluster_id=0x1234, member_id=0x5678, revision=42, raft_term=3),
                version="3.4.23", dbSize=20480, leader=0x5678, raftIndex=50, raftTerm=3,
                raftAppliedIndex=50, dbSizeInUse=16384)

    def range_(req, ctx):
        return range_response(req)

    handlers = {
        "/etcdserverpb.Maintenance/Status": (rpc_pb2.StatusRequest.FromString, status,
                                             rpc_pb2.StatusResponse.SerializeToString),
        "/etcdserverpb.KV/Range": (rpc_pb2.RangeRequest.FromString, range_,
                                   rpc_pb2.RangeResponse.SerializeToString),
    }
    if async_handlers:
        async def astatus(req, ctx):
            return status(req, ctx)

        async def arange(req, ctx):
            return range_response(req)
        handlers["/etcdserverpb.Maintenance/Status"] = (rpc_pb2.StatusRequest.FromString, astatus,
                                                        rpc_pb2.StatusResponse.SerializeToString)
        handlers["/etcdserverpb.KV/Range"] = (rpc_pb2.RangeRequest.FromString, arange,
                                              rpc_pb2.RangeResponse.SerializeToString)
    return handlers


def range_response(req):
    from engine.proto import kv_pb2, rpc_pb2
    key = req.key or b"foo"
    return rpc_pb2.RangeResponse(
        header=rpc_pb2.ResponseHeader(cluster_id=0x1234, member_id=0x5678, revision=42, raft_term=3),
        kvs=[kv_pb2.KeyValue(key=key, value=b"bar", create_revision=7, mod_revision=42, version=3)],
        count=1)


def main(argv=None):
    """python -m bench.h2floor.server [PORT] [--hpack-lib] [--no-cache] [--no-coalesce] [--async]
    [--empty-status]"""
    import sys
    args = sys.argv[1:] if argv is None else argv
    port = int(next((a for a in args if a.isdigit()), "23790"))
    server = Server(etcd_handlers("--async" in args, "--empty-status" not in args), hpack_lib="--hpack-lib" in args,
                    cache="--no-cache" not in args, coalesce="--no-coalesce" not in args)

    async def run():
        await server.start("127.0.0.1", port)
        print(f"h2floor listening on 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
