"""issue 11: can engine.transport.h2.H2Server replace grpc.aio.server on the
client port? Every test runs against both (ids "grpc" and "h2"): grpc.aio
is the reference — a test that fails against it is a wrong test — and
H2Server must give clients the same answers.

The contract (engine/transport/h2/__init__.py): H2Server(options,
interceptors) takes grpc's generated add_*Servicer_to_server calls
(add_generic_rpc_handlers, add_registered_method_handlers),
add_insecure_port / add_secure_port(addr, server_ssl_context(...)) bind at
once and return the port (0 on failure), start(), stop(grace) (GOAWAY, calls
in flight get `grace` seconds, then are cancelled), wait_for_termination().
Handlers get a servicer context with grpc.aio's semantics
(invocation_metadata, peer, auth_context, time_remaining, abort, set_code,
set_details, code, details, read, write, send_initial_metadata,
set_trailing_metadata, cancelled, done, add_done_callback). Statuses,
their messages and where they go on the wire (trailers-only errors,
percent-encoded grpc-message) are grpc C-core's, measured here with the
"grpc" param; so are the options honoured (max message lengths both ways,
grpc.max_concurrent_streams, the ping policy) and TLS identity (grpc's
auth-context keys; a CA file alone asks for client certificates, as etcd 3.4).
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil

import grpc
import grpc.aio
import pytest

from engine.proto import peer_pb2, peer_pb2_grpc, rpc_pb2, rpc_pb2_grpc
from engine.transport import certcheck
from tests.tls.pki import Pki
from tests.transport.h2_helpers import (
    ABORT_MESSAGE, HOST, KV, RANGE, S_MAX_CONCURRENT_STREAMS, WIRES, Lease, Maintenance, RawH2, Tls, Watch,
    WriteMaintenance, frame, PING, FLAG_ACK, range_body, run, serving, settled, wait_until, wire_or_skip)


@pytest.fixture(params=WIRES)
def wire(request):
    return wire_or_skip(request.param)


def kv_stub(ch) -> rpc_pb2_grpc.KVStub:
    return rpc_pb2_grpc.KVStub(ch)


async def rpc_error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await awaitable
    return e.value


class Peer(peer_pb2_grpc.PeerServicer):
    """Client streaming: Stream as `async for`, SendSnapshot with context.read()."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.snapshot_bytes = 0
        self.snapshot_eof = 0

    def register(self, server) -> None:
        peer_pb2_grpc.add_PeerServicer_to_server(self, server)

    async def Stream(self, request_iterator, context):
        async for b in request_iterator:
            self.batches.append(b.from_member)
        return peer_pb2.StreamAck()

    async def SendSnapshot(self, request_iterator, context):
        while True:
            chunk = await context.read()
            if chunk is grpc.aio.EOF:
                self.snapshot_eof += 1
                return peer_pb2.SnapshotAck()
            self.snapshot_bytes += len(chunk.data)


# -- unary calls, metadata --------------------------------------------------------------

def test_unary_call_metadata_and_plain_function_handler(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s, s.channel() as ch:
            md = (("token", "tok-123"), ("x-trace", "a b,c"), ("x-data-bin", b"\x00\x01\xfe\xff"),
                  ("x-empty-bin", b""))
            r = await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"echo", range_end=b"\x00\xff"),
                                        metadata=md, timeout=5)
            assert r.kvs[0].key == b"echo" and r.kvs[0].value == b"\x00\xff"
            assert r.count == rpc_pb2.RangeRequest(key=b"echo", range_end=b"\x00\xff").ByteSize()
            seen = kv.seen[0]["metadata"]
            for pair in md:
                assert pair in seen, (pair, seen)
            assert all(isinstance(k, str) and k == k.lower() and not k.startswith(":") for k, _ in seen), seen
            assert all(isinstance(v, bytes) for k, v in seen if k.endswith("-bin")), seen
            assert all(isinstance(v, str) for k, v in seen if not k.endswith("-bin")), seen
            # Put is a plain function (no coroutine): served all the same.
            p = await kv_stub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v" * 10), timeout=5)
            assert (p.prev_kv.key, p.prev_kv.value) == (b"k", b"v" * 10)
    run(main())


def test_metadata_on_the_wire(wire):
    """What a raw client sends as headers, as the handler sees it: -bin
    values base64-decoded (padded or not), the reserved grpc-* and HTTP
    fields hidden, order and duplicates kept; bad base64 refused."""
    async def main():
        kv = KV()
        async with serving(wire, kv) as s:
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                c.call(1, RANGE, range_body(b"raw"), timeout="5S", metadata=[
                    ("x-unpadded-bin", "AQI"), ("x-padded-bin", "AQI="), ("x-a", "1,2"), ("x-a", "3"),
                    ("grpc-accept-encoding", "gzip"), ("user-agent", "raw/1"), ("token", "tok")])
                r = await c.response(1)
                assert r.status == 0, r
                seen = [tuple(x) for x in kv.seen[0]["metadata"]]
                assert ("user-agent", "raw/1") in seen, seen      # grpc.aio puts it first
                assert [x for x in seen if x[0] != "user-agent"] == [
                    ("x-unpadded-bin", b"\x01\x02"), ("x-padded-bin", b"\x01\x02"), ("x-a", "1,2"), ("x-a", "3"),
                    ("token", "tok")], seen
                c.call(3, RANGE, range_body(b"raw"), metadata=[("x-bad-bin", "!!!")])
                r = await c.response(3)
                assert (r.status, r.message) == (13, "Error parsing 'x-bad-bin' metadata: illegal base64 encoding"), r
                assert kv.calls == 1
            finally:
                c.close()
    run(main())


@pytest.mark.parametrize("value,expect", [
    ("1H", (0, 3590.0, 3600.0)), ("2M", (0, 110.0, 120.0)), ("1500m", (0, 1.0, 1.5)),
    ("100000u", (0, 0.01, 0.1)), ("99999999S", (0, 99999990.0, 99999999.0)),
    ("0m", (4, "Deadline Exceeded")),
    ("x", (13, "Error parsing 'grpc-timeout' metadata")), ("-1S", (13, "Error parsing 'grpc-timeout' metadata")),
], ids=["hours", "minutes", "millis", "micros", "8-digits", "zero", "letters", "negative"])
def test_grpc_timeout_values(wire, value, expect):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s:
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                c.call(1, RANGE, range_body(b"t"), timeout=value)
                r = await c.response(1)
            finally:
                c.close()
            if expect[0] == 0:
                assert r.status == 0, r
                assert expect[1] <= kv.seen[0]["time_remaining"] <= expect[2], kv.seen[0]
            else:
                assert (r.status, r.message) == expect, r
                assert kv.calls == 0
    run(main())


