"""issue 11: hostile input against engine.transport.h2.H2Server, byte by byte.

A raw socket plays the attacker (or the broken client); for each case the
server must answer as RFC 9113 says (GOAWAY with the right error code and
then close, or RST_STREAM for a stream error), stay alive, and a
well-behaved grpc.aio client on a fresh connection must still get answers.
Every read has a deadline and every loop a bound.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import struct

import grpc
import pytest

from tests.tls.pki import Pki
from tests.transport.h2_helpers import (
    CANCEL, COMPRESSION_ERROR, CONTINUATION, DATA, ENHANCE_YOUR_CALM, FLAG_END_HEADERS, FLAG_END_STREAM,
    FLAG_PADDED, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY, H2_IMPORT_ERROR, HEADERS, KV,
    NO_ERROR, PING, PREFACE, PROTOCOL_ERROR, PUSH_PROMISE, RANGE, REFUSED_STREAM, RST_STREAM,
    S_ENABLE_PUSH, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, SETTINGS, STREAM_CLOSED, WINDOW_UPDATE,
    Closed, RawH2, Wire, frame, grpc_message, h2mod, healthy, hpack_encode, hpack_int, hpack_string,
    range_body, request_headers, rst_stream, run, serving, settings_frame, Tls, wait_until, window_update)

pytestmark = pytest.mark.skipif(h2mod is None, reason=f"engine.transport.h2 does not import yet ({H2_IMPORT_ERROR})")

@pytest.fixture(autouse=True)
def no_stack_traces(caplog):
    """Hostile input is answered, never crashed on: no ERROR from the server's
    modules or from asyncio (an exception in a callback, a task exception
    never retrieved) during any of these tests."""
    caplog.set_level(logging.ERROR)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR
           and (r.name.startswith("engine") or r.name == "asyncio")
           and "raised by servicer method" not in r.getMessage()]   # a handler's own exception, logged as grpc does
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad[:3]]


HANDSHAKE_TIMEOUT = 0.5       # the server's "h2.handshake_timeout_s" in these tests
OPTIONS = [("h2.handshake_timeout_s", HANDSHAKE_TIMEOUT)]


def h2_server(kv: KV | None = None, options=()):
    return serving(Wire("h2"), kv or KV(), options=[*OPTIONS, *options])


async def connected(port: int) -> RawH2:
    c = await RawH2.connect(port)
    await c.handshake()
    return c


async def connection_error(c: RawH2, timeout: float = 3.0) -> int:
    """The GOAWAY's error code; the server must also close the connection."""
    try:
        g = await c.expect_goaway(timeout)
    finally:
        pass
    await c.until_closed(timeout)
    c.close()
    return g.error_code


async def rst_code(c: RawH2, sid: int, timeout: float = 3.0) -> int | None:
    r = await c.response(sid, timeout)
    return r.rst


async def served_on(c: RawH2, sid: int, key: bytes = b"same-connection") -> None:
    """The same connection still serves a call on stream `sid`."""
    c.call(sid, RANGE, range_body(key))
    r = await c.response(sid)
    assert r.status == 0 and r.messages and key in r.messages[0], r


async def flood(c: RawH2, chunks, timeout: float = 10.0) -> int:
    """Send chunk after chunk until the server ends the connection (or the
    chunks run out, or `timeout`); a reader task takes in the server's
    frames meanwhile (c.goaway). -> how many chunks were sent."""
    async def reader():
        while await c._read_raw(timeout) is not None:
            pass
    task = asyncio.ensure_future(reader())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sent = 0
    try:
        for chunk in chunks:
            if task.done() or c.goaway is not None or loop.time() > deadline:
                break
            safe_send(c, chunk)
            sent += 1
            try:
                await asyncio.wait_for(c.drain(), 5)
            except (ConnectionError, asyncio.TimeoutError):
                break
            await asyncio.sleep(0)     # let the reader run
        await asyncio.wait_for(asyncio.shield(task), 5)
    except asyncio.TimeoutError:
        pass
    finally:
        task.cancel()
    return sent


