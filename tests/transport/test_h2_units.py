"""Internals of engine/transport/h2 (the client port's HTTP/2 gRPC server):
HPACK, the wire helpers, the no-Task call driver, and one connection driven
frame by frame through a fake transport (no sockets, no timing), hostile
input included. End-to-end behaviour against real clients is in
test_h2_server.py / test_h2_hostile.py."""
from __future__ import annotations

import asyncio
import struct

import grpc
import pytest

from engine.transport.h2 import H2Server, hpack, status
from engine.transport.h2 import call as h2call
from engine.transport.h2.connection import H2Connection, OUR_STREAM_WINDOW, MAX_HEADER_BLOCK
from engine.transport.h2.frames import (ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM,
                                        FLOW_CONTROL_ERROR, GOAWAY, HEADERS, NO_ERROR, PING, PREFACE,
                                        PROTOCOL_ERROR, REFUSED_STREAM, RST_STREAM, SETTINGS, WINDOW_UPDATE,
                                        frame, settings_frame)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


# -- HPACK ----------------------------------------------------------------------------------

def test_hpack_decodes_rfc7541_huffman_example_c4():
    # RFC 7541 C.4.1: the first request, Huffman-coded.
    block = bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")
    d = hpack.Decoder()
    assert d.decode(block) == [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                               (":authority", "www.example.com")]
    assert d.dynamic == [(":authority", "www.example.com")] and d.size == 57
    # C.4.2: the second request refers to the dynamic table entry.
    assert d.decode(bytes.fromhex("828684be5886a8eb10649cbf"))[-1] == ("cache-control", "no-cache")


def test_hpack_bad_huffman_padding_and_bad_index_are_errors():
    d = hpack.Decoder()
    with pytest.raises(hpack.HPACKError):
        d.decode(bytes([0x40, 0x81, 0x00, 0x01, 0x61]))    # Huffman "name" padded with zeros
    with pytest.raises(hpack.HPACKError):
        hpack.Decoder().decode(bytes([0x80 | 70]))        # index past both tables
    with pytest.raises(hpack.HPACKError):
        hpack.Decoder().decode(bytes([0x3F, 0xE2, 0x1F]))  # table size 4097 > SETTINGS (4096)


def test_hpack_table_evicts_and_list_size_is_reported_not_raised():
    d = hpack.Decoder(max_table_size=100)
    big = "v" * 40
    enc = b"".join(bytes([0x40, len(f"k{i}")]) + f"k{i}".encode() + bytes([len(big)]) + big.encode()
                   for i in range(3))
    out = d.decode(enc)
    assert [n for n, _ in out] == ["k0", "k1", "k2"]
    assert d.dynamic == [("k2", big)]          # each entry 74 bytes: only the newest fits
    assert d.list_size == 3 * (2 + 40 + 32)


def test_hpack_stateless_encoder_round_trips():
    headers = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-message", "x" * 300),
               ("custom", "ü".encode("utf-8").decode("latin-1"))]
    d = hpack.Decoder()
    gen = d.generation
    assert d.decode(hpack.encode(headers)) == headers
    assert d.generation == gen                 # literals without indexing leave the table alone


# -- wire helpers ----------------------------------------------------------------------------

def test_timeout_parsing():
    assert status.parse_timeout("100m") == pytest.approx(0.1)
    assert status.parse_timeout("2S") == 2.0 and status.parse_timeout("1H") == 3600.0
    for bad in ("", "m", "123456789S", "1x", "-1S", "1.5S"):
        assert status.parse_timeout(bad) is None


def test_grpc_message_percent_encoding():
    assert status.percent_encode("bad key: 100% ünï\n") == "bad key: 100%25 %C3%BCn%C3%AF%0A"


def test_bin_metadata_both_ways():
    assert status.metadata_pairs([("X-Trace-Bin", b"\x00\x01\xff")]) == [("x-trace-bin", "AAH/")]
    assert status.decode_bin("AAH/") == b"\x00\x01\xff" and status.decode_bin("AAE") == b"\x00\x01"
    with pytest.raises(ValueError):
        status.decode_bin("!!!")


# -- the call driver -----------------------------------------------------------------------