def test_initial_and_trailing_metadata_reach_the_client(wire):
    async def main():
        async with serving(wire, KV()) as s, s.channel() as ch:
            call = kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"metadata"), timeout=5)
            assert (await call).count == 1
            initial = tuple(await call.initial_metadata())
            trailing = tuple(await call.trailing_metadata())
            assert ("initial-key", "iv") in initial and ("initial-bin", b"\x00\x01\xff") in initial, initial
            assert ("trailing-key", "tv") in trailing and ("trailing-bin", b"\xfe\x00") in trailing, trailing
            assert await call.code() == grpc.StatusCode.OK
    run(main())


def test_time_remaining_and_peer(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s:
            async with s.channel() as ch:
                await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"a"), timeout=5)
                await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"b"))
            assert 3.0 < kv.seen[0]["time_remaining"] <= 5.1, kv.seen[0]
            assert kv.seen[1]["time_remaining"] is None, kv.seen[1]
            assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", kv.seen[0]["peer"]), kv.seen[0]["peer"]
            # The exact client port, seen from a raw connection.
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                c.call(1, RANGE, range_body(b"raw"), timeout="2S")
                r = await c.response(1)
                assert r.status == 0 and r.messages, r
                assert kv.seen[2]["peer"] == f"ipv4:127.0.0.1:{c.local_port}"
                assert 1.0 < kv.seen[2]["time_remaining"] <= 2.1, kv.seen[2]
            finally:
                c.close()
    run(main())


def test_servicer_context_state_and_done_callbacks(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s, s.channel() as ch:
            call = kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"context"), timeout=5)
            assert (await call).count == 1
            # set_details without a code: the status stays OK, the details are not sent.
            assert (await call.code(), await call.details()) == (grpc.StatusCode.OK, "")
            assert kv.seen[0]["before"] == (None, "", False, False)
            assert kv.seen[0]["after"] == (None, "some details")
            await wait_until(lambda: kv.done_callbacks, what="the done callback")
            assert kv.done_callbacks == [(True, True, False, None)]
            # abort raises grpc.aio.AbortError in the handler; code() and details() say what went out.
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"abort_seen"), timeout=5))
            assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "gone")
            assert kv.seen[1]["aborted"] == (grpc.StatusCode.NOT_FOUND, "gone")
    run(main())


class Registered:
    """Servicers registered through another registry (e.g. the metrics wrapper)."""

    def __init__(self, wrap, *servicers) -> None:
        self.wrap = wrap
        self.servicers = servicers

    def register(self, server) -> None:
        reg = self.wrap(server)
        for s in self.servicers:
            s.register(reg)


def test_registration_through_the_metrics_wrapper(wire):
    """engine/http/grpc_metrics.InstrumentedServer registers wrapped handlers
    (add_generic_rpc_handlers + add_registered_method_handlers); the counts
    it keeps need context.code() as the server set it."""
    from engine.http.grpc_metrics import GrpcCollector

    async def main():
        collector = GrpcCollector()
        kv, watch, m = KV(), Watch(), WriteMaintenance(chunks=4)
        async with serving(wire, Registered(collector.instrumented, kv, watch, m)) as s, s.channel() as ch:
            for key in (b"a", b"b"):
                await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=key), timeout=5)
            await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"abort"), timeout=5))
            await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"raise"), timeout=5))
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=5)
            for key in (b"x", b"yy"):
                await call.write(_wreq(key))
                await call.read()
            await call.done_writing()
            assert (await call.read()).canceled
            assert await call.read() is grpc.aio.EOF
            got = [r async for r in rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(),
                                                                              timeout=5)]
            assert len(got) == 4
        rng = ("unary", "etcdserverpb.KV", "Range")
        wat = ("bidi_stream", "etcdserverpb.Watch", "Watch")
        snap = ("server_stream", "etcdserverpb.Maintenance", "Snapshot")
        assert collector.started[rng] == 4
        assert collector.handled[(*rng, "OK")] == 2
        assert collector.handled[(*rng, "InvalidArgument")] == 1
        assert collector.handled[(*rng, "Unknown")] == 1
        assert (collector.received[wat], collector.sent[wat], collector.handled[(*wat, "OK")]) == (2, 3, 1)
        assert (collector.sent[snap], collector.handled[(*snap, "OK")]) == (4, 1)
    run(main())


def test_registration_through_the_decode_guard(wire):
    """engine/api/decode.guarded: undecodable requests get grpc-go's
    INTERNAL "grpc: error unmarshalling request: ..." (unary, bidi
    generator, client-streaming coroutine), and unary handlers may return
    pre-serialized bytes."""
    from engine.api import decode

    async def main():
        kv, watch, peer = KV(), Watch(), Peer()
        garbage = b"\xff" * 40        # field 31, wire type 7: no message parses it
        async with serving(wire, Registered(decode.guarded, kv, watch, peer)) as s, s.channel() as ch:
            raw = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)
            e = await rpc_error(ch.unary_unary("/etcdserverpb.KV/Range", **raw)(garbage, timeout=5))
            assert e.code() == grpc.StatusCode.INTERNAL
            assert e.details().startswith("grpc: error unmarshalling request: "), e.details()
            r = await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"raw_bytes"), timeout=5)
            assert r.count == 42
            call = ch.stream_stream("/etcdserverpb.Watch/Watch", **raw)(timeout=5)
            await call.write(_wreq(b"ok").SerializeToString())
            assert rpc_pb2.WatchResponse.FromString(await call.read()).watch_id == 2
            await call.write(garbage)
            e = await rpc_error(call.read())
            # A generator handler that lets the guard's exception through: the code set
            # stays, the details are grpc's "Unexpected <class ...>" text (engine/api's
            # Watch catches it itself).
            assert e.code() == grpc.StatusCode.INTERNAL
            assert e.details().startswith("Unexpected <class 'engine.api.decode.UndecodableRequest'>: Error "
                                          "parsing message with type 'etcdserverpb.WatchRequest'"), e.details()
            call = ch.stream_unary("/raftuipb.Peer/Stream", **raw)(timeout=5)
            await call.write(peer_pb2.MessageBatch(from_member=7).SerializeToString())
            await call.write(garbage)
            await call.done_writing()
            e = await rpc_error(call)
            assert e.code() == grpc.StatusCode.INTERNAL
            assert e.details().startswith("grpc: error unmarshalling request: "), e.details()
            assert peer.batches == [7] and kv.calls == 1
    run(main())