def assert_cut_off(c: RawH2, codes) -> None:
    """After a flood: a GOAWAY naming one of `codes`, then the close. (A
    server that closes with the flood unread makes its kernel answer with
    RST, which destroys the GOAWAY on the way — grpc.aio loses it so; ours
    lingers: half-close, discard input, then close.)"""
    assert c.goaway is not None, f"no GOAWAY reached us (closed: {c.eof}, by RST: {c.reset})"
    assert c.goaway.error_code in codes, c.goaway
    assert c.eof, "GOAWAY for an error, yet the connection stays open"


def safe_send(c: RawH2, data: bytes) -> None:
    try:
        c.send(data)
    except (ConnectionError, RuntimeError):
        pass


# -- the preface and the handshake -------------------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",               # one byte off
    bytes(range(256)),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100,   # a TLS ClientHello on cleartext
], ids=["http1", "almost-preface", "binary", "tls-hello"])
def test_garbage_instead_of_the_preface_closes_the_connection(garbage):
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await RawH2.connect(s.port, preface=False)
            c.send(garbage)
            frames = await c.until_closed(3)
            goaways = [f for f in frames if f.type == GOAWAY]
            assert all(g.error_code == PROTOCOL_ERROR for g in goaways), goaways
            assert all(f.type in (SETTINGS, WINDOW_UPDATE, GOAWAY) for f in frames), frames
            c.close()
            await healthy(s.port)
            assert kv.calls == 1
    run(main())


@pytest.mark.parametrize("sent", [b"", PREFACE[:10], PREFACE], ids=["nothing", "truncated-preface", "no-settings"])
def test_a_silent_client_is_closed_after_the_handshake_timeout(sent):
    async def main():
        async with h2_server() as s:
            loop = asyncio.get_running_loop()
            c = await RawH2.connect(s.port, preface=False)
            c.send(sent)
            t0 = loop.time()
            await c.until_closed(HANDSHAKE_TIMEOUT + 3)
            assert loop.time() - t0 >= HANDSHAKE_TIMEOUT * 0.8
            c.close()
            await healthy(s.port)
    run(main())


def test_the_first_frame_must_be_settings():
    async def main():
        async with h2_server() as s:
            c = await RawH2.connect(s.port, preface=False)
            c.send(PREFACE + frame(PING, 0, 0, b"12345678"))
            assert await connection_error(c) == PROTOCOL_ERROR
            await healthy(s.port)
    run(main())


# -- frame-level violations ---------------------------------------------------------------------------

def test_a_frame_over_max_frame_size_is_a_frame_size_error():
    async def main():
        async with h2_server() as s:
            c = await connected(s.port)
            block = hpack_encode(request_headers(RANGE, s.port, metadata=[("x-pad", "p" * 17000)]))
            c.send(frame(HEADERS, FLAG_END_HEADERS, 1, block))            # 17 KB > 16384
            assert await connection_error(c) == FRAME_SIZE_ERROR
            # Only a header announcing 16 MiB: answered at once, not after 16 MiB.
            c = await connected(s.port)
            c.send(struct.pack(">I", 0xFFFFFF)[1:] + struct.pack(">BBI", DATA, 0, 1))
            assert await connection_error(c, timeout=2) == FRAME_SIZE_ERROR
            await healthy(s.port)
    run(main())


@pytest.mark.parametrize("case", ["stream-0", "even-id", "decreasing-id", "same-id-again"])
def test_bad_stream_ids_are_protocol_errors(case):
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            h = request_headers(RANGE, s.port)
            if case == "stream-0":
                c.headers(0, h, end_stream=True)
            elif case == "even-id":
                c.headers(2, h, end_stream=True)
            else:
                await served_on(c, 5)
                c.headers(3 if case == "decreasing-id" else 5, h, end_stream=True)
            assert await connection_error(c) in (PROTOCOL_ERROR, STREAM_CLOSED)
            await healthy(s.port)
            assert kv.calls == (1 if case == "stream-0" or case == "even-id" else 2)
    run(main())


