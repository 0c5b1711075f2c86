"""One client connection: the server side of RFC 9113 on asyncio.Protocol.

Framing, stream states, flow control both ways and the hostile-input limits
live here; what a call does with its stream is engine/transport/h2/call.py.

Fast paths (measured with the bench/h2floor prototype, bench/bench_h2_floor.py): header blocks are
decoded by our own HPACK decoder and a block that left the dynamic table
unchanged is decoded once (keyed by the table's generation and the block
bytes); responses use stateless precomputed header blocks (never the
client's dynamic table), a whole unary response is one struct.pack; all
output produced while handling one data_received goes out in one
transport.write, output produced later (tasks) in one call_soon flush.

Flow control, receiving: the connection window is credited back as DATA
arrives while this connection's unread messages stay under
CONN_BUFFER_CAP; a stream's window only as its handler reads messages
(partial-message bytes are credited at once, so a message larger than the
window can still arrive). A slow reader therefore pushes back on its client
and memory per stream stays within a window plus one message.
Sending: the client's connection and stream windows and MAX_FRAME_SIZE are
respected (queued per stream; write() waits), and when the transport's
buffer is full (pause_writing) writes wait and we stop reading the client's
requests until it drains.
"""
from __future__ import annotations

import asyncio
import logging
from time import perf_counter

from . import hpack
from .call import EAGER_BUDGET, Stream, drive
from .context import ServicerContext
from .frames import (ACK, CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, END_HEADERS, END_STREAM,
                     ENHANCE_YOUR_CALM, FH, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY, HEADERS, MAX_WINDOW,
                     NO_ERROR, OUR_MAX_FRAME, PADDED, PING, PREFACE, PRIO, PRIORITY, PROTOCOL_ERROR, PUSH_PROMISE,
                     REFUSED_STREAM, RST_STREAM, S_ENABLE_PUSH, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, SETTING,
                     SETTINGS, SETTINGS_ACK, STREAM_CLOSED, U32, WINDOW_UPDATE, frame, goaway_frame, rst_frame,
                     window_update_frame)
from .status import (DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, RESP_BLOCK, RESPONSE_HEADERS, UNIMPLEMENTED,
                     metadata_pairs, trailer_pairs, unary_head, unary_tail)
from . import tls
from .headers import MALFORMED, parse_request

log = logging.getLogger(__name__)

# No grpc-accept-encoding is announced, so a client should not compress.
_COMPRESSED = (UNIMPLEMENTED, "compressed messages are not supported")
# ... and the gRPC spec's (and grpc C-core's) answer when no grpc-encoding was named at all.
_COMPRESSED_UNNAMED = (INTERNAL, "Compression bit set but no encoding configured")

OUR_STREAM_WINDOW = 1 << 20           # SETTINGS_INITIAL_WINDOW_SIZE we announce
OUR_CONN_WINDOW = 16 << 20            # connection window after our first WINDOW_UPDATE
CONN_BUFFER_CAP = 64 << 20            # request bytes held per connection (unread messages and partial
                                      # ones) before we stop crediting the connection window; at least
                                      # 8 maximal messages (H2Server.conn_buffer_cap)
MAX_CACHED_BLOCK = 1024               # header blocks this long or longer are not cached (grpc's are ~10-100 bytes)
MAX_HEADER_BLOCK = 64 << 10           # HEADERS + CONTINUATIONs buffered before decoding (flood cap)
MAX_CONTINUATIONS = 64
MAX_OVERSIZED_BLOCKS = 100            # header lists over the limit per connection before GOAWAY
FLUSH_AT = 256 << 10                  # flush buffered output at once past this many bytes
RESET_BUDGET = 1000                   # client resets of live streams allowed in a burst ...
RESET_REFILL = 200.0                  # ... refilled at this many per second (rapid reset, CVE-2023-44487)
LINGER = 1.0                          # after a connection error: seconds we read and discard before closing
RECENT_RESETS = 256                   # stream ids we reset whose late frames are ignored, not errors
YIELD_EVERY = 64 << 10                # streamed bytes written without suspending before write() yields
YIELD_MESSAGE_COST = 1024             # ... a message counting at least this much (many small events)
EARLY_STATUS_DELAY = 0.01             # seconds an early status waits for the client's first message