class RawBytes(grpc.GenericRpcHandler):
    """A generic handler of its own (not method_handlers_generic_handler):
    no serializers, bytes in and out."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def register(self, server) -> None:
        server.add_generic_rpc_handlers((self,))

    def service(self, details):
        self.asked.append(details.method)
        if details.method == "/raw.Echo/Reverse":
            async def reverse(request: bytes, context) -> bytes:
                return request[::-1]
            return grpc.unary_unary_rpc_method_handler(reverse)
        if details.method == "/raw.Echo/Split":
            async def split(request: bytes, context):
                for b in request:
                    yield bytes([b])
            return grpc.unary_stream_rpc_method_handler(split)
        return None


def test_a_generic_handler_with_raw_bytes(wire):
    async def main():
        raw = RawBytes()
        async with serving(wire, raw, KV()) as s, s.channel() as ch:
            assert await ch.unary_unary("/raw.Echo/Reverse")(b"\x00abc\xff", timeout=5) == b"\xffcba\x00"
            assert await ch.unary_unary("/raw.Echo/Reverse")(b"", timeout=5) == b""
            assert [m async for m in ch.unary_stream("/raw.Echo/Split")(b"xyz", timeout=5)] == [b"x", b"y", b"z"]
            e = await rpc_error(ch.unary_unary("/raw.Echo/Other")(b"", timeout=5))
            assert (e.code(), e.details()) == (grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            # Registered methods still answer.
            assert (await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)).kvs[0].key == b"k"
            assert "/raw.Echo/Other" in raw.asked
    run(main())


# -- statuses and their exact messages ---------------------------------------------------

def test_unknown_method_is_unimplemented_trailers_only(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s:
            async with s.channel() as ch:
                for path in ("/etcdserverpb.KV/Nope", "/no.Such/Service", "/etcdserverpb.Watch/Range"):
                    e = await rpc_error(ch.unary_unary(path)(b"", timeout=5))
                    assert (e.code(), e.details()) == (grpc.StatusCode.UNIMPLEMENTED, "Method not found!"), path
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                c.call(1, "/etcdserverpb.KV/Nope", b"")
                r = await c.response(1)
                assert r.trailers is None, f"not trailers-only: {r}"
                assert r.rst is None
                h = dict(r.headers)
                assert h[":status"] == b"200" and h["content-type"].startswith(b"application/grpc"), h
                assert (r.status, r.message) == (12, "Method not found!")
            finally:
                c.close()
            assert kv.calls == 0
    run(main())


def test_handler_exception_is_unknown_with_grpcs_text(wire):
    async def main():
        watch = Watch()
        async with serving(wire, KV(), watch) as s, s.channel() as ch:
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"raise"), timeout=5))
            assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN, "Unexpected <class 'ValueError'>: boom")
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"none"), timeout=5))
            assert e.code() == grpc.StatusCode.UNKNOWN
            assert e.details().startswith("Unexpected <class 'TypeError'>: "), e.details()
            # In a stream, after a message went out.
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=5)
            await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"ab")))
            assert (await call.read()).watch_id == 2
            await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"raise")))
            e = await rpc_error(call.read())
            assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN,
                                               "Unexpected <class 'ValueError'>: boom in a stream")
            # The generated servicer's default: set_code(UNIMPLEMENTED), then raise
            # NotImplementedError. The code set stays; the message is the exception's.
            e = await rpc_error(kv_stub(ch).Txn(rpc_pb2.TxnRequest(), timeout=5))
            assert (e.code(), e.details()) == (grpc.StatusCode.UNIMPLEMENTED,
                                               "Unexpected <class 'NotImplementedError'>: Method not implemented!")
            # The connection still serves.
            assert (await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"ok"), timeout=5)).kvs[0].key == b"ok"
    run(main())


def test_abort_code_and_message_survive_the_wire(wire):
    async def main():
        watch = Watch()
        async with serving(wire, KV(), watch) as s:
            async with s.channel() as ch:
                e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"abort"), timeout=5))
                assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, ABORT_MESSAGE)
                call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=5)
                await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"x")))
                assert (await call.read()).watch_id == 1
                await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"abort")))
                e = await rpc_error(call.read())
                assert (e.code(), e.details()) == (grpc.StatusCode.OUT_OF_RANGE, ABORT_MESSAGE)
                # set_code/set_details without abort: the status wins, the response is dropped.
                e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"set_code"), timeout=5))
                assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "not here: 50%")
            # On the wire: trailers-only, grpc-message percent-encoded (RFC 3986
            # unreserved and printable ASCII kept, '%' and non-ASCII escaped).
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                c.call(1, RANGE, range_body(b"abort"))
                r = await c.response(1)
                assert r.trailers is None and r.status == 3, r
                raw = dict(r.headers)["grpc-message"]
                assert raw == b"bad key: 100%25 %C3%BCn%C3%AFcode%0Aline 2 %2541", raw
                assert r.message == ABORT_MESSAGE
            finally:
                c.close()
    run(main())


def test_request_over_max_receive_is_resource_exhausted(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv, options=[("grpc.max_receive_message_length", 1024)]) as s, \
                s.channel() as ch:
            big = rpc_pb2.RangeRequest(key=b"x" * 2000)
            e = await rpc_error(kv_stub(ch).Range(big, timeout=5))
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert e.details() == f"SERVER: Received message larger than max ({big.ByteSize()} vs. 1024)"
            assert kv.calls == 0
            at_limit = rpc_pb2.RangeRequest(key=b"x" * 1021)
            assert at_limit.ByteSize() == 1024
            assert (await kv_stub(ch).Range(at_limit, timeout=5)).count == 1024
    run(main())


def test_default_max_receive_is_4_mib(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s, s.channel(options=[("grpc.max_send_message_length", -1)]) as ch:
            big = rpc_pb2.RangeRequest(key=b"x" * (4 << 20))
            e = await rpc_error(kv_stub(ch).Range(big, timeout=10))
            assert (e.code(), e.details()) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"SERVER: Received message larger than max ({big.ByteSize()} vs. 4194304)")
            assert kv.calls == 0
    run(main())


def test_response_over_max_send_is_resource_exhausted(wire):
    async def main():
        async with serving(wire, KV(), options=[("grpc.max_send_message_length", 2048),
                                                ("grpc.no.such.option", 1)]) as s, s.channel() as ch:
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"big", limit=3000), timeout=5))
            size = rpc_pb2.RangeResponse(kvs=[{"key": b"big", "value": b"v" * 3000}]).ByteSize()
            assert (e.code(), e.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                               f"SERVER: Sent message larger than max ({size} vs. 2048)")
            r = await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"big", limit=1000), timeout=5)
            assert len(r.kvs[0].value) == 1000
    run(main())


def test_message_limits_apply_to_streams(wire):
    async def main():
        peer, m = Peer(), Maintenance(chunks=3, chunk=3000)
        opts = [("grpc.max_receive_message_length", 1024), ("grpc.max_send_message_length", 2048)]
        async with serving(wire, peer, m, options=opts) as s, s.channel() as ch:
            call = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=5)
            e = await rpc_error(call.read())
            size = m._msg(0).ByteSize()
            assert (e.code(), e.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                               f"SERVER: Sent message larger than max ({size} vs. 2048)")
            call = peer_pb2_grpc.PeerStub(ch).SendSnapshot(timeout=5)
            await call.write(peer_pb2.SnapshotChunk(data=b"s" * 500))
            try:
                await call.write(peer_pb2.SnapshotChunk(data=b"s" * 2000))
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                pass   # the server may have ended the call already
            e = await rpc_error(call)
            chunk = peer_pb2.SnapshotChunk(data=b"s" * 2000).ByteSize()
            assert (e.code(), e.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                               f"SERVER: Received message larger than max ({chunk} vs. 1024)")
            # The handler never saw the oversized chunk (grpc.aio ends its reads with EOF there).
            assert peer.snapshot_bytes == 500
    run(main())


def test_deadline_exceeded_cancels_the_handler(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s, s.channel() as ch:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"sleep", limit=10_000), timeout=0.3))
            assert (e.code(), e.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            assert loop.time() - t0 < 3.0
            assert 0 < kv.seen[0]["time_remaining"] <= 0.35
            await wait_until(lambda: len(kv.cancelled) == 1, what="the handler cancelled at its deadline")
            assert kv.finished == 0
    run(main())


def test_deadline_of_a_stream(wire):
    async def main():
        watch = Watch()
        async with serving(wire, watch) as s, s.channel() as ch:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=0.3)
            await call.write(_wreq(b"a"))
            assert (await call.read()).watch_id == 1
            e = await rpc_error(call.read())
            # The details depend on which side's timer fires first (grpc.aio's server
            # resets the stream: "Stream removed (Deadline Exceeded)").
            assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
            await wait_until(lambda: watch.ended, what="the stream's handler ended at its deadline")
            assert watch.ended[0] in ("cancelled", "closed"), watch.ended
    run(main())


def test_deadline_on_the_wire_is_trailers_only(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s:
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                c.call(1, RANGE, range_body(b"sleep", limit=10_000), timeout="200m")
                r = await c.response(1, timeout=5)
                assert r.trailers is None and (r.status, r.message) == (4, "Deadline Exceeded"), r
            finally:
                c.close()
            await wait_until(lambda: len(kv.cancelled) == 1, what="the handler cancelled")
    run(main())


# -- TLS and identity ------------------------------------------------------------------------

GRPC_INSECURE_AUTH = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


def test_auth_context_on_a_plain_connection_names_nobody(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s, s.channel() as ch:
            await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"auth"), timeout=5)
        auth = kv.seen[0]["auth"]
        # grpc.aio says "insecure"; the contract allows {} (what engine/ reads is the same: no x509_*).
        assert auth in ({}, GRPC_INSECURE_AUTH), auth
    run(main())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("h2pki"))
    p.issue("server", cn="member-1")
    p.issue("alice", cn="alice")                       # SANs 127.0.0.1 + localhost
    p.issue("bob", cn="bob", server=False)             # no SAN
    p.issue("mallory", cn="mallory", server=False)
    p.revoke("mallory")
    p.write_crl()
    p.issue_under_intermediate("carol", cn="carol")
    return p


def tls_channel(pki: Pki, port: int, who: str | None) -> grpc.aio.Channel:
    read = lambda path: open(path, "rb").read()  # noqa: E731
    if who is None:
        creds = grpc.ssl_channel_credentials(read(pki.ca))
    else:
        creds = grpc.ssl_channel_credentials(read(pki.ca), read(pki.key(who)), read(pki.cert(who)))
    return grpc.aio.secure_channel(f"{HOST}:{port}", creds)


def _pem_blocks(path: str) -> list[bytes]:
    data = open(path, "rb").read()
    return [b"-----BEGIN CERTIFICATE-----" + blk.split(b"-----END CERTIFICATE-----")[0]
            + b"-----END CERTIFICATE-----\n" for blk in data.split(b"-----BEGIN CERTIFICATE-----")[1:]]


def test_auth_context_with_tls_client_certificates(wire, pki):
    async def main():
        kv = KV()
        tls = Tls(pki.cert("server"), pki.key("server"), pki.ca, True)
        async with serving(wire, kv, tls=tls) as s:
            for who in ("alice", "bob", "carol"):
                async with tls_channel(pki, s.port, who) as ch:
                    await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"auth"), timeout=5)
            alice, bob, carol = (x["auth"] for x in kv.seen)
            for auth, cn in ((alice, b"alice"), (bob, b"bob"), (carol, b"carol")):
                assert auth["transport_security_type"] == [b"ssl"], auth
                assert auth["security_level"] == [b"TSI_PRIVACY_AND_INTEGRITY"], auth
                assert auth["x509_common_name"] == [cn], auth
            assert alice["x509_pem_cert"] == [_pem_blocks(pki.cert("alice"))[0]], alice["x509_pem_cert"]
            assert sorted(alice["x509_subject_alternative_name"]) == [b"127.0.0.1", b"localhost"], alice
            assert "x509_subject_alternative_name" not in bob, bob
            # carol sent leaf + intermediate: the chain is the intermediate (grpc.aio's, which certcheck reads).
            chain = carol["x509_pem_cert_chain"][0]
            leaf, inter = _pem_blocks(pki.cert("carol"))
            assert inter in chain and leaf not in chain, chain   # grpc's: what came after the leaf
            assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", kv.seen[0]["peer"])
            # No client certificate: the handshake is refused, no handler runs.
            async with tls_channel(pki, s.port, None) as ch:
                e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"auth"), timeout=3))
                assert e.code() == grpc.StatusCode.UNAVAILABLE
            assert kv.calls == 3
    run(main())


def test_tls_without_client_certificates(wire, pki):
    async def main():
        kv = KV()
        async with serving(wire, kv, tls=Tls(pki.cert("server"), pki.key("server"))) as s:
            async with tls_channel(pki, s.port, None) as ch:
                await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"auth"), timeout=5)
            auth = kv.seen[0]["auth"]
            assert auth.get("transport_security_type") == [b"ssl"], auth
            assert not any(k.startswith("x509_") for k in auth), auth
            # A cleartext client on the TLS port gets nothing served.
            async with s.channel() as ch:
                e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=2))
                assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert kv.calls == 1
    run(main())


def test_a_ca_file_alone_requires_client_certificates(wire, pki):
    """etcd 3.4: --trusted-ca-file without --client-cert-auth already asks for
    and verifies client certificates (server_ssl_context(..., ca, False))."""
    async def main():
        kv = KV()
        async with serving(wire, kv, tls=Tls(pki.cert("server"), pki.key("server"), pki.ca, False)) as s:
            async with tls_channel(pki, s.port, None) as ch:
                e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=3))
                assert e.code() == grpc.StatusCode.UNAVAILABLE
            async with tls_channel(pki, s.port, "bob") as ch:
                await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"auth"), timeout=5)
            assert kv.calls == 1 and kv.seen[0]["auth"]["x509_common_name"] == [b"bob"]
    run(main())


def test_big_messages_streams_and_back_pressure_over_tls(wire, pki):
    async def main():
        kv, m = KV(), Maintenance(chunks=2000, chunk=256 << 10)
        opts = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
        tls = Tls(pki.cert("server"), pki.key("server"), pki.ca, True)
        read = lambda path: open(path, "rb").read()  # noqa: E731
        creds = grpc.ssl_channel_credentials(read(pki.ca), read(pki.key("alice")), read(pki.cert("alice")))
        async with serving(wire, kv, m, options=opts, tls=tls) as s, \
                grpc.aio.secure_channel(s.target, creds, options=[("grpc.max_receive_message_length", 16 << 20)]) as ch:
            key = os.urandom(3 << 20)
            assert (await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=key), timeout=20)).kvs[0].key == key
            r = await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"big", limit=5 << 20), timeout=20)
            assert r.kvs[0].value == b"v" * (5 << 20)
            call = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=30)
            for i in range(3):
                assert (await call.read()).blob[:1] == bytes([i])
            stuck = await settled(lambda: m.written, what="messages written")
            print(f"{wire.name} over TLS: the writer stopped after {stuck} messages of 256 KiB")
            assert stuck * (256 << 10) <= 64 << 20, stuck
            call.cancel()
            await wait_until(lambda: m.cancelled == 1, what="the writer cancelled")
    run(main())


def test_certcheck_interceptor_refuses_a_revoked_client_before_the_handler(wire, pki):
    async def main():
        kv, watch = KV(), Watch()
        tls = Tls(pki.cert("server"), pki.key("server"), pki.ca, True)
        interceptor = certcheck.CertRuleInterceptor(certcheck.CertRules(pki.crl))
        async with serving(wire, kv, watch, tls=tls, interceptors=[interceptor]) as s:
            async with tls_channel(pki, s.port, "alice") as ch:
                assert (await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)).kvs[0].key == b"k"
            async with tls_channel(pki, s.port, "mallory") as ch:
                e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5))
                assert (e.code(), e.details()) == (grpc.StatusCode.UNAVAILABLE, certcheck.REFUSED_DETAILS)
                # Refused as soon as the call opens: nothing to write first (a write
                # racing the refusal fails on the client's side, INTERNAL).
                call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=5)
                assert await call.code() == grpc.StatusCode.UNAVAILABLE
            assert kv.calls == 1 and watch.requests == 0 and interceptor.refused == 2
    run(main())


# -- interceptors -----------------------------------------------------------------------------

class Recorder(grpc.aio.ServerInterceptor):
    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    async def intercept_service(self, continuation, details):
        self.log.append((self.name, details.method, dict(details.invocation_metadata or ()).get("token")))
        return await continuation(details)


class Refuser(grpc.aio.ServerInterceptor):
    """Calls with metadata refuse=1 are aborted before the handler runs;
    hide=1 makes the method unknown (the interceptor returns None)."""

    async def intercept_service(self, continuation, details):
        md = dict(details.invocation_metadata or ())
        if md.get("hide") == "1":
            return None
        handler = await continuation(details)
        if md.get("refuse") != "1" or handler is None:
            return handler
        if handler.unary_unary is not None:
            async def refuse(request, context):
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused by interceptor")
            return handler._replace(unary_unary=refuse)

        async def refuse_stream(request_iterator, context):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "refused by interceptor")
            yield  # pragma: no cover
        return handler._replace(stream_stream=refuse_stream)


def test_interceptors_run_in_order_and_can_refuse_before_the_handler(wire):
    async def main():
        log: list = []
        kv, watch = KV(), Watch()
        interceptors = [Recorder("first", log), Recorder("second", log), Refuser()]
        async with serving(wire, kv, watch, interceptors=interceptors) as s, s.channel() as ch:
            await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"a"), metadata=(("token", "t1"),), timeout=5)
            assert log == [("first", "/etcdserverpb.KV/Range", "t1"), ("second", "/etcdserverpb.KV/Range", "t1")]
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"a"),
                                                  metadata=(("refuse", "1"),), timeout=5))
            assert (e.code(), e.details()) == (grpc.StatusCode.PERMISSION_DENIED, "refused by interceptor")
            call = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=(("refuse", "1"),), timeout=5)
            assert await call.code() == grpc.StatusCode.PERMISSION_DENIED
            assert await call.details() == "refused by interceptor"
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"a"), metadata=(("hide", "1"),),
                                                  timeout=5))
            assert (e.code(), e.details()) == (grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            assert kv.calls == 1 and watch.requests == 0
            assert [x[0] for x in log] == ["first", "second"] * 4
    run(main())


# -- streaming ------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", [Maintenance, WriteMaintenance], ids=["generator", "write"])
def test_server_streaming(wire, style):
    async def main():
        m = style(chunks=30, chunk=100_000)   # 3 MB in all: past every initial window
        async with serving(wire, m) as s, s.channel() as ch:
            call = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=10)
            got = [r async for r in call]
            assert [r.remaining_bytes for r in got] == list(range(29, -1, -1))
            assert all(r.blob == bytes([i % 251]) * 100_000 for i, r in enumerate(got))
            assert await call.code() == grpc.StatusCode.OK
            assert m.written == 30
    run(main())


def test_client_streaming_iterator_and_read(wire):
    async def main():
        peer = Peer()
        async with serving(wire, peer) as s, s.channel() as ch:
            stub = peer_pb2_grpc.PeerStub(ch)

            async def batches():
                for i in range(1, 51):
                    yield peer_pb2.MessageBatch(from_member=i)
            assert isinstance(await stub.Stream(batches(), timeout=5), peer_pb2.StreamAck)
            assert peer.batches == list(range(1, 51))
            call = stub.SendSnapshot(timeout=10)
            for _ in range(8):
                await call.write(peer_pb2.SnapshotChunk(data=b"s" * 300_000))
            await call.done_writing()
            assert isinstance(await call, peer_pb2.SnapshotAck)
            assert (peer.snapshot_bytes, peer.snapshot_eof) == (2_400_000, 1)
    run(main())


def _wreq(key: bytes) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key))


def test_bidi_generator_interleaves_and_half_close_ends_the_iterator(wire):
    async def main():
        watch = Watch()
        async with serving(wire, watch) as s, s.channel() as ch:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=10)
            for key in (b"a", b"bb", b"ccc"):
                await call.write(_wreq(key))
                assert (await call.read()).watch_id == len(key)   # answered before the next request
            await call.done_writing()
            last = await call.read()
            assert (last.watch_id, last.canceled) == (3, True)
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            assert watch.half_closed == 1
    run(main())


def test_bidi_with_context_read_and_write(wire):
    async def main():
        lease = Lease()
        async with serving(wire, lease) as s, s.channel() as ch:
            call = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(timeout=10)
            for i in (5, 6, 7):
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=i))
                r = await call.read()
                assert (r.ID, r.TTL) == (i, 2 * i)
            await call.done_writing()
            r = await call.read()
            assert (r.ID, r.TTL) == (0, 3)
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK and lease.eof == 1
    run(main())


def test_server_may_end_a_bidi_stream_first(wire):
    async def main():
        watch = Watch()
        async with serving(wire, watch) as s, s.channel() as ch:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=10)
            await call.write(_wreq(b"stop"))
            assert (await call.read()).watch_id == -1
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK
            assert watch.half_closed == 0
    run(main())


def test_client_cancellation_reaches_the_handler(wire):
    async def main():
        kv, watch, m = KV(), Watch(), Maintenance(chunks=10_000, chunk=100_000)
        async with serving(wire, kv, watch, m) as s, s.channel() as ch:
            call = kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"sleep", limit=20_000), timeout=30)
            await wait_until(lambda: kv.active == 1, what="the handler running")
            call.cancel()
            await wait_until(lambda: len(kv.cancelled) == 1, what="the unary handler cancelled")
            if wire.name == "h2":   # the contract; grpc.aio 1.85 says False even after the cancellation
                assert kv.cancelled == [True], "context.cancelled() is False inside a client-cancelled handler"
            wc = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=30)
            await wc.write(_wreq(b"w"))
            assert (await wc.read()).watch_id == 1
            wc.cancel()
            await wait_until(lambda: watch.ended, what="the bidi handler ended")
            print(f"{wire.name}: a client-cancelled bidi handler ended: {watch.ended}")
            sc = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=30)
            await sc.read()
            sc.cancel()
            await wait_until(lambda: m.cancelled == 1, what="the server-streaming handler cancelled")
            assert m.written < 10_000
            assert (await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"after"), timeout=5)).kvs[0].key == b"after"
    run(main())


@pytest.mark.parametrize("style", [Maintenance, WriteMaintenance], ids=["generator", "write"])
def test_a_slow_reader_pushes_back_on_a_fast_writer(wire, style):
    """The handler's yield/write() blocks when the client reads nothing:
    what it got past stays bounded (flow-control windows and the socket
    buffers), far below what it wants to send."""
    async def main():
        chunk = 256 << 10
        m = style(chunks=2000, chunk=chunk)     # 500 MiB if nothing pushed back
        async with serving(wire, m) as s, s.channel() as ch:
            call = rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=30)
            for _ in range(2):
                await call.read()
            await settled(lambda: m.written, what="messages written")
            print(f"{wire.name}: the writer stopped after {m.written} messages of 256 KiB")
            assert m.written * chunk <= 64 << 20, f"{m.written} messages of 256 KiB written to a reader that stopped"
            # Reading again lets it continue.
            before = m.written
            for _ in range(200):
                await call.read()
                if m.written > before:
                    break
            assert m.written > before, "the writer did not move on when the reader did"
            call.cancel()
            await wait_until(lambda: m.cancelled == 1, what="the writer cancelled")
    run(main())


class SlowSink(peer_pb2_grpc.PeerServicer):
    """Reads one chunk, then nothing until `go` is set."""

    def __init__(self) -> None:
        self.read = 0
        self.go: asyncio.Event | None = None

    def register(self, server) -> None:
        peer_pb2_grpc.add_PeerServicer_to_server(self, server)

    async def SendSnapshot(self, request_iterator, context):
        while True:
            if self.read == 1:
                await self.go.wait()
            chunk = await context.read()
            if chunk is grpc.aio.EOF:
                return peer_pb2.SnapshotAck()
            self.read += 1


def test_a_slow_handler_pushes_back_on_a_fast_client(wire):
    """Request flow control: credit goes back as the handler reads, not as
    bytes arrive, so a client writing faster than the handler reads waits."""
    async def main():
        sink = SlowSink()
        sink.go = asyncio.Event()
        chunk, total = 1 << 20, 200            # 200 MiB if nothing pushed back
        async with serving(wire, sink, options=[("grpc.max_receive_message_length", 2 << 20)]) as s, \
                s.channel() as ch:
            call = peer_pb2_grpc.PeerStub(ch).SendSnapshot(timeout=30)
            written = 0

            async def writer():
                nonlocal written
                for _ in range(total):
                    await call.write(peer_pb2.SnapshotChunk(data=b"c" * chunk))
                    written += 1
                await call.done_writing()
            task = asyncio.ensure_future(writer())
            try:
                await wait_until(lambda: sink.read == 1, what="the first chunk read")
                stuck = await settled(lambda: written, what="chunks written")
                print(f"{wire.name}: the client stopped after {stuck} chunks of 1 MiB")
                assert stuck * chunk <= 64 << 20, f"{stuck} MiB taken by a handler that reads nothing"
                sink.go.set()
                await asyncio.wait_for(task, 20)
                assert isinstance(await call, peer_pb2.SnapshotAck)
                assert sink.read == total
            finally:
                task.cancel()
    run(main())


# -- sizes and concurrency ---------------------------------------------------------------------------

def test_big_messages_both_ways(wire):
    async def main():
        opts = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]
        async with serving(wire, KV(), options=opts) as s, \
                s.channel(options=[("grpc.max_receive_message_length", 16 << 20)]) as ch:
            key = os.urandom(3 << 20)
            r = await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=key), timeout=20)
            assert r.kvs[0].key == key
            r = await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"big", limit=5 << 20), timeout=20)
            assert r.kvs[0].value == b"v" * (5 << 20)
            keys = [os.urandom(1 << 20) for _ in range(6)]
            rs = await asyncio.gather(*(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=k), timeout=20) for k in keys))
            assert [x.kvs[0].key for x in rs] == keys
    run(main())


def test_many_concurrent_calls_on_one_connection(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv) as s, s.channel() as ch:
            stub = kv_stub(ch)
            keys = [b"k%d" % i for i in range(400)]
            calls = [stub.Range(rpc_pb2.RangeRequest(key=k), metadata=(("token", k.decode()),), timeout=20)
                     for k in keys]
            calls += [stub.Range(rpc_pb2.RangeRequest(key=b"sleep", limit=200), timeout=20) for _ in range(50)]
            rs = await asyncio.gather(*calls)
            assert [r.kvs[0].key for r in rs[:400]] == keys
            assert [r.count for r in rs[400:]] == [200] * 50
            assert kv.max_active > 1
            peers = {x["peer"] for x in kv.seen}
            assert len(peers) == 1, peers   # one connection
            assert all(dict(x["metadata"]).get("token") == x["key"].decode() for x in kv.seen[:400]
                       if x["key"] != b"sleep")
    run(main())


def test_max_concurrent_streams_is_announced_and_honoured(wire):
    async def main():
        kv = KV()
        async with serving(wire, kv, options=[("grpc.max_concurrent_streams", 2)]) as s:
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                assert c.server_settings.get(S_MAX_CONCURRENT_STREAMS) == 2, c.server_settings
            finally:
                c.close()
            async with s.channel() as ch:
                await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"first"), timeout=5)
                rs = await asyncio.gather(*(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"sleep", limit=150),
                                                              timeout=10) for _ in range(6)),
                                          return_exceptions=True)
            # grpc.aio's client does not queue: streams past the limit come back
            # REFUSED_STREAM (UNAVAILABLE). Never more than 2 handlers at once.
            ok = [r for r in rs if isinstance(r, rpc_pb2.RangeResponse)]
            refused = [r for r in rs if not isinstance(r, rpc_pb2.RangeResponse)]
            assert all(r.count == 150 for r in ok) and len(ok) >= 2, rs
            assert all(isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.UNAVAILABLE
                       for r in refused), refused
            assert kv.max_active == 2
    run(main())


def test_a_busy_clients_pings_are_not_strikes_under_the_default_policy(wire):
    """grpc C-core clients send BDP pings as responses arrive; grpc's server
    counts a ping as a strike only when it has not sent anything since the
    last one (strikes reset on every HEADERS/DATA it writes), so a busy
    client is never sent away with too_many_pings — default options here."""
    async def main():
        kv, watch = KV(), Watch()
        async with serving(wire, kv, watch) as s, s.channel() as ch:
            async def unary():
                for i in range(0, 5000, 100):
                    keys = [b"k%d" % (i + j) for j in range(100)]
                    rs = await asyncio.gather(*(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=k), timeout=10)
                                                for k in keys))
                    assert [r.kvs[0].key for r in rs] == keys

            async def churn():          # watch streams opened, then cancelled or half-closed
                for i in range(150):
                    call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=10)
                    await call.write(_wreq(b"w"))
                    assert (await call.read()).watch_id == 1
                    if i % 2:
                        call.cancel()
                    else:
                        await call.done_writing()
                        assert (await call.read()).canceled
            await asyncio.gather(unary(), churn())
    run(main())


def test_ping_strikes_reset_when_the_server_sends(wire):
    """The same, frame by frame: PING, a call, PING, a call... — each ping
    follows a response, so none is a strike (grpc's policy), default options."""
    async def main():
        async with serving(wire, KV()) as s:
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                for i in range(10):
                    await c.sync()             # a PING, answered
                    c.call(2 * i + 1, RANGE, range_body(b"k%d" % i))
                    r = await c.response(2 * i + 1)
                    assert r.status == 0 and c.goaway is None, (i, r, c.goaway)
            finally:
                c.close()
    run(main())


def test_pings_are_answered_and_never_punished(wire):
    """raftnode's setting: max_ping_strikes 0 (grpc-go clients ping often)."""
    async def main():
        opts = [("grpc.http2.min_ping_interval_without_data_ms", 5000), ("grpc.http2.max_ping_strikes", 0)]
        async with serving(wire, KV(), options=opts) as s:
            c = await RawH2.connect(s.port)
            try:
                await c.handshake()
                payloads = [os.urandom(8) for _ in range(60)]
                for p in payloads:
                    c.send(frame(PING, 0, 0, p))
                acks = []
                while len(acks) < len(payloads):
                    f = await c.read_frame(5)
                    assert f is not None, f"closed after {len(acks)} pings (goaway {c.goaway})"
                    if f.type == PING and f.flags & FLAG_ACK:
                        acks.append(f.payload)
                assert acks == payloads
                c.call(1, RANGE, range_body(b"after-pings"))
                r = await c.response(1)
                assert r.status == 0 and c.goaway is None, (r, c.goaway)
            finally:
                c.close()
    run(main())


# -- start and stop ----------------------------------------------------------------------------------------

def test_connections_before_start_wait_and_are_served(wire):
    async def main():
        kv = KV()
        server = wire.server()
        kv.register(server)
        port = wire.add_port(server)
        assert port
        try:
            c = await RawH2.connect(port)          # accepted by the listen socket, not refused
            c.call(1, RANGE, range_body(b"early"))
            ch = grpc.aio.insecure_channel(f"{HOST}:{port}")
            early = asyncio.ensure_future(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"early-grpc"), timeout=10))
            await asyncio.sleep(0)                  # let the call begin (no synchronisation relies on it)
            await server.start()
            r = await c.response(1, timeout=10)
            assert r.status == 0 and r.messages, r
            assert (await early).kvs[0].key == b"early-grpc"
            c.close()
            await ch.close()
        finally:
            await server.stop(0)
    run(main())