def test_frames_on_idle_streams_and_stream_0_are_protocol_errors():
    async def main():
        async with h2_server() as s:
            for bad in (frame(DATA, FLAG_END_STREAM, 7, grpc_message(b"")),       # DATA on an idle stream
                        rst_stream(9),                                            # RST_STREAM on an idle stream
                        frame(RST_STREAM, 0, 0, struct.pack(">I", CANCEL)),       # RST_STREAM on stream 0
                        frame(PING, 0, 1, b"12345678"),                            # PING on a stream
                        frame(SETTINGS, 0, 1, b""),                                # SETTINGS on a stream
                        frame(PUSH_PROMISE, FLAG_END_HEADERS, 1, b"\x00\x00\x00\x02"),   # clients never push
                        frame(CONTINUATION, FLAG_END_HEADERS, 1, b"")):            # no HEADERS before it
                c = await connected(s.port)
                c.send(bad)
                assert await connection_error(c) == PROTOCOL_ERROR, bad[:9].hex()
            await healthy(s.port)
    run(main())


@pytest.mark.parametrize("pairs,code", [
    ([(S_INITIAL_WINDOW_SIZE, 2**31)], FLOW_CONTROL_ERROR),
    ([(S_MAX_FRAME_SIZE, 16383)], PROTOCOL_ERROR),
    ([(S_MAX_FRAME_SIZE, 2**24)], PROTOCOL_ERROR),
    ([(S_ENABLE_PUSH, 2)], PROTOCOL_ERROR),
], ids=["window-2^31", "frame-too-small", "frame-too-big", "enable-push-2"])
def test_bad_settings_are_connection_errors(pairs, code):
    async def main():
        async with h2_server() as s:
            c = await connected(s.port)
            c.send(settings_frame(pairs))
            assert await connection_error(c) == code
            c = await connected(s.port)
            c.send(frame(SETTINGS, 0, 0, b"\x00\x04\x00"))      # not a multiple of 6
            assert await connection_error(c) == FRAME_SIZE_ERROR
            await healthy(s.port)
    run(main())


def test_unknown_frame_types_are_ignored():
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            c.send(frame(0xFA, 0xFF, 0, os.urandom(100)))
            c.headers(1, request_headers(RANGE, s.port))
            c.send(frame(0x21, 0, 1, b"ext"))                  # between HEADERS and DATA of a stream
            c.send(frame(0xFB, 0, 99, b""))                    # on an idle stream
            c.send(frame(DATA, FLAG_END_STREAM, 1, grpc_message(range_body(b"through"))))
            r = await c.response(1)
            assert r.status == 0 and b"through" in r.messages[0], r
            assert c.goaway is None
            c.close()
    run(main())


# -- header blocks ----------------------------------------------------------------------------------------

def _indexed_literal(name: str, value: str) -> bytes:
    """Literal with incremental indexing, new name: enters the dynamic table."""
    return b"\x40" + hpack_string(name.encode()) + hpack_string(value.encode())


def test_a_header_list_over_the_limit_fails_the_stream_not_the_connection():
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            # The oversized block also adds an entry to the HPACK table: the
            # server must decode it anyway to stay in sync for the next stream.
            block = hpack_encode(request_headers(RANGE, s.port)) + _indexed_literal("x-kept", "kept-value") + \
                hpack_encode([("x-big", "v" * 20000)])
            c.send(frame(HEADERS, 0, 1, block[:16000]) + frame(CONTINUATION, FLAG_END_HEADERS, 1, block[16000:]))
            c.send(frame(DATA, FLAG_END_STREAM, 1, grpc_message(range_body(b"a"))))
            r = await c.response(1)
            assert r.rst is not None or r.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], r
            assert kv.calls == 0
            # Next stream on the same connection refers to the table entry (index 62).
            c.send(frame(HEADERS, FLAG_END_HEADERS, 3, hpack_encode(request_headers(RANGE, s.port)) + b"\xbe"))
            c.send(frame(DATA, FLAG_END_STREAM, 3, grpc_message(range_body(b"next"))))
            r = await c.response(3)
            assert r.status == 0, r
            assert ("x-kept", "kept-value") in kv.seen[-1]["metadata"], kv.seen[-1]["metadata"]
            c.close()
    run(main())