class _FakeConn:
    eager_until = float("inf")

    def __init__(self, loop):
        self.loop = loop
        self.finished = []

    def deadline_passed(self, st):
        pass


def test_drive_runs_a_call_that_never_suspends_without_a_task(monkeypatch):
    async def main():
        conn = _FakeConn(asyncio.get_running_loop())
        st = h2call.Stream(1, "/x", (), None, None, 0, 0)
        ran = []

        async def never_waits(c, s):
            ran.append(asyncio.current_task())
        monkeypatch.setattr(h2call, "run_call", never_waits)
        h2call.drive(conn, st)
        assert len(ran) == 1 and st.task is None
    run(main())


def test_drive_starts_a_task_once_the_reads_budget_is_spent(monkeypatch):
    async def main():
        conn = _FakeConn(asyncio.get_running_loop())
        conn.eager_until = 0.0
        st = h2call.Stream(1, "/x", (), None, None, 0, 0)
        ran = []

        async def never_waits(c, s):
            ran.append(asyncio.current_task())
        monkeypatch.setattr(h2call, "run_call", never_waits)
        h2call.drive(conn, st)
        assert not ran and st.task is not None
        await st.task
        assert ran == [st.task]
    run(main())


def test_drive_hands_a_suspended_call_to_a_task_with_results_and_cancellation(monkeypatch):
    async def main():
        loop = asyncio.get_running_loop()
        conn = _FakeConn(loop)
        fut = loop.create_future()
        gate = loop.create_future()
        seen = []

        async def waits(c, s):
            seen.append(await fut)                 # suspends: becomes a Task
            seen.append(asyncio.current_task() is s.task)
            try:
                await gate
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
        monkeypatch.setattr(h2call, "run_call", waits)
        st = h2call.Stream(1, "/x", (), None, None, 0, 0)
        h2call.drive(conn, st)
        assert st.task is not None and not seen
        fut.set_result(42)
        while len(seen) < 2:
            await asyncio.sleep(0)
        st.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await st.task
        assert seen == [42, True, "cancelled"]
    run(main())


# -- one connection over a fake transport ------------------------------------------------

class FakeTransport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.data = bytearray()
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data):
        self.data += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.eof = True

    def abort(self):
        self.closed = True

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5555)}.get(name, default)


def frames_of(data: bytes):
    out, pos = [], 0
    while pos + 9 <= len(data):
        hi, lo, t, f, sid = struct.unpack_from(">BHBBL", data, pos)
        n = (hi << 16) | lo
        out.append((t, f, sid, bytes(data[pos + 9:pos + 9 + n])))
        pos += 9 + n
    return out


def request_block(path: str, extra=()) -> bytes:
    return hpack.encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                         (":authority", "x"), ("content-type", "application/grpc"), ("te", "trailers"),
                         *extra])


def grpc_msg(payload: bytes) -> bytes:
    return b"\0" + len(payload).to_bytes(4, "big") + payload


class Client:
    """A connection with a fake transport; feed() frames, read what came back."""

    def __init__(self, server: H2Server):
        self.conn = H2Connection(server)
        self.t = FakeTransport()
        self.conn.connection_made(self.t)
        self.conn.data_received(PREFACE + settings_frame([]))
        self.seen = 0

    def feed(self, *frames_: bytes) -> None:
        self.conn.data_received(b"".join(frames_))

    def new_frames(self):
        out = frames_of(self.t.data[self.seen:])
        self.seen = len(self.t.data)
        return out

    def headers_of(self, sid):
        d = hpack.Decoder()
        return [d.decode(p) for t, f, s, p in frames_of(self.t.data) if t == HEADERS and s == sid]


def make_server(handlers: dict, **options) -> H2Server:
    s = H2Server(options=list(options.items()))
    s.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
    s.loop = asyncio.get_running_loop()
    s.serving = True
    return s


def echo_handlers():
    async def echo(req, ctx):
        return req

    async def chat(it, ctx):
        async for m in it:
            await ctx.write(m)
    return {"Echo": grpc.unary_unary_rpc_method_handler(echo), "Chat": grpc.stream_stream_rpc_method_handler(chat)}