def test_a_port_that_cannot_be_bound(wire):
    """H2_API.md: add_*_port returns 0 on failure (engine/cli's _bind turns
    that into a flag error); grpc.aio 1.85 raises RuntimeError instead."""
    import socket

    async def main():
        kv = KV()
        server = wire.server()
        kv.register(server)
        busy = socket.socket()
        busy.bind((HOST, 0))
        busy.listen()
        try:
            for address in (f"{HOST}:{busy.getsockname()[1]}", "256.0.0.1:0", "nonsense"):
                try:
                    port = wire.add_port(server, address=address)
                except RuntimeError:
                    assert wire.name == "grpc", f"H2Server raised for {address}: the contract says 0"
                    continue
                assert port == 0, (address, port)
            port = wire.add_port(server)      # a good one still works
            assert port
            await server.start()
            async with grpc.aio.insecure_channel(f"{HOST}:{port}") as ch:
                assert (await kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)).kvs[0].key == b"k"
        finally:
            busy.close()
            await server.stop(0)
    run(main())


def test_stop_cancels_open_streams_after_the_grace(wire):
    async def main():
        watch = Watch()
        server = wire.server()
        watch.register(server)
        port = wire.add_port(server)
        await server.start()
        ch = grpc.aio.insecure_channel(f"{HOST}:{port}")
        try:
            call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=30)
            await call.write(_wreq(b"w"))
            assert (await call.read()).watch_id == 1
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await server.stop(0.5)
            assert loop.time() - t0 < 3.0
            await wait_until(lambda: watch.ended, what="the stream's handler ended")
            assert watch.ended[0] in ("cancelled", "closed"), watch.ended
            e = await rpc_error(call.read())
            # Both wires close the connection: UNAVAILABLE, which clients
            # retry elsewhere (grpc-go would take CANCELLED as final).
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        finally:
            await ch.close()
            await server.stop(0)
    run(main())