class H2Connection(asyncio.Protocol):
    def __init__(self, server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport = None
        self.peer = ""
        self._auth = None
        self._buf = b""
        self._preface = False          # client preface read
        self._settings_seen = False    # its first frame must be SETTINGS
        self.streams: dict[int, Stream] = {}
        self.last_sid = 0
        self._cont = None              # [sid, flags, parts, size, count] while CONTINUATIONs are due
        self.peer_initial = 65535      # client's SETTINGS_INITIAL_WINDOW_SIZE
        self.peer_max_frame = 16384
        self.out_conn = 65535          # what we may still send on the connection
        self.in_conn = OUR_CONN_WINDOW  # what the client may still send on the connection
        self.in_owed = 0               # connection credit not yet given back
        self.buffered = 0              # received message bytes not yet read by handlers
        self.blocked: dict[int, Stream] = {}   # streams with output waiting for window
        self._out: list[bytes] = []
        self._out_size = 0
        self._in_batch = False
        self._flush_scheduled = False
        self.write_paused = False
        self._paused_writers: list = []
        self.goaway_sent = False
        self._goaway_in = False
        self._closed = False
        self._dec = hpack.Decoder()
        self._hcache: dict[bytes, tuple] = {}
        self._resets = float(RESET_BUDGET)
        self._reset_time = 0.0
        self._ping_strikes = 0
        self._last_ping = None
        self._handshake_timer = None
        self._dead = False             # a connection error was sent: input is discarded
        self._unyielded = 0            # see owes_yield
        self._pump_turn = 0
        self._oversized_blocks = 0     # header lists over the limit (strikes)
        self.eager_until = 0.0         # perf_counter() past which calls start as Tasks (call.drive)
        self._recent_resets: dict[int, None] = {}

    # -- connection ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.selected_alpn_protocol() != "h2":
            transport.close()          # gRPC clients all offer h2; nothing else is for us
            return
        if not server.admit(self):
            transport.close()
            return
        p = transport.get_extra_info("peername")
        if p:
            self.peer = f"ipv6:[{p[0]}]:{p[1]}" if ":" in p[0] else f"ipv4:{p[0]}:{p[1]}"
        self._handshake_timer = self.loop.call_later(server.handshake_timeout, self._handshake_expired)
        transport.write(server.preface_bytes)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self._settings_seen:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self._closed = True
        self.server.forget(self)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._end_all_streams()
        for fut in self._paused_writers:
            if not fut.done():
                fut.set_result(None)
        self._paused_writers.clear()

    def auth_context(self) -> dict:
        if self._auth is None:
            self._auth = tls.auth_context(self.transport.get_extra_info("ssl_object"))
        return self._auth

    def goaway(self, code: int, debug: bytes = b"") -> None:
        """Connection error (or the server stopping, code NO_ERROR): no new
        streams; on an error the connection ends now."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self._emit(goaway_frame(self.last_sid, code, debug))
        if code != NO_ERROR:
            self._linger_close()
        elif not self.streams:
            self._flush()
            self.transport.close()

    def _linger_close(self) -> None:
        """Close after a connection error so that the GOAWAY arrives: closing
        with the client's bytes unread makes the kernel send a TCP RST, and
        the client's kernel drops what we sent before it. So: send, shut our
        side, read and discard for up to LINGER seconds (or until EOF)."""
        if self._dead:
            return
        self._end_all_streams()
        self._flush()
        self._dead = True
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
        # abort, not close: close() waits for a client that does not read.
        self.loop.call_later(LINGER, transport.abort)
        if self.write_paused:
            transport.resume_reading()

    def eof_received(self):
        return False                   # close (a half-closed client sends nothing more)

    def abort_streams(self) -> None:
        """The server's grace period is over: cancel what still runs and close
        the connection, as grpc C-core does. No RST_STREAM(CANCEL): grpc-go
        reports that as Canceled, which clientv3 takes as final (a watch
        "canceled by the server"); a closed transport is UNAVAILABLE, and
        clients reconnect (to another member)."""
        self._end_all_streams()
        self._flush()
        self.transport.close()
        self.loop.call_later(LINGER, self.transport.abort)   # a client that does not read

    def evict(self) -> None:
        """Make room for a new connection (H2Server.admit): this one has no
        call in flight. GOAWAY, then close; abort if the client does not read."""
        self.goaway(NO_ERROR, b"too many connections")
        self._flush()
        self.transport.close()
        self.loop.call_later(LINGER, self.transport.abort)

    def _end_all_streams(self) -> None:
        for st in list(self.streams.values()):
            self._drop(st)
            self._cancelled(st)
        self.blocked.clear()

    # -- output ---------------------------------------------------------------------------
    def _emit(self, data: bytes) -> None:
        if self._dead:
            return                     # the GOAWAY of a connection error was the last frame
        self._out.append(data)
        self._out_size += len(data)
        if self._in_batch:
            return
        if self._out_size >= FLUSH_AT:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out and not self._closed:
            self._out = []
            self._out_size = 0
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def pause_writing(self) -> None:
        # The client does not read what we send: stop reading its requests too.
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self._closed:
            self.transport.resume_reading()
        waiters, self._paused_writers = self._paused_writers, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- input -------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._dead:
            return
        self.eager_until = perf_counter() + EAGER_BUDGET
        if self._buf:
            data = self._buf + data
            self._buf = b""
        pos = 0
        if not self._preface:
            if len(data) < 24:
                if not PREFACE.startswith(data):
                    self.transport.close()
                else:
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
                if not self._settings_seen:
                    if ftype != SETTINGS or flags & ACK:
                        self.goaway(PROTOCOL_ERROR, b"SETTINGS expected")
                        return
                    self._settings_seen = True
                    if self._handshake_timer is not None:
                        self._handshake_timer.cancel()
                        self._handshake_timer = None
                if ftype == DATA:
                    self._on_data(sid, flags, data, start, length)
                elif ftype == HEADERS:
                    self._on_headers_frame(sid, flags, data[start:pos])
                elif ftype == WINDOW_UPDATE:
                    self._on_window_update(sid, data[start:pos])
                elif ftype == PING:
                    self._on_ping(sid, flags, data[start:pos])
                elif ftype == SETTINGS:
                    self._on_settings(sid, flags, data[start:pos])
                elif ftype == CONTINUATION:
                    self._on_continuation(sid, flags, data[start:pos])
                elif ftype == RST_STREAM:
                    self._on_rst(sid, length)
                elif ftype == PRIORITY:
                    if sid == 0:
                        self.goaway(PROTOCOL_ERROR, b"PRIORITY on stream 0")
                    elif length != 5:
                        self._stream_error(sid, FRAME_SIZE_ERROR)
                elif ftype == GOAWAY:
                    if sid != 0:
                        self.goaway(PROTOCOL_ERROR, b"GOAWAY on a stream")
                    else:
                        self._goaway_in = True
                        if not self.streams:
                            self._flush()
                            self.transport.close()
                elif ftype == PUSH_PROMISE:
                    self.goaway(PROTOCOL_ERROR, b"PUSH_PROMISE from a client")
                # unknown frame types: ignored (RFC 9113 4.1, 5.5)
                if self._dead or self.transport.is_closing():
                    return
            if pos < end:
                self._buf = data[pos:]
        except hpack.HPACKError as e:
            self.goaway(COMPRESSION_ERROR, str(e).encode())
        finally:
            self._in_batch = False
            if self._out:
                self._flush()

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            self.goaway(PROTOCOL_ERROR, b"SETTINGS on a stream")
            return
        if flags & ACK:
            if payload:
                self.goaway(FRAME_SIZE_ERROR, b"SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            self.goaway(FRAME_SIZE_ERROR, b"SETTINGS")
            return
        initial = None
        for i in range(0, len(payload), 6):
            k, v = SETTING.unpack_from(payload, i)
            if k == S_INITIAL_WINDOW_SIZE:
                if v > MAX_WINDOW:
                    self.goaway(FLOW_CONTROL_ERROR, b"INITIAL_WINDOW_SIZE")
                    return
                initial = v
            elif k == S_MAX_FRAME_SIZE:
                if not 16384 <= v <= 0xFFFFFF:
                    self.goaway(PROTOCOL_ERROR, b"MAX_FRAME_SIZE")
                    return
                self.peer_max_frame = v
            elif k == S_ENABLE_PUSH and v > 1:
                self.goaway(PROTOCOL_ERROR, b"ENABLE_PUSH")
                return
            # HEADER_TABLE_SIZE: our encoding never uses the table; the rest: nothing to do.
        if initial is not None and initial != self.peer_initial:
            # Once per frame, whatever it repeats: each walk is over every stream.
            delta = initial - self.peer_initial
            self.peer_initial = initial
            for st in self.streams.values():
                st.swin += delta
                if st.swin > MAX_WINDOW:
                    self.goaway(FLOW_CONTROL_ERROR, b"stream window overflow")
                    return
        self._emit(SETTINGS_ACK)
        if self.blocked:
            self._pump_blocked()

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0:
            self.goaway(PROTOCOL_ERROR, b"PING on a stream")
            return
        if len(payload) != 8:
            self.goaway(FRAME_SIZE_ERROR, b"PING")
            return
        if flags & ACK:
            return
        server = self.server
        if server.max_ping_strikes:
            # grpc's policy (chttp2 ping_abuse_policy): pings closer than the
            # allowed interval are strikes; past max_ping_strikes, GOAWAY.
            # With 0 strikes allowed (raftnode) pings are never punished.
            now = self.loop.time()
            interval = server.min_ping_interval
            if not self.streams and not server.permit_without_calls:
                interval = 7200.0      # chttp2: an idle transport's pings, unless permitted
            if self._last_ping is not None and now - self._last_ping < interval:
                self._ping_strikes += 1
                if self._ping_strikes > server.max_ping_strikes:
                    self.goaway(ENHANCE_YOUR_CALM, b"too_many_pings")
                    return
            self._last_ping = now
        self._emit(frame(PING, ACK, 0, payload))

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            self.goaway(FRAME_SIZE_ERROR, b"WINDOW_UPDATE")
            return
        inc = U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                self.goaway(PROTOCOL_ERROR, b"WINDOW_UPDATE 0")
                return
            self.out_conn += inc
            if self.out_conn > MAX_WINDOW:
                self.goaway(FLOW_CONTROL_ERROR, b"connection window overflow")
                return
        else:
            st = self.streams.get(sid)
            if st is None:
                if sid > self.last_sid:
                    self.goaway(PROTOCOL_ERROR, b"WINDOW_UPDATE on an idle stream")
                return
            if inc == 0:
                self._stream_error(sid, PROTOCOL_ERROR)
                return
            st.swin += inc
            if st.swin > MAX_WINDOW:
                self._stream_error(sid, FLOW_CONTROL_ERROR)
                return
            if sid in self.blocked:
                self._pump(st)        # only this stream can have been unblocked
            return
        if self.blocked:
            self._pump_blocked()

    def _on_rst(self, sid: int, length: int) -> None:
        if length != 4:
            self.goaway(FRAME_SIZE_ERROR, b"RST_STREAM")
            return
        if sid == 0 or sid > self.last_sid:
            self.goaway(PROTOCOL_ERROR, b"RST_STREAM on an idle stream")
            return
        st = self.streams.get(sid)
        if st is None:
            return
        # Rapid reset: opening streams and resetting them at once makes us
        # start work the client never waits for. A token bucket bounds it.
        now = self.loop.time()
        self._resets = min(RESET_BUDGET, self._resets + (now - self._reset_time) * RESET_REFILL)
        self._reset_time = now
        self._resets -= 1
        self._drop(st)
        self._cancelled(st)
        if self._resets < 0:
            self.goaway(ENHANCE_YOUR_CALM, b"too many resets")
            return
        self._maybe_close()

    def _stream_error(self, sid: int, code: int) -> None:
        self._reset(sid, code)
        st = self.streams.get(sid)
        if st is not None:
            self._drop(st)
            self._cancelled(st)

    # -- headers -----------------------------------------------------------------------------
    def _on_headers_frame(self, sid: int, flags: int, payload: bytes) -> None:
        if flags & (PADDED | PRIO):
            if flags & PADDED:
                if not payload or payload[0] >= len(payload):
                    self.goaway(PROTOCOL_ERROR, b"bad padding")
                    return
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIO:
                if len(payload) < 5:
                    self.goaway(FRAME_SIZE_ERROR, b"HEADERS priority")
                    return
                payload = payload[5:]
        if sid == 0:
            self.goaway(PROTOCOL_ERROR, b"HEADERS on stream 0")
            return
        if flags & END_HEADERS:
            self._on_headers(sid, flags, payload)
        else:
            self._cont = [sid, flags, [payload], len(payload), 0]

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        cont = self._cont
        if cont is None or cont[0] != sid:
            self.goaway(PROTOCOL_ERROR, b"unexpected CONTINUATION")
            return
        cont[2].append(payload)
        cont[3] += len(payload)
        cont[4] += 1
        if cont[3] > MAX_HEADER_BLOCK or cont[4] > MAX_CONTINUATIONS:
            # Cannot be decoded in part (the HPACK table would go out of
            # sync), so the connection goes.
            self.goaway(ENHANCE_YOUR_CALM, b"header block too large")
            return
        if flags & END_HEADERS:
            self._cont = None
            self._on_headers(sid, cont[1], b"".join(cont[2]))

    def _decode(self, block: bytes):
        """-> (path, timeout, metadata, error, list size), cached by table state."""
        dec = self._dec
        hit = self._hcache.get(block)
        if hit is not None and hit[0] == dec.generation:
            return hit[1]
        gen = dec.generation
        limit = self.server.max_header_list
        fields = dec.decode(block, limit)
        if dec.list_size > limit:
            # Decoded for the table's sake only; not parsed. Repeated, it is
            # a way to burn our CPU: a few are allowed, then GOAWAY.
            self._oversized_blocks += 1
            return None, None, (), None, dec.list_size
        parsed = parse_request(fields) + (dec.list_size,)
        if dec.generation == gen and len(block) < MAX_CACHED_BLOCK:
            if len(self._hcache) > 256:
                self._hcache.clear()
            self._hcache[block] = (gen, parsed)
        return parsed

    def _on_headers(self, sid: int, flags: int, block: bytes) -> None:
        parsed = self._decode(block)     # always: keeps the HPACK table in sync
        st = self.streams.get(sid)
        if st is not None:
            # Trailers from the client: only END_STREAM matters.
            if st.deferred:
                self._send_deferred(st)
            elif st.remote_closed:
                self._stream_error(sid, STREAM_CLOSED)   # RFC 9113 5.1: half-closed (remote)
            elif not flags & END_STREAM:
                self._stream_error(sid, PROTOCOL_ERROR)
            else:
                self._remote_close(st)
            return
        if not sid & 1:
            self.goaway(PROTOCOL_ERROR, b"even stream id")
            return
        if sid <= self.last_sid:
            if sid in self._recent_resets:
                return                    # the client's frames crossed our RST_STREAM: ignore
            # RFC 9113 5.1.1: stream ids only grow; 5.1: a closed stream takes no HEADERS.
            self.goaway(PROTOCOL_ERROR, b"stream id not above the last one")
            return
        self.last_sid = sid
        server = self.server
        if self.goaway_sent or not server.serving or len(self.streams) >= server.max_concurrent_streams:
            self._reset(sid, REFUSED_STREAM)
            return
        path, timeout, meta, error, list_size = parsed
        if error is MALFORMED:
            self._reset(sid, PROTOCOL_ERROR)    # RFC 9113 8.1.1: a stream error, the handler never runs
            return
        if list_size > server.max_header_list:
            if self._oversized_blocks > MAX_OVERSIZED_BLOCKS:
                self.goaway(ENHANCE_YOUR_CALM, b"header lists over the limit")
                return
            error = (RESOURCE_EXHAUSTED, f"received metadata size exceeds limit ({list_size} vs. "
                                         f"{server.max_header_list})")
        if error is not None:
            self._refuse(sid, flags, *error)
            return
        handler = server.lookup(path)
        if handler is None and server.intercepted is None:
            self._refuse(sid, flags, UNIMPLEMENTED, "Method not found!")
            return
        deadline = None if timeout is None else self.loop.time() + timeout
        st = Stream(sid, path, meta, deadline, handler, self.peer_initial, OUR_STREAM_WINDOW)
        st.ctx = ServicerContext(st, self)
        self.streams[sid] = st
        if flags & END_STREAM:
            st.remote_closed = True
        # A unary request is dispatched when it is complete (the fast path:
        # no waiting); a streaming one (or one interceptors must look up) now.
        if st.remote_closed or handler is None or handler.request_streaming:
            st.dispatched = True
            drive(self, st)
        elif deadline is not None:
            # The request is not complete yet: its deadline runs meanwhile.
            st.timer = self.loop.call_at(deadline, self.deadline_passed, st)

    def _refuse(self, sid: int, flags: int, code: int, message: str) -> None:
        self._emit(self._headers(sid, END_STREAM, hpack.encode(RESPONSE_HEADERS + trailer_pairs(code, message, ()))))
        if not flags & END_STREAM:
            self._remember_reset(sid)     # no RST_STREAM: see _close

    def _reset(self, sid: int, code: int) -> None:
        """RST_STREAM for a stream the client may still be sending on; its
        late frames are then ignored rather than taken as errors."""
        self._emit(rst_frame(sid, code))
        self._remember_reset(sid)

    def _remember_reset(self, sid: int) -> None:
        recent = self._recent_resets
        recent[sid] = None
        if len(recent) > RECENT_RESETS:
            del recent[next(iter(recent))]

    # -- data --------------------------------------------------------------------------------
    def _on_data(self, sid: int, flags: int, data: bytes, start: int, length: int) -> None:
        if sid == 0:
            self.goaway(PROTOCOL_ERROR, b"DATA on stream 0")
            return
        self.in_conn -= length
        if self.in_conn < 0:
            self.goaway(FLOW_CONTROL_ERROR, b"connection window exceeded")
            return
        st = self.streams.get(sid)
        if st is None or st.remote_closed:
            self._credit_conn(length)    # discarded: never buffered
            if sid > self.last_sid:
                self.goaway(PROTOCOL_ERROR, b"DATA on an idle stream")
            elif st is not None:
                self._stream_error(sid, STREAM_CLOSED)
            return
        if st.deferred:
            self._credit_conn(length)
            self._send_deferred(st)
            return
        st.seen_data = True
        st.rwin -= length
        if st.rwin < 0:
            self._credit_conn(length)
            self._stream_error(sid, FLOW_CONTROL_ERROR)
            return
        end = start + length
        if flags & PADDED:
            if length == 0 or data[start] >= length:
                self.goaway(PROTOCOL_ERROR, b"bad padding")
                return
            end -= data[start]
            start += 1
        inbuf = st.inbuf
        before = st.queued + (len(inbuf) if inbuf is not None else 0)
        error = self._receive(st, data, start, end) if end > start else None
        inbuf = st.inbuf
        added = st.queued + (len(inbuf) if inbuf is not None else 0) - before
        self.buffered += added
        self.in_owed += length - added
        if error is not None:
            self.finish(st, *error)      # closing the stream credits what it had queued
            self._cancel_task(st)
            self._credit_conn(0)
            return
        self._credit_conn(0)
        # The stream's credit: everything but the complete messages not yet read.
        st.unacked += length
        if not flags & END_STREAM:
            self._credit_stream(st)
        else:
            self._remote_close(st)
        if st.msgs and st.reader is not None:
            self._wake_reader(st)

    def _receive(self, st: Stream, data: bytes, start: int, end: int):
        """Cut gRPC messages out of DATA bytes. -> None, or (code, message)
        to end the call with."""
        buf = st.inbuf
        if buf is None:
            # The usual case: whole messages in this frame, no copy of the buffer.
            pos = start
            max_recv = self.server.max_receive
            while end - pos >= 5:
                n = int.from_bytes(data[pos + 1:pos + 5], "big")
                if n > max_recv:
                    return self._too_large(n)
                if data[pos]:
                    return _compressed(st)
                if end - pos - 5 < n:
                    break
                st.msgs.append(data[pos + 5:pos + 5 + n])
                st.queued += n + 5
                pos += n + 5
            if pos < end:
                st.inbuf = bytearray(data[pos:end])
            return None
        buf += data[start:end]
        max_recv = self.server.max_receive
        while len(buf) >= 5:
            n = int.from_bytes(buf[1:5], "big")
            if n > max_recv:
                return self._too_large(n)
            if buf[0]:
                return _compressed(st)
            if len(buf) - 5 < n:
                break
            st.msgs.append(bytes(buf[5:5 + n]))
            st.queued += n + 5
            del buf[:5 + n]
        if not buf:
            st.inbuf = None
        return None

    def _too_large(self, n: int):
        return RESOURCE_EXHAUSTED, f"SERVER: Received message larger than max ({n} vs. {self.server.max_receive})"

    def _credit_conn(self, n: int) -> None:
        self.in_owed += n
        if self.in_owed >= OUR_CONN_WINDOW // 4 and self.buffered < self.server.conn_buffer_cap:
            self._emit(window_update_frame(0, self.in_owed))
            self.in_conn += self.in_owed
            self.in_owed = 0

    def _credit_stream(self, st: Stream) -> None:
        creditable = st.unacked - st.queued
        if creditable >= OUR_STREAM_WINDOW // 4:
            st.unacked -= creditable
            st.rwin += creditable
            self._emit(window_update_frame(st.sid, creditable))

    def _remote_close(self, st: Stream) -> None:
        st.remote_closed = True
        if not st.dispatched:
            st.dispatched = True
            drive(self, st)
        elif st.reader is not None:
            self._wake_reader(st)

    def _wake_reader(self, st: Stream) -> None:
        fut, st.reader = st.reader, None
        if not fut.done():
            fut.set_result(None)

    def wait_readable(self, st: Stream):
        fut = st.reader
        if fut is None:
            fut = st.reader = self.loop.create_future()
        return fut

    def take_message(self, st: Stream) -> bytes:
        raw = st.msgs.popleft()
        n = len(raw) + 5
        st.queued -= n
        self.buffered -= n
        if not st.remote_closed and not st.closed:
            self._credit_stream(st)
        self._credit_conn(n)
        return raw

    # -- sending -------------------------------------------------------------------------------
    def _wrote(self) -> None:
        """HEADERS or DATA went out: as grpc's chttp2 (ResetPingStrikes on
        write), a client's next ping is not a strike."""
        self._ping_strikes = 0
        self._last_ping = None

    def _headers(self, sid: int, flags: int, block: bytes) -> bytes:
        """A header block as HEADERS (+ CONTINUATIONs past the client's
        MAX_FRAME_SIZE: a long grpc-message or metadata must not be one
        oversized frame, which grpc-go answers by closing the connection)."""
        limit = self.peer_max_frame
        n = len(block)
        if n <= limit:
            return frame(HEADERS, flags | END_HEADERS, sid, block)
        parts = [frame(HEADERS, flags, sid, block[:limit])]
        for i in range(limit, n, limit):
            parts.append(frame(CONTINUATION, END_HEADERS if i + limit >= n else 0, sid, block[i:i + limit]))
        return b"".join(parts)

    def send_headers(self, st: Stream, metadata=()) -> None:
        self._wrote()
        st.headers_sent = True
        if metadata:
            block = hpack.encode(RESPONSE_HEADERS + metadata_pairs(metadata))
        else:
            block = RESP_BLOCK
        self._emit(self._headers(st.sid, 0, block))

    def send_message(self, st: Stream, payload: bytes):
        """Queue one response message; None when it went out (to the
        transport), else a future to wait on (windows, back-pressure)."""
        if st.closed or st.trailers is not None:
            return None               # the status is out or on its way (held or queued)
        if not st.headers_sent:
            self.send_headers(st)
        n = len(payload)
        if st.out is None:
            st.out = bytearray(b"\0" + n.to_bytes(4, "big"))
        else:
            st.out += b"\0" + n.to_bytes(4, "big")
        st.out += payload
        self._pump(st)
        if st.out or self.write_paused:
            if st.out:
                fut = st.writer = self.loop.create_future()
            else:
                fut = self.loop.create_future()
                self._paused_writers.append(fut)
            return fut
        return None

    def owes_yield(self, n: int) -> bool:
        """Count message bytes written without suspending; True (and reset)
        past YIELD_EVERY bytes or messages: time for the writer to yield."""
        self._unyielded += n + YIELD_MESSAGE_COST
        if self._unyielded >= YIELD_EVERY:
            self._unyielded = 0
            return True
        return False

    def respond_unary(self, st: Stream, payload: bytes) -> None:
        n = len(payload) + 5
        if (not st.headers_sent and n <= self.out_conn and n <= st.swin and n <= self.peer_max_frame
                and not st.closed):
            # The fast path: everything fits the windows and one frame.
            self.out_conn -= n
            st.headers_sent = True
            self._ping_strikes = 0
            self._last_ping = None
            self._emit(unary_head(st.sid, n - 5) + payload + unary_tail(st.sid))
            self._close(st)
            return
        self.send_message(st, payload)
        self.finish(st, 0, "", ())

    def _pump(self, st: Stream) -> None:
        out = st.out
        sid = st.sid
        while out:
            n = min(len(out), self.out_conn, st.swin, self.peer_max_frame)
            if n <= 0:
                self.blocked[sid] = st
                return
            self._emit(FH.pack(n >> 16, n & 0xFFFF, DATA, 0, sid) + bytes(out[:n]))
            self._ping_strikes = 0     # as _wrote()
            self._last_ping = None
            del out[:n]
            self.out_conn -= n
            st.swin -= n
        self.blocked.pop(sid, None)
        if st.trailers is not None:
            trailers, st.trailers = st.trailers, None
            self._emit(trailers)
            self._close(st)
        if st.writer is not None:
            fut, st.writer = st.writer, None
            if not fut.done():
                if self.write_paused:
                    self._paused_writers.append(fut)
                else:
                    fut.set_result(None)

    def _pump_blocked(self) -> None:
        """Connection window (or SETTINGS) changed: serve blocked streams,
        starting after the one served first last time (no stream starves)."""
        streams = list(self.blocked.values())
        k = self._pump_turn % len(streams)
        self._pump_turn += 1
        for st in streams[k:] + streams[:k]:
            if self.out_conn <= 0:
                break
            self._pump(st)

    def finish(self, st: Stream, code: int, details: str, trailing=(), defer: bool = True) -> None:
        """The call's status: trailers after whatever output is queued (or,
        when nothing was sent, a trailers-only response). Then the stream
        closes."""
        if st.closed or st.trailers is not None:
            return
        if st.timer is not None and not st.out:
            # (With output still queued for the client's window, the
            # deadline keeps running: see deadline_passed.)
            st.timer.cancel()
            st.timer = None
        pairs = trailer_pairs(code, details, trailing)
        self._wrote()
        if not st.headers_sent:
            st.headers_sent = True
            block = self._headers(st.sid, END_STREAM, hpack.encode(RESPONSE_HEADERS + pairs))
            if defer and not st.remote_closed and not st.seen_data:
                # A status before the client sent anything on its open stream
                # (a refusal by an interceptor or at the handler's start):
                # held until its first DATA arrives or EARLY_STATUS_DELAY
                # passes. grpc C-core clients fail a message write that
                # starts after the status arrived with INTERNAL "Internal
                # error from Core", which then replaces the real status;
                # grpc.aio servers are slow enough never to show it.
                st.trailers = block
                st.deferred = True
                st.timer = self.loop.call_later(EARLY_STATUS_DELAY, self._send_deferred, st)
                return
            self._emit(block)
            self._close(st)
            return
        if code == 0 and len(pairs) == 1:
            tail = unary_tail(st.sid)
        else:
            tail = self._headers(st.sid, END_STREAM, hpack.encode(pairs))
        # Queued output still goes first, even before an error status: trailers
        # in the middle of a message would read as a broken stream (grpc-go:
        # INTERNAL "unexpected EOF") instead of the status.
        if st.out:
            st.trailers = tail        # sent by _pump once the data is out
        else:
            self._emit(tail)
            self._close(st)

    def _send_deferred(self, st: Stream) -> None:
        if st.timer is not None:
            st.timer.cancel()
        st.timer = None
        if st.closed or not st.deferred:
            return
        st.deferred = False
        trailers, st.trailers = st.trailers, None
        self._emit(trailers)
        self._close(st)

    def _close(self, st: Stream) -> None:
        """The response is complete (sent or handed to the transport)."""
        if st.closed:
            return
        if not st.remote_closed:
            # No RST_STREAM(NO_ERROR) (RFC 9113 8.1 allows one): grpc C-core
            # clients then fail a write racing the status with INTERNAL
            # instead of reporting the status. The client's late frames are
            # ignored; its stream window bounds what it can still send.
            self._remember_reset(st.sid)
        self._drop(st)
        self._release(st)
        self._maybe_close()

    def _drop(self, st: Stream) -> None:
        st.closed = True
        self.streams.pop(st.sid, None)
        self.blocked.pop(st.sid, None)
        if st.timer is not None:
            st.timer.cancel()
            st.timer = None
        held = st.queued + (len(st.inbuf) if st.inbuf is not None else 0)
        if held:
            self.buffered -= held
            st.queued = 0
            st.inbuf = None
            self._credit_conn(held)
        st.msgs.clear()
        st.inbuf = None
        st.out = None
        if st.writer is not None:
            fut, st.writer = st.writer, None
            if not fut.done():
                fut.set_result(None)
        if st.reader is not None:
            # A helper task in read() (not the cancelled handler) sees EOF.
            self._wake_reader(st)

    def _cancelled(self, st: Stream) -> None:
        """The client reset the stream or went away: the handler is cancelled."""
        st.cancelled = True
        st.closed = True
        self._cancel_task(st)
        self._release(st)

    @staticmethod
    def _release(st: Stream) -> None:
        """The call is over: done callbacks, then the stream lets go of its
        context. Stream and context point at each other; left as a cycle,
        every call's objects would wait for the cyclic GC (and be promoted
        toward full collections over the member's whole heap)."""
        ctx = st.ctx
        if ctx is not None:
            st.ctx = None
            if ctx._callbacks:
                ctx._run_callbacks()

    def _cancel_task(self, st: Stream) -> None:
        task, st.task = st.task, None
        if task is not None:
            task.cancel()

    def _maybe_close(self) -> None:
        if (self._goaway_in or self.goaway_sent) and not self.streams and not self._closed:
            self._flush()
            self.transport.close()

    def deadline_passed(self, st: Stream) -> None:
        st.timer = None
        if st.closed:
            return
        if st.trailers is not None and not st.deferred:
            # The status waits behind output the client's window does not
            # admit: give up on the stream (its buffers go).
            self._stream_error(st.sid, CANCEL)
            return
        # Not held back (finish's defer): the handler is cancelled next, and
        # the status must be out before that.
        self.finish(st, DEADLINE_EXCEEDED, "Deadline Exceeded", defer=False)
        self._cancel_task(st)

    def handler_cancelled(self, st: Stream) -> None:
        """The handler's task was cancelled by us (deadline, stop) or it
        cancelled itself: a stream still open is reset."""
        st.task = None
        if not st.closed:
            st.cancelled = True
            self._reset(st.sid, CANCEL)
            self._drop(st)
            self._release(st)
            self._maybe_close()


def _compressed(st: Stream):
    named = any(k == "grpc-encoding" for k, _ in st.meta)
    return _COMPRESSED if named else _COMPRESSED_UNNAMED


__all__ = ["H2Connection"]