def test_unary_call_answered_inside_data_received_in_one_write():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.new_frames()
        writes_before = len(c.t.data)
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Echo")),
               frame(DATA, END_STREAM, 1, grpc_msg(b"hi")))
        got = c.new_frames()
        assert [(t, f) for t, f, s, p in got] == [(HEADERS, END_HEADERS), (DATA, 0),
                                                  (HEADERS, END_HEADERS | END_STREAM)]
        assert got[1][3] == grpc_msg(b"hi") and len(c.t.data) > writes_before
        assert c.headers_of(1)[1] == [("grpc-status", "0")]
        assert not c.conn.streams
    run(main())


def test_unknown_method_is_trailers_only_with_grpc_aio_text():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block("/t.S/Nope")))
        assert dict(c.headers_of(1)[0])["grpc-status"] == "12"
        assert dict(c.headers_of(1)[0])["grpc-message"] == "Method not found!"
    run(main())


def test_stream_credit_is_returned_only_as_the_handler_reads():
    async def main():
        gate = asyncio.Event()
        took = asyncio.Event()

        async def slow(it, ctx):
            async for m in it:
                took.set()
                await gate.wait()
            return b""
        c = Client(make_server({"Slow": grpc.stream_unary_rpc_method_handler(slow)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Slow")))
        chunk = grpc_msg(b"x" * 16000)
        n = OUR_STREAM_WINDOW // len(chunk)
        for _ in range(n):
            c.feed(frame(DATA, 0, 1, chunk))
        await took.wait()
        st = c.conn.streams[1]
        # The handler took one message and waits: the rest stay queued and
        # their stream credit is withheld (connection credit is not).
        assert not [f for f in c.new_frames() if f[0] == WINDOW_UPDATE and f[2] == 1]
        assert len(st.msgs) == n - 1
        c.feed(frame(DATA, 0, 1, chunk))          # over the window: a stream error
        assert (RST_STREAM, 1) in [(t, s) for t, f, s, p in c.new_frames()]
    run(main())


def test_header_list_over_the_limit_refuses_the_stream_but_keeps_the_connection():
    async def main():
        c = Client(make_server(echo_handlers(), **{"grpc.max_metadata_size": 1000}))
        big = request_block("/t.S/Echo", [("x-big", "v" * 2000)])
        c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, big))
        assert dict(c.headers_of(1)[0])["grpc-status"] == str(status.RESOURCE_EXHAUSTED)
        c.feed(frame(HEADERS, END_HEADERS, 3, request_block("/t.S/Echo")),
               frame(DATA, END_STREAM, 3, grpc_msg(b"ok")))
        assert c.headers_of(3)[-1] == [("grpc-status", "0")] and not c.t.closed
    run(main())


def ended(c: Client) -> bool:
    """Closed, or (after a connection error) our side shut and input discarded
    until the lingering close."""
    return c.t.closed or (c.t.eof and c.conn._dead)


def goaway_code(c: Client):
    codes = [struct.unpack(">LL", p[:8])[1] for t, f, s, p in frames_of(c.t.data) if t == GOAWAY]
    return codes[0] if codes else None


def test_continuation_flood_ends_the_connection():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.feed(frame(HEADERS, 0, 1, request_block("/t.S/Echo")))
        piece = b"\x00" * 16000
        for _ in range(MAX_HEADER_BLOCK // len(piece) + 1):
            if ended(c):
                break
            c.feed(frame(CONTINUATION, 0, 1, piece))
        assert ended(c) and goaway_code(c) == ENHANCE_YOUR_CALM
    run(main())


def test_empty_continuation_frames_are_capped_too():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.feed(frame(HEADERS, 0, 1, request_block("/t.S/Echo")))
        c.feed(*[frame(CONTINUATION, 0, 1, b"") for _ in range(1000)])
        assert ended(c) and goaway_code(c) == ENHANCE_YOUR_CALM
    run(main())


def test_window_overflow_is_a_flow_control_error():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.feed(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 0x7FFFFFFF)))
        assert ended(c) and goaway_code(c) == FLOW_CONTROL_ERROR
    run(main())