def test_stop_with_grace_lets_calls_finish_then_cancels(wire):
    async def main():
        kv = KV()
        server = wire.server()
        kv.register(server)
        port = wire.add_port(server)
        await server.start()
        ch = grpc.aio.insecure_channel(f"{HOST}:{port}")
        try:
            stub = kv_stub(ch)
            short = asyncio.ensure_future(stub.Range(rpc_pb2.RangeRequest(key=b"sleep", limit=300), timeout=10))
            long = asyncio.ensure_future(stub.Range(rpc_pb2.RangeRequest(key=b"sleep", limit=20_000), timeout=30))
            await wait_until(lambda: kv.active == 2, what="both calls in their handlers")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await server.stop(1.0)
            took = loop.time() - t0
            assert 0.9 <= took < 5.0, took
            assert (await short).count == 300           # finished within the grace
            e = await rpc_error(long)
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e
            await wait_until(lambda: len(kv.cancelled) == 1, what="the long handler cancelled")
            # Stopped: new calls are not served; stop again is harmless; termination is reported.
            e = await rpc_error(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=b"late"), timeout=2))
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e
            await server.stop(0)
            await asyncio.wait_for(server.wait_for_termination(), 5)
            assert kv.finished == 1
        finally:
            await ch.close()
            await server.stop(0)
    run(main())