@pytest.mark.parametrize("shape", ["many-small-fields", "hpack-bomb"])
def test_header_lists_that_grow_when_decoded_are_refused(shape):
    """The limit is on the decoded list (RFC 9113 6.5.2: name + value + 32
    per field): 1,500 tiny fields, or one 4 KB table entry referenced 2,000
    times (8 MB decoded from a 6 KB block). The stream fails, the
    connection serves the next one."""
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            block = hpack_encode(request_headers(RANGE, s.port))
            if shape == "many-small-fields":
                block += hpack_encode([("x-%d" % i, "") for i in range(1500)])
            else:
                block += _indexed_literal("x-bomb", "b" * 4000) + b"\xbe" * 2000
            assert len(block) < 16384
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            c.send(frame(HEADERS, FLAG_END_HEADERS, 1, block))
            c.send(frame(DATA, FLAG_END_STREAM, 1, grpc_message(range_body(b"a"))))
            r = await c.response(1)
            assert r.rst is not None or r.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], r
            assert loop.time() - t0 < 1.0
            assert kv.calls == 0
            await served_on(c, 3)
            c.close()
    run(main())


@pytest.mark.parametrize("size", [16384, 0], ids=["16k-pieces", "empty-pieces"])
def test_a_continuation_flood_is_cut_off(size):
    async def main():
        async with h2_server() as s:
            c = await connected(s.port)
            c.send(frame(HEADERS, 0, 1, hpack_encode(request_headers(RANGE, s.port))))
            piece = frame(CONTINUATION, 0, 1, b"\x00" * size)
            limit = 20_000
            sent = await flood(c, (piece * 16 for _ in range(limit // 16)))
            assert sent < limit // 16, "the server took 20,000 CONTINUATION frames"
            assert_cut_off(c, (ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR))
            c.close()
            await healthy(s.port)
    run(main())


@pytest.mark.parametrize("block", [
    b"\xff\x7f",                        # indexed field, index 127+127: past both tables
    b"\x80",                            # index 0
    b"\x7f\x80\x80\x80\x80\x80\x80\x01",   # an integer that overflows
    b"\x00\x81\x18\x01a",               # Huffman name padded with zeros
    b"\x00\x82\x1f\xff\x01a",           # Huffman padding longer than 7 bits
    b"\x00\x85abc",                     # a string running past the block
    b"\x3f\xe1\x7f",                    # table size update above SETTINGS_HEADER_TABLE_SIZE
], ids=["index-too-big", "index-0", "int-overflow", "huffman-zero-pad", "huffman-long-pad", "truncated",
        "table-size"])
def test_bad_hpack_is_a_compression_error(block):
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            c.send(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, hpack_encode(
                request_headers(RANGE, s.port)) + block))
            assert await connection_error(c) == COMPRESSION_ERROR
            await healthy(s.port)
            assert kv.calls == 1
    run(main())


@pytest.mark.parametrize("case", ["no-path", "get", "not-grpc", "uppercase-name", "connection-header"])
def test_malformed_requests_fail_the_stream_only(case):
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            h = request_headers(RANGE, s.port)
            if case == "no-path":
                h = [x for x in h if x[0] != ":path"]
            elif case == "get":
                h = [(":method", "GET") if x[0] == ":method" else x for x in h]
            elif case == "not-grpc":
                h = [("content-type", "text/html") if x[0] == "content-type" else x for x in h]
            elif case == "uppercase-name":
                h.append(("X-Upper", "1"))
            else:
                h.append(("connection", "keep-alive"))
            c.headers(1, h)
            c.send(frame(DATA, FLAG_END_STREAM, 1, grpc_message(range_body(b"x"))))
            r = await c.response(1)
            ok_status = dict(r.headers).get(":status") == b"200" and r.status == 0
            assert not ok_status, r
            assert kv.calls == 0
            await served_on(c, 3)
            c.close()
    run(main())


# -- flow control and stream state ------------------------------------------------------------------------

def test_window_update_overflow():
    async def main():
        async with h2_server() as s:
            c = await connected(s.port)
            c.send(window_update(0, 2**31 - 1))           # 65535 + that > 2^31-1
            assert await connection_error(c) == FLOW_CONTROL_ERROR
            c = await connected(s.port)
            c.send(window_update(0, 0))
            assert await connection_error(c) == PROTOCOL_ERROR
            # A stream's window: a stream error; the connection stays.
            c = await connected(s.port)
            c.headers(1, request_headers(RANGE, s.port))
            c.send(window_update(1, 2**31 - 1))
            assert await rst_code(c, 1) == FLOW_CONTROL_ERROR
            await served_on(c, 3)
            c.close()
            await healthy(s.port)
    run(main())


def test_data_on_a_closed_stream_keeps_the_connection_flowing():
    """DATA after END_STREAM: STREAM_CLOSED (stream or connection error) or
    dropped, but credited back: 20 MiB of it (past the 16 MiB connection
    window), sent as the window allows, must not starve later requests."""
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            await served_on(c, 1)
            try:
                await c.send_data(1, b"\x00" * (20 << 20), stream_flow=False)
            except Closed:
                assert c.goaway is not None and c.goaway.error_code == STREAM_CLOSED, (c.goaway, c.reset)
                c.close()
            else:
                assert c.goaway is None, c.goaway
                big = os.urandom(2 << 20)
                c.headers(3, request_headers(RANGE, s.port))
                await c.send_data(3, grpc_message(range_body(big)), end_stream=True)
                r = await c.response(3, timeout=10)
                assert r.status == 0 and big in r.messages[0], r
                c.close()
            await healthy(s.port)
    run(main())


# -- gRPC framing inside DATA --------------------------------------------------------------------------

def test_a_length_prefix_longer_than_the_body_is_refused():
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            c.call(1, RANGE, b"", raw_message=grpc_message(range_body(b"short"), length=100))
            r = await c.response(1)
            assert r.rst is not None or (r.status not in (None, 0)), r
            c.call(3, RANGE, b"", raw_message=b"\x00\x00\x00")           # a partial prefix
            r = await c.response(3)
            assert r.rst is not None or (r.status not in (None, 0)), r
            c.call(5, RANGE, b"", raw_message=b"")                       # no message at all (unary)
            r = await c.response(5)
            assert r.rst is not None or (r.status not in (None, 0)), r
            assert kv.calls == 0
            await served_on(c, 7)
            c.close()
    run(main())


def test_a_huge_length_prefix_is_refused_without_waiting_for_the_body():
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            c.call(1, RANGE, b"", raw_message=grpc_message(b"", length=2**32 - 1), end_stream=False)
            r = await c.response(1, timeout=3)
            assert (r.status, r.message) == (8, "SERVER: Received message larger than max (4294967295 vs. 4194304)"), r
            assert kv.calls == 0
            await served_on(c, 3)
            c.close()
    run(main())


def test_a_compressed_message_is_refused_cleanly():
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            c.call(1, RANGE, b"", raw_message=grpc_message(range_body(b"x"), compressed=True))
            r = await c.response(1)
            # grpc.aio: INTERNAL "Compression bit set but no encoding configured" (no grpc-encoding sent).
            assert r.status in (grpc.StatusCode.INTERNAL.value[0], grpc.StatusCode.UNIMPLEMENTED.value[0]), r
            c.call(3, RANGE, b"", raw_message=grpc_message(b"\x1f\x8b not really gzip", compressed=True),
                   metadata=[("grpc-encoding", "gzip")])
            r = await c.response(3)
            assert r.status not in (None, 0), r
            assert kv.calls == 0
            await served_on(c, 5)
            c.close()
    run(main())


# -- floods ---------------------------------------------------------------------------------------------------

def test_a_rapid_reset_flood_is_stopped():
    """CVE-2023-44487: HEADERS + RST_STREAM in a loop makes a server start
    work nobody waits for. After a bounded burst: GOAWAY ENHANCE_YOUR_CALM."""
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            block = hpack_encode(request_headers(RANGE, s.port))
            body = grpc_message(range_body(b"sleep", limit=5000))

            def bursts():
                sid = 1
                for _ in range(40):                 # 40 bursts of 500: at most 20,000 streams
                    burst = bytearray()
                    for _ in range(500):
                        burst += frame(HEADERS, FLAG_END_HEADERS, sid, block) + \
                            frame(DATA, FLAG_END_STREAM, sid, body) + rst_stream(sid)
                        sid += 2
                    yield bytes(burst)
            await flood(c, bursts())
            assert_cut_off(c, (ENHANCE_YOUR_CALM,))
            last_sid = struct.unpack(">I", c.goaway.payload[:4])[0] & 0x7FFFFFFF
            assert last_sid < 2 * 5000, f"the server took {last_sid // 2 + 1} streams before its GOAWAY"
            c.close()
            await healthy(s.port)
            await wait_until(lambda: kv.active == 0, what="every reset handler gone")
    run(main())


def test_streams_left_open_are_bounded_by_max_concurrent_streams():
    async def main():
        kv = KV()
        async with h2_server(kv, options=[("grpc.max_concurrent_streams", 100)]) as s:
            c = await connected(s.port)
            block = hpack_encode(request_headers(RANGE, s.port))
            n = 3000
            c.send(b"".join(frame(HEADERS, FLAG_END_HEADERS, 2 * i + 1, block) for i in range(n)))
            refused = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(refused) < n - 100 and c.goaway is None:
                assert loop.time() < deadline, f"{len(refused)} streams refused of {n - 100}"
                f = await c.read_frame(deadline - loop.time())
                assert f is not None, "closed"
                if f.type == RST_STREAM:
                    assert f.error_code in (REFUSED_STREAM, PROTOCOL_ERROR), f
                    refused.add(f.sid)
            if c.goaway is not None:     # RFC 9113 5.1.2 allows a connection error too
                assert c.goaway.error_code in (PROTOCOL_ERROR, ENHANCE_YOUR_CALM, REFUSED_STREAM)
            else:
                assert refused == {2 * i + 1 for i in range(100, n)}
            c.close()
            await healthy(s.port)
            server = s.server
            if hasattr(server, "connections"):
                await wait_until(lambda: len(server.connections) == 0, what="the closed connections forgotten")
    run(main())


def test_many_idle_connections_do_not_stop_service():
    async def main():
        async with h2_server() as s:
            ready = [await connected(s.port) for _ in range(150)]          # handshaken, then idle
            silent = [await RawH2.connect(s.port, preface=False) for _ in range(150)]
            await healthy(s.port)
            # The silent ones are closed after the handshake timeout, the idle ones stay.
            for c in silent:
                await c.until_closed(HANDSHAKE_TIMEOUT + 5)
                c.close()
            for c in ready[:10]:
                await served_on(c, 1)
            for c in ready:
                c.close()
            await healthy(s.port)
    run(main(), timeout=60)


def test_past_max_connections_the_oldest_idle_connection_makes_room():
    """h2.max_connections reached: when every connection has a call in
    flight a newcomer is closed at once; otherwise the oldest connection
    without a call is sent away (GOAWAY NO_ERROR) and the newcomer served,
    so idle sockets cannot lock real clients out."""
    async def main():
        async with h2_server(options=[("h2.max_connections", 20)]) as s:
            busy = [await connected(s.port) for _ in range(20)]
            for c in busy:
                c.headers(1, request_headers(RANGE, s.port))        # a call in flight (request not ended)
            await wait_until(lambda: len(s.server.connections) == 20
                             and all(c.streams for c in s.server.connections), what="20 busy connections")
            extra = [await RawH2.connect(s.port) for _ in range(5)]
            for c in extra:
                await c.until_closed(2)        # well before the handshake timeout would matter
                c.close()
            for c in busy:
                c.close()
            await wait_until(lambda: len(s.server.connections) == 0, what="the busy connections forgotten")
            idle = [await connected(s.port) for _ in range(20)]
            newcomer = await connected(s.port)
            await served_on(newcomer, 1)
            g = await idle[0].expect_goaway(3)
            assert g.error_code == NO_ERROR
            await idle[0].until_closed(3)
            await served_on(idle[1], 1)        # only the oldest went
            for c in [*idle, newcomer]:
                c.close()
            await wait_until(lambda: len(s.server.connections) == 0, what="the held connections forgotten")
            await healthy(s.port)
    run(main())


def test_a_ping_flood_with_grpcs_default_policy_ends_in_too_many_pings():
    """Without raftnode's max_ping_strikes=0, grpc's default policy applies:
    pings too close together are strikes, then GOAWAY ENHANCE_YOUR_CALM."""
    async def main():
        async with h2_server() as s:
            c = await connected(s.port)
            sent = await flood(c, (frame(PING, 0, 0, struct.pack(">Q", i)) for i in range(100)))
            assert sent < 100, "100 pings in a row taken"
            assert_cut_off(c, (ENHANCE_YOUR_CALM,))
            assert b"too_many_pings" in c.goaway.payload[8:], c.goaway
            c.close()
            await healthy(s.port)
    run(main())


def test_padding_longer_than_the_frame_is_a_protocol_error():
    async def main():
        async with h2_server() as s:
            c = await connected(s.port)
            c.headers(1, request_headers(RANGE, s.port))
            c.send(frame(DATA, FLAG_PADDED | FLAG_END_STREAM, 1, b"\x10abc"))
            assert await connection_error(c) == PROTOCOL_ERROR
            c = await connected(s.port)
            block = hpack_encode(request_headers(RANGE, s.port))
            c.send(frame(HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, bytes([len(block) + 1]) + block))
            assert await connection_error(c) == PROTOCOL_ERROR
            await healthy(s.port)
    run(main())


def test_client_goaway_and_stop_are_orderly():
    """A client's GOAWAY ends its connection once its calls are done; the
    server's own stop sends GOAWAY NO_ERROR to idle connections."""
    async def main():
        kv = KV()
        async with h2_server(kv) as s:
            c = await connected(s.port)
            c.call(1, RANGE, range_body(b"sleep", limit=200))
            c.send(frame(GOAWAY, 0, 0, struct.pack(">II", 0, NO_ERROR)))
            r = await c.response(1)
            assert r.status == 0, r
            await c.until_closed(3)
            c.close()
            idle = await connected(s.port)
            await idle.sync()                  # the server has read everything we sent
            await s.server.stop(1.0)
            g = await idle.expect_goaway(3)
            assert g.error_code == NO_ERROR
            await idle.until_closed(3)
            idle.close()
    run(main())


def test_hpack_int_helper_round_trip():
    """The test's own encoder: RFC 7541 C.1 examples."""
    assert hpack_int(10, 5) == b"\x0a"
    assert hpack_int(1337, 5) == b"\x1f\x9a\x0a"
    assert hpack_int(42, 8) == b"\x2a"


# -- TLS ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("h2hostile-pki"))
    p.issue("server", cn="member-1")
    p.issue("alice", cn="alice")
    return p


def _client_ctx(pki: Pki, alpn: list[str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.load_cert_chain(pki.cert("alice"), pki.key("alice"))
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    return ctx


def test_tls_handshakes_that_stall_or_offer_no_h2_are_closed(pki):
    async def main():
        kv = KV()
        tls = Tls(pki.cert("server"), pki.key("server"), pki.ca, True)
        async with serving(Wire("h2"), kv, options=OPTIONS, tls=tls) as s:
            # TCP only, no ClientHello: closed after the handshake timeout.
            c = await RawH2.connect(s.port, preface=False)
            await c.until_closed(HANDSHAKE_TIMEOUT + 3)
            c.close()
            # Half a ClientHello, then silence.
            c = await RawH2.connect(s.port, preface=False)
            c.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            await c.until_closed(HANDSHAKE_TIMEOUT + 3)
            c.close()
            # A full handshake offering http/1.1 only, or no ALPN: nothing is served.
            for alpn in (["http/1.1"], None):
                try:
                    c = await RawH2.connect(s.port, ssl=_client_ctx(pki, alpn))
                except (ssl.SSLError, ConnectionError):
                    continue                   # refused in the handshake: as good
                c.call(1, RANGE, range_body(b"over-http1"))
                with pytest.raises(Closed):
                    await c.response(1, timeout=3)
                c.close()
            # Cleartext HTTP/2 on the TLS port.
            c = await RawH2.connect(s.port)
            await c.until_closed(3)
            c.close()
            assert kv.calls == 0
            # Done right: served, and the identity is the certificate's.
            c = await RawH2.connect(s.port, ssl=_client_ctx(pki, ["h2"]))
            await c.handshake()
            await served_on(c, 1, b"tls-ok")
            c.close()
            assert kv.seen[-1]["peer"].startswith("ipv4:127.0.0.1:")
    run(main())


# -- random conversations -------------------------------------------------------------------------------------

def random_conversation(rng, port: int) -> bytes:
    """A preface, then up to 16 steps: mostly a well-formed client's moves
    (requests on rising stream ids, their DATA, windows, pings, resets),
    with broken ones mixed in (random types, flags, ids and lengths, bad
    gRPC framing, flipped bytes, a torn end)."""
    out = bytearray(PREFACE)
    if rng.random() < 0.95:
        out += settings_frame([(rng.choice([1, 2, 3, 4, 5, 6, 7, 0xFFFF]), rng.getrandbits(32))
                               for _ in range(rng.randint(0, 2))] if rng.random() < 0.2 else [])
    block = hpack_encode(request_headers(rng.choice([RANGE, RANGE, "/etcdserverpb.Watch/Watch", "/x/y"]), port,
                                         timeout=rng.choice([None, None, "1m", "5S", "x"])))
    sid = 1
    open_sids = []
    for _ in range(rng.randint(1, 16)):
        r = rng.random()
        if r < 0.3:                                    # a request, maybe complete
            end = rng.random() < 0.6
            out += frame(HEADERS, FLAG_END_HEADERS, sid, block)
            body = grpc_message(range_body(rng.choice([b"k", b"sleep", b"raise", b"abort"]), limit=rng.randint(0, 50)))
            out += frame(DATA, FLAG_END_STREAM if end else 0, sid, body)
            if not end:
                open_sids.append(sid)
            sid += 2
        elif r < 0.45 and open_sids:                   # more DATA on an open stream
            target = rng.choice(open_sids)
            body = grpc_message(range_body(rng.randbytes(rng.randint(0, 50))), compressed=rng.random() < 0.1,
                                length=rng.choice([None, None, None, 0, 3, 2**32 - 1]))
            out += frame(DATA, rng.choice([0, FLAG_END_STREAM]), target,
                         body[:rng.randint(0, len(body))] if rng.random() < 0.2 else body)
        elif r < 0.55:
            out += window_update(rng.choice([0] + open_sids), rng.choice([1, 1000, 65535, 2**31 - 1]))
        elif r < 0.6:
            out += frame(PING, rng.choice([0, 1]), 0, rng.randbytes(8))
        elif r < 0.65 and open_sids:
            out += rst_stream(open_sids.pop(rng.randrange(len(open_sids))), rng.randint(0, 14))
        elif r < 0.75:                                 # a frame of any type, flags and id
            out += frame(rng.randint(0, 15), rng.getrandbits(8),
                         rng.choice([0, 1, 2, sid, 2**31 - 1, rng.getrandbits(31)]),
                         rng.randbytes(rng.randint(0, 64)))
        elif r < 0.85:
            out += frame(CONTINUATION, rng.choice([0, FLAG_END_HEADERS]), rng.choice([sid, max(1, sid - 2)]),
                         block[:rng.randint(0, len(block))])
        else:                                          # a request with flipped bytes
            f = bytearray(frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, sid, block))
            for _ in range(rng.randint(1, 4)):
                f[rng.randrange(len(f))] = rng.getrandbits(8)
            out += f
            sid += 2
    if rng.random() < 0.1:
        del out[rng.randrange(len(out)):]
    return bytes(out)


async def converse(port: int, data: bytes) -> list:
    """Send `data`; read until the server closes or is quiet for 0.3 s. The
    frames it answered with."""
    c = await RawH2.connect(port, preface=False)
    c.preface_sent = True        # answer its SETTINGS and PINGs as a client would
    frames = []
    try:
        safe_send(c, data)
        while True:
            try:
                f = await c._read_raw(0.3)
            except asyncio.TimeoutError:
                break
            if f is None:
                break
            frames.append(f)
    finally:
        c.close()
    return frames


def _check_answers(frames) -> None:
    for f in frames:
        if f.type in (GOAWAY, RST_STREAM):
            assert len(f.payload) >= 4 and f.error_code <= 13, f
        assert f.type in (SETTINGS, WINDOW_UPDATE, PING, GOAWAY, RST_STREAM, HEADERS, DATA, CONTINUATION), f


async def _fuzz(seed: int, conversations: int, parallel: int = 20) -> None:
    import random
    rng = random.Random(seed)
    kv = KV()
    async with h2_server(kv) as s:
        for start in range(0, conversations, parallel):
            batch = [random_conversation(rng, s.port) for _ in range(min(parallel, conversations - start))]
            for frames in await asyncio.gather(*(converse(s.port, d) for d in batch)):
                _check_answers(frames)
            await healthy(s.port, b"after-batch-%d" % start)
        await wait_until(lambda: kv.active == 0, what="no handler left running")


@pytest.mark.parametrize("seed", range(3))
def test_random_conversations_never_kill_the_server(seed):
    run(_fuzz(seed, 60))


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(100, 110))
def test_random_conversations_soak(seed):
    run(_fuzz(seed, 2000), timeout=600)