def test_unknown_frame_types_are_ignored_and_pings_answered():
    async def main():
        c = Client(make_server(echo_handlers(), **{"grpc.http2.max_ping_strikes": 0}))
        c.new_frames()
        c.feed(frame(0x42, 0xFF, 0, b"junk"), frame(0x0B, 0, 3, b"x" * 100))
        c.feed(*[frame(PING, 0, 0, b"12345678") for _ in range(50)])
        got = c.new_frames()
        assert [(t, f) for t, f, s, p in got] == [(PING, ACK)] * 50 and not c.t.closed
    run(main())


def test_ping_flood_gets_goaway_when_strikes_are_limited():
    async def main():
        c = Client(make_server(echo_handlers(), **{"grpc.http2.max_ping_strikes": 2}))
        c.feed(*[frame(PING, 0, 0, b"12345678") for _ in range(5)])
        assert ended(c) and goaway_code(c) == ENHANCE_YOUR_CALM
    run(main())


def test_rapid_reset_flood_gets_goaway():
    async def main():
        c = Client(make_server(echo_handlers()))
        sid = 1
        for _ in range(2000):
            if ended(c):
                break
            c.feed(frame(HEADERS, END_HEADERS, sid, request_block("/t.S/Chat")),
                   frame(RST_STREAM, 0, sid, struct.pack(">L", 8)))
            sid += 2
        assert ended(c) and goaway_code(c) == ENHANCE_YOUR_CALM
    run(main())


def test_streams_past_max_concurrent_are_refused():
    async def main():
        c = Client(make_server(echo_handlers(), **{"grpc.max_concurrent_streams": 2}))
        for sid in (1, 3, 5):
            c.feed(frame(HEADERS, END_HEADERS, sid, request_block("/t.S/Chat")))
        resets = [(s, struct.unpack(">L", p)[0]) for t, f, s, p in c.new_frames() if t == RST_STREAM]
        assert resets == [(5, REFUSED_STREAM)] and set(c.conn.streams) == {1, 3}
    run(main())


def test_bad_preface_and_frames_before_settings_close():
    async def main():
        server = make_server(echo_handlers())
        conn = H2Connection(server)
        t = FakeTransport()
        conn.connection_made(t)
        conn.data_received(b"GET / HTTP/1.1\r\n\r\n")
        assert t.closed
        c2 = H2Connection(server)
        t2 = FakeTransport()
        c2.connection_made(t2)
        c2.data_received(PREFACE + frame(PING, 0, 0, b"12345678"))
        assert t2.eof and c2._dead
        codes = [struct.unpack(">LL", p[:8])[1] for ty, f, s, p in frames_of(t2.data) if ty == GOAWAY]
        assert codes == [PROTOCOL_ERROR]
    run(main())


def test_client_reset_cancels_the_handler_and_marks_the_context():
    async def main():
        started = asyncio.Event()
        contexts = []

        async def hang(it, ctx):
            contexts.append(ctx)
            started.set()
            await asyncio.Event().wait()
        c = Client(make_server({"Hang": grpc.stream_stream_rpc_method_handler(hang)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Hang")))
        await started.wait()
        task = c.conn.streams[1].task
        c.feed(frame(RST_STREAM, 0, 1, struct.pack(">L", 8)))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert contexts[0].cancelled() and contexts[0].done() and not c.conn.streams
    run(main())


def test_goaway_after_responses_when_stopping():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.conn.goaway(NO_ERROR)
        assert ended(c) and goaway_code(c) == NO_ERROR
    run(main())


def test_malformed_requests_are_reset_and_the_connection_stays():
    async def main():
        c = Client(make_server(echo_handlers()))
        bad = [hpack.encode([(":method", "POST"), (":path", "/t.S/Echo"), ("X-Upper", "1"),
                             ("content-type", "application/grpc")]),
               request_block("/t.S/Echo", [("connection", "keep-alive")]),
               request_block("/t.S/Echo", [("te", "gzip")]),
               hpack.encode([("content-type", "application/grpc"), (":method", "POST"), (":path", "/t.S/Echo")])]
        for i, block in enumerate(bad):
            c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1 + 2 * i, block))
        resets = [(s, struct.unpack(">L", p)[0]) for t, f, s, p in c.new_frames() if t == RST_STREAM]
        assert resets == [(1, PROTOCOL_ERROR), (3, PROTOCOL_ERROR), (5, PROTOCOL_ERROR), (7, PROTOCOL_ERROR)]
        c.feed(frame(HEADERS, END_HEADERS, 9, request_block("/t.S/Echo")),
               frame(DATA, END_STREAM, 9, grpc_msg(b"ok")))
        assert c.headers_of(9)[-1] == [("grpc-status", "0")] and not ended(c)
    run(main())


def test_reused_stream_id_is_a_connection_error_but_frames_after_our_reset_are_not():
    async def main():
        c = Client(make_server(echo_handlers(), **{"grpc.max_concurrent_streams": 1}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Chat")),
               frame(HEADERS, END_HEADERS, 3, request_block("/t.S/Chat")))        # refused: reset by us
        c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 3, hpack.encode([("x-trailer", "1")])),
               frame(DATA, END_STREAM, 3, b""))                                  # crossed our RST: ignored
        assert not ended(c)
        c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block("/t.S/Chat")))   # trailers: fine
        c = Client(make_server(echo_handlers()))
        c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 5, request_block("/t.S/Nope")),
               frame(HEADERS, END_HEADERS | END_STREAM, 5, request_block("/t.S/Nope")))
        assert ended(c) and goaway_code(c) == PROTOCOL_ERROR
    run(main())