# -- the real Go client ------------------------------------------------------------------------------------

class FooKV(KV):
    async def Range(self, request, context):
        if request.key == b"foo":
            self.calls += 1
            return rpc_pb2.RangeResponse(
                header=rpc_pb2.ResponseHeader(cluster_id=0x1C1, member_id=0x2C2, revision=50, raft_term=3),
                kvs=[{"key": b"foo", "value": b"bar", "create_revision": 2, "mod_revision": 2, "version": 1}],
                count=1)
        return await super().Range(request, context)


async def etcdctl(port: int, *args: str, tls: list[str] | None = None) -> tuple[int, str, str]:
    scheme = "https" if tls else "http"
    proc = await asyncio.create_subprocess_exec(
        "etcdctl", f"--endpoints={scheme}://{HOST}:{port}", "--dial-timeout=3s", "--command-timeout=5s",
        *(tls or []), *args, env={**os.environ, "ETCDCTL_API": "3"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl 3.4 (etcd-client) not installed")
def test_etcdctl_get_status_and_errors(wire, pki):
    async def main():
        kv, m = FooKV(), Maintenance()
        async with serving(wire, kv, m) as s:
            rc, out, err = await etcdctl(s.port, "get", "foo")
            assert (rc, out) == (0, "foo\nbar\n"), err
            rc, out, err = await etcdctl(s.port, "endpoint", "status")
            assert rc == 0 and out.startswith(f"http://{HOST}:{s.port}, 2c2, 3.4.23, 20 kB, true, false, 3, 50, 50"), \
                (out, err)
            # Compact is not implemented by the servicer: the generated code's status reaches Go.
            rc, out, err = await etcdctl(s.port, "compaction", "5")
            assert rc != 0 and ("code = Unimplemented desc = Unexpected <class 'NotImplementedError'>: "
                                "Method not implemented!") in err, err
            # A percent, unicode and a newline in an abort's message arrive intact.
            rc, out, err = await etcdctl(s.port, "get", "abort")
            assert rc != 0 and "code = InvalidArgument desc = bad key: 100% ünïcode\nline 2 %41" in err, err
        tls = Tls(pki.cert("server"), pki.key("server"), pki.ca, True)
        async with serving(wire, FooKV(), Maintenance(), tls=tls) as s:
            flags = [f"--cacert={pki.ca}", f"--cert={pki.cert('alice')}", f"--key={pki.key('alice')}"]
            rc, out, err = await etcdctl(s.port, "get", "foo", tls=flags)
            assert (rc, out) == (0, "foo\nbar\n"), err
            rc, out, err = await etcdctl(s.port, "--dial-timeout=1s", "--command-timeout=1s", "get", "foo",
                                           tls=[f"--cacert={pki.ca}"])
            assert rc != 0 and "bar" not in out, out
    run(main(), timeout=90)


@pytest.mark.soak
def test_soak_mixed_load(wire):
    """20,000 unary calls over 4 connections, with watch streams opened and
    cancelled all along; every answer right, nothing left running."""
    async def main():
        kv, watch = KV(), Watch()
        async with serving(wire, kv, watch) as s:
            channels = [s.channel() for _ in range(4)]
            try:
                async def unary(ch, base):
                    for i in range(0, 5000, 100):
                        keys = [b"k%d-%d" % (base, i + j) for j in range(100)]
                        rs = await asyncio.gather(*(kv_stub(ch).Range(rpc_pb2.RangeRequest(key=k), timeout=30)
                                                    for k in keys))
                        assert [r.kvs[0].key for r in rs] == keys

                async def churn(ch):
                    for i in range(200):
                        call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=30)
                        await call.write(_wreq(b"x" * (i % 7 + 1)))
                        assert (await call.read()).watch_id == i % 7 + 1
                        if i % 2:
                            call.cancel()
                        else:
                            await call.done_writing()
                            assert (await call.read()).canceled
                await asyncio.gather(*(unary(ch, n) for n, ch in enumerate(channels)), churn(channels[0]))
                await wait_until(lambda: len(watch.ended) == 200, timeout=10, what="every watch handler ended")
                assert kv.calls == 20_000
            finally:
                for ch in channels:
                    await ch.close()
    run(main(), timeout=300)


class EventWatch(rpc_pb2_grpc.WatchServicer):
    """Answers a create with created, then `events` PUT events of key=value
    pairs, one response each; then waits for the client to go away."""

    def __init__(self, events: int = 3) -> None:
        self.events = events
        self.gone = 0

    def register(self, server) -> None:
        rpc_pb2_grpc.add_WatchServicer_to_server(self, server)

    async def Watch(self, request_iterator, context):
        header = rpc_pb2.ResponseHeader(cluster_id=0x1C1, member_id=0x2C2, revision=50, raft_term=3)
        try:
            async for req in request_iterator:
                if not req.HasField("create_request"):
                    continue
                key = req.create_request.key
                yield rpc_pb2.WatchResponse(header=header, watch_id=0, created=True)
                for i in range(self.events):
                    kv = {"key": key, "value": b"v%d" % i, "mod_revision": 51 + i, "create_revision": 51,
                          "version": 1 + i}
                    yield rpc_pb2.WatchResponse(header=header, watch_id=0, events=[{"type": 0, "kv": kv}])
        finally:
            self.gone += 1


class HashedSnapshot(Maintenance):
    """Snapshot as etcd sends it: the db (a multiple of 512 bytes), then its
    sha256, which etcdctl checks."""

    async def Snapshot(self, request, context):
        import hashlib
        digest = hashlib.sha256()
        for i in range(self.chunks):
            msg = self._msg(i)
            digest.update(msg.blob)
            yield msg
        yield rpc_pb2.SnapshotResponse(remaining_bytes=0, blob=digest.digest())


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl 3.4 (etcd-client) not installed")
def test_etcdctl_watch_and_snapshot_save(wire, tmp_path):
    """The Go client on the two streaming shapes etcd leans on: Watch (bidi,
    long-lived) and Snapshot (server streaming, megabytes)."""
    async def main():
        import hashlib
        watch, m = EventWatch(), HashedSnapshot(chunks=24, chunk=200_000)
        async with serving(wire, watch, m) as s:
            proc = await asyncio.create_subprocess_exec(
                "etcdctl", f"--endpoints=http://{HOST}:{s.port}", "--dial-timeout=3s", "watch", "foo",
                env={**os.environ, "ETCDCTL_API": "3"}, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
            try:
                lines = []
                while len(lines) < 9:
                    line = await asyncio.wait_for(proc.stdout.readline(), 10)
                    assert line, f"etcdctl watch ended: {lines} {await proc.stderr.read()}"
                    lines.append(line.decode().rstrip("\n"))
                assert lines == ["PUT", "foo", "v0", "PUT", "foo", "v1", "PUT", "foo", "v2"], lines
            finally:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 10)
            await wait_until(lambda: watch.gone == 1, what="the watch handler ended with the client")
            out = tmp_path / f"snap-{wire.name}.db"
            rc, stdout, err = await etcdctl(s.port, "snapshot", "save", str(out))
            assert rc == 0, err
            db = b"".join(m._msg(i).blob for i in range(24))
            assert out.read_bytes() == db + hashlib.sha256(db).digest()
    run(main(), timeout=60)