def test_an_early_status_waits_for_the_clients_first_message():
    async def main():
        async def refuse(it, ctx):
            await ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
            yield b""     # pragma: no cover
        c = Client(make_server({"R": grpc.stream_stream_rpc_method_handler(refuse)}))
        c.new_frames()
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/R")))
        await asyncio.sleep(0)
        assert not c.new_frames()              # held: the client's first write may be under way
        c.feed(frame(DATA, 0, 1, grpc_msg(b"x")))
        got = c.new_frames()
        assert [(t, f) for t, f, s, p in got] == [(HEADERS, END_HEADERS | END_STREAM)]
        assert dict(c.headers_of(1)[0])["grpc-status"] == "7"
        assert not [f for f in got if f[0] == RST_STREAM] and not c.conn.streams
    run(main())


def test_a_connection_error_lingers_so_the_goaway_arrives():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.feed(frame(WINDOW_UPDATE, 0, 0, struct.pack(">L", 0)))
        assert goaway_code(c) == PROTOCOL_ERROR and c.t.eof and not c.t.closed
        n = len(c.t.data)
        c.feed(frame(PING, 0, 0, b"12345678"))      # discarded, not answered
        assert len(c.t.data) == n
    run(main())


def test_a_compressed_message_is_refused_with_the_specs_answer():
    async def main():
        c = Client(make_server(echo_handlers()))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Echo")),
               frame(DATA, END_STREAM, 1, b"\x01\x00\x00\x00\x02hi"))
        assert dict(c.headers_of(1)[0])["grpc-status"] == str(status.INTERNAL)
        c.feed(frame(HEADERS, END_HEADERS, 3, request_block("/t.S/Echo", [("grpc-encoding", "gzip")])),
               frame(DATA, END_STREAM, 3, b"\x01\x00\x00\x00\x02hi"))
        assert dict(c.headers_of(3)[0])["grpc-status"] == str(status.UNIMPLEMENTED)
    run(main())


# -- review findings (LEAD 01:57) -------------------------------------------------------------

def test_stop_after_grace_closes_without_rst_cancel_and_cancels_handlers():
    # grpc-go reads RST_STREAM(CANCEL) as Canceled, which clientv3 takes as
    # final; a closed connection is UNAVAILABLE and clients reconnect.
    async def main():
        cancelled = asyncio.Event()

        async def hang(it, ctx):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        c = Client(make_server({"Hang": grpc.stream_stream_rpc_method_handler(hang)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Hang")))
        c.conn.goaway(NO_ERROR)
        c.new_frames()
        c.conn.abort_streams()
        await asyncio.wait_for(cancelled.wait(), 5)
        assert not [f for f in c.new_frames() if f[0] == RST_STREAM]
        assert c.t.closed and not c.conn.streams
    run(main())


@pytest.mark.parametrize("style", ["coroutine", "async generator"])
def test_a_reset_in_the_read_that_started_the_call_reaches_the_handler(style):
    async def main():
        events = []
        registered = set()

        async def coro_handler(it, ctx):
            registered.add(ctx)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            finally:
                registered.discard(ctx)

        async def gen_handler(it, ctx):
            registered.add(ctx)
            try:
                await asyncio.Event().wait()
                yield b""
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            finally:
                registered.discard(ctx)
        h = coro_handler if style == "coroutine" else gen_handler
        c = Client(make_server({"H": grpc.stream_stream_rpc_method_handler(h)}))
        for sid in (1, 3, 5):
            c.feed(frame(HEADERS, END_HEADERS, sid, request_block("/t.S/H")) + frame(RST_STREAM, 0, sid, struct.pack(">L", 8)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert events == ["cancelled"] * 3 and not registered
    run(main())


def test_connection_loss_releases_streams_timers_and_readers():
    async def main():
        reader_done = asyncio.Event()
        contexts = []

        async def chat(it, ctx):
            contexts.append(ctx)

            async def helper():
                await ctx.read()
                reader_done.set()
            asyncio.get_running_loop().create_task(helper())
            await asyncio.Event().wait()
        c = Client(make_server({"C": grpc.stream_stream_rpc_method_handler(chat)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/C", [("grpc-timeout", "99999999H")])),
               frame(DATA, 0, 1, b"\0\0\0\x10\0" + b"x" * 1000))      # a partial message
        await asyncio.sleep(0)
        st = c.conn.streams[1]
        assert st.timer is not None and st.inbuf
        c.conn.connection_lost(None)
        await asyncio.wait_for(reader_done.wait(), 5)
        assert st.timer is None and st.inbuf is None and contexts[0].cancelled()
    run(main())


def test_deadline_of_an_unfinished_unary_request_and_of_a_quiet_stream():
    async def main():
        async def echo(req, ctx):
            return req

        async def quiet(it, ctx):
            await asyncio.Event().wait()
        c = Client(make_server({"Echo": grpc.unary_unary_rpc_method_handler(echo),
                                "Q": grpc.stream_stream_rpc_method_handler(quiet)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Echo", [("grpc-timeout", "20m")])),
               frame(DATA, 0, 1, grpc_msg(b"never ends")),
               frame(HEADERS, END_HEADERS, 3, request_block("/t.S/Q", [("grpc-timeout", "20m")])))
        for sid in (1, 3):
            while not c.headers_of(sid):
                await asyncio.sleep(0.01)
            assert dict(c.headers_of(sid)[-1])["grpc-status"] == str(status.DEADLINE_EXCEEDED), sid
        assert not [f for f in frames_of(c.t.data) if f[0] == RST_STREAM and f[2] == 3]
    run(main())


def test_each_call_runs_in_its_own_contextvars_context():
    import contextvars
    who = contextvars.ContextVar("who", default=None)

    async def main():
        seen = []

        async def echo(req, ctx):
            seen.append(who.get())
            who.set(req)
            return req
        c = Client(make_server({"Echo": grpc.unary_unary_rpc_method_handler(echo)}))
        for sid, body in ((1, b"root"), (3, b"anon")):
            c.feed(frame(HEADERS, END_HEADERS, sid, request_block("/t.S/Echo")),
                   frame(DATA, END_STREAM, sid, grpc_msg(body)))
        assert seen == [None, None] and who.get() is None
    run(main())


def test_long_status_headers_are_split_at_the_clients_max_frame_size():
    async def main():
        async def long_abort(req, ctx):
            await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "ü" * 20000)
        c = Client(make_server({"A": grpc.unary_unary_rpc_method_handler(long_abort)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/A")), frame(DATA, END_STREAM, 1, grpc_msg(b"")))
        got = [(t, f, len(p)) for t, f, s, p in c.new_frames() if s == 1]
        assert [t for t, f, n in got] == [HEADERS] + [CONTINUATION] * (len(got) - 1) and len(got) > 1
        assert all(n <= 16384 for t, f, n in got)
        assert got[0][1] == END_STREAM and got[-1][1] == END_HEADERS
        block = b"".join(p for t, f, s, p in frames_of(c.t.data) if s == 1 and t in (HEADERS, CONTINUATION))
        assert dict(hpack.Decoder().decode(block))["grpc-status"] == "3"
    run(main())


def test_one_settings_frame_walks_the_streams_once_and_stream_updates_pump_one_stream():
    async def main():
        c = Client(make_server(echo_handlers()))
        for sid in range(1, 200, 2):
            c.feed(frame(HEADERS, END_HEADERS, sid, request_block("/t.S/Chat")))
        walks = []
        real = dict.values

        class Spy(dict):
            def values(self):
                walks.append(1)
                return real(self)
        c.conn.streams = Spy(c.conn.streams)
        c.feed(frame(SETTINGS, 0, 0, b"".join(struct.pack(">HL", 4, 1000 + i) for i in range(2000))))
        assert len(walks) == 1 and c.conn.streams[1].swin == 1000 + 1999
        pumped = []
        c.conn._pump = lambda st: pumped.append(st.sid)
        c.conn.blocked = {s: c.conn.streams[s] for s in (1, 3, 5)}
        c.feed(frame(WINDOW_UPDATE, 0, 3, struct.pack(">L", 10)))
        assert pumped == [3]
    run(main())


def test_oversized_header_lists_are_not_parsed_and_repeats_end_the_connection():
    async def main():
        c = Client(make_server(echo_handlers(), **{"grpc.max_metadata_size": 100}))
        big = request_block("/t.S/Echo", [("x-big", "v" * 200)])
        sid = 1
        while not ended(c) and sid < 1000:
            c.feed(frame(HEADERS, END_HEADERS | END_STREAM, sid, big))
            sid += 2
        assert ended(c) and goaway_code(c) == ENHANCE_YOUR_CALM and sid > 100
    run(main())


def test_a_full_server_evicts_its_oldest_idle_connection_instead_of_refusing():
    async def main():
        server = make_server(echo_handlers(), **{"h2.max_connections": 3})
        busy = Client(server)
        busy.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/Chat")))      # a call in flight
        idle = [Client(server), Client(server)]
        newcomer = Client(server)
        assert not newcomer.t.closed and newcomer.conn in server.connections
        assert idle[0].t.closed and goaway_code(idle[0]) == NO_ERROR         # the oldest idle one went
        assert not busy.t.closed and not idle[1].t.closed
    run(main())


def test_a_cancelled_server_streaming_generator_is_closed_at_once():
    async def main():
        events = []

        async def snap(req, ctx):
            try:
                while True:
                    yield b"x" * 100_000
            except GeneratorExit:
                events.append("closed")
                raise
        c = Client(make_server({"S": grpc.unary_stream_rpc_method_handler(snap)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/S")), frame(DATA, END_STREAM, 1, grpc_msg(b"")))
        task = c.conn.streams[1].task
        assert task is not None                # waiting for window
        c.feed(frame(RST_STREAM, 0, 1, struct.pack(">L", 8)))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert events == ["closed"]
    run(main())


def test_headers_on_a_half_closed_stream_are_a_stream_error():
    async def main():
        async def hang(req, ctx):
            await asyncio.Event().wait()
            yield b""
        c = Client(make_server({"H": grpc.unary_stream_rpc_method_handler(hang)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/H")), frame(DATA, END_STREAM, 1, grpc_msg(b"")))
        c.new_frames()
        c.feed(frame(HEADERS, END_HEADERS | END_STREAM, 1, hpack.encode([("x-late", "1")])))
        resets = [(s, struct.unpack(">L", p)[0]) for t, f, s, p in c.new_frames() if t == RST_STREAM]
        assert resets == [(1, 5)] and not ended(c)          # STREAM_CLOSED
    run(main())


def test_a_status_stuck_behind_a_closed_window_still_has_its_deadline():
    async def main():
        async def big(req, ctx):
            return b"x" * 100_000
        c = Client(make_server({"B": grpc.unary_unary_rpc_method_handler(big)}))
        c.feed(frame(HEADERS, END_HEADERS, 1, request_block("/t.S/B", [("grpc-timeout", "20m")])),
               frame(DATA, END_STREAM, 1, grpc_msg(b"")))
        st = c.conn.streams[1]
        assert st.trailers is not None and st.timer is not None     # 64 KiB window: the rest waits
        while 1 in c.conn.streams:
            await asyncio.sleep(0.01)
        assert (RST_STREAM, 1) in [(t, s) for t, f, s, p in c.new_frames()] and st.out is None
    run(main())
