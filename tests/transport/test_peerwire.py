"""The peer port's plain-TCP raft stream (engine/transport/peerwire).

Real sockets on 127.0.0.1 and real PeerTransports; the hostile-batch checks
shared with Peer.Stream run both ways in test_peer_guard.py. Here: which
path a stream takes, the fall-back to Peer.Stream, refusals and liveness on
the plain stream, and what the listener does with connections that are
neither our stream nor gRPC.
"""
from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest

from engine.proto import peer_pb2, peer_pb2_grpc
from engine.proto import raft_pb2 as raftpb
from engine.transport import peerwire
from tests.transport.helpers import HOST, Member, close_all, cluster, msg, run, wait_until


def hb(to: int, frm: int, index: int) -> raftpb.Message:
    return msg(to, frm, index, raftpb.MsgHeartbeat)


def test_streams_between_members_take_the_plain_tcp_path() -> None:
    async def main():
        a, b = await cluster(2)
        try:
            a.transport.send([hb(2, 1, i) for i in range(1, 4)])
            b.transport.send([hb(1, 2, 7)])
            await wait_until(lambda: len(b.received) == 3 and len(a.received) == 1, what="delivery")
            assert [m.index for m in b.received] == [1, 2, 3]
            assert a.front.raw_streams >= 1 and b.front.raw_streams >= 1
            # No raft stream went through gRPC: nothing was proxied but the
            # channels the probers and writers open (no Peer.Stream batch).
            assert a.transport.peers()[2].received_bytes > 0
            assert b.transport.peers()[1].received_bytes > 0
        finally:
            await close_all([a, b])
    run(main())


def test_a_peer_without_the_listener_gets_peer_stream() -> None:
    """A member whose port is the gRPC server alone (the transport tests'
    and an older member's): the dialer falls back to Peer.Stream."""
    async def main():
        a = await Member(1).start()
        b = await Member(2, peer_port=False).start()
        try:
            a.transport.add_peer(2, [b.url])
            b.transport.add_peer(1, [a.url])
            a.transport.send([hb(2, 1, 1)])
            b.transport.send([hb(1, 2, 5)])
            await wait_until(lambda: len(b.received) == 1 and len(a.received) == 1, what="delivery")
            assert a.transport._peers[2].raw_retry_at > 0   # it asked, and was told no
            assert b.transport._peers[1].raw_retry_at == 0  # a's port speaks it
            assert a.front.raw_streams >= 1
        finally:
            await close_all([a, b])
    run(main())


def test_a_removed_member_hears_it_on_the_plain_stream() -> None:
    async def main():
        a, b = await cluster(2)
        removed: list[int] = []
        a.transport.on_removed = removed.append
        try:
            a.transport.send([hb(2, 1, 1)])
            await wait_until(lambda: len(b.received) == 1, what="first delivery")
            b.transport.remove_peer(1)
            # The next batch is refused "removed member"; the dialer tells its host.
            await wait_until(lambda: removed == [2], what="on_removed",
                             poll=lambda: a.transport.send([hb(2, 1, 2)]))
            assert [m.index for m in b.received] == [1]
        finally:
            await close_all([a, b])
    run(main())


def test_a_member_that_stops_answering_is_marked_down(monkeypatch) -> None:
    """b stops sending acks (its ack timer patched out): a marks b down
    within DEAD_AFTER and reconnects."""
    monkeypatch.setattr(peerwire, "DEAD_AFTER", 0.5)
    monkeypatch.setattr(peerwire, "ack_frame", lambda: b"")

    async def main():
        a, b = await cluster(2)
        try:
            a.transport.send([hb(2, 1, 1)])
            await wait_until(lambda: len(b.received) >= 1, what="first delivery")
            first = b.front.raw_streams
            await wait_until(lambda: 2 in a.unreachable, timeout=10, what="peer marked down",
                             poll=lambda: a.transport.send([hb(2, 1, 2)]))
            await wait_until(lambda: b.front.raw_streams > first, timeout=10, what="a new stream",
                             poll=lambda: a.transport.send([hb(2, 1, 3)]))
        finally:
            await close_all([a, b])
    run(main())


def test_grpc_calls_share_the_port() -> None:
    async def main():
        b = await Member(2).start()
        try:
            async with grpc.aio.insecure_channel(f"{HOST}:{b.port}") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await peer_pb2_grpc.PeerStub(ch).Members(peer_pb2.MembersRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # the servicer's own answer
            assert b.front.proxied >= 1
        finally:
            await b.close()
    run(main())


def test_connections_that_are_neither_are_closed(monkeypatch) -> None:
    """Silence, a short greeting, and garbage: each connection ends, none
    reaches the core, and the port keeps serving members."""
    monkeypatch.setattr(peerwire, "SNIFF_TIMEOUT", 0.3)

    async def main():
        a, b = await cluster(2)
        try:
            async def closed_by_member(payload: bytes) -> bool:
                r, w = await asyncio.open_connection(HOST, b.port)
                try:
                    if payload:
                        w.write(payload)
                        await w.drain()
                    try:
                        while await asyncio.wait_for(r.read(1 << 16), 5):
                            pass
                    except ConnectionError:
                        pass
                    return True
                finally:
                    w.close()
            assert await closed_by_member(b"")                      # silence: sniff timeout
            assert await closed_by_member(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 100)  # garbage: gRPC refuses
            assert await closed_by_member(peerwire.MAGIC[:10])      # a short greeting, then silence
            assert b.received == []
            a.transport.send([hb(2, 1, 1)])
            await wait_until(lambda: len(b.received) == 1, what="delivery after the junk")
        finally:
            await close_all([a, b])
    run(main())


def test_frames_over_the_limit_are_refused_before_they_are_read() -> None:
    async def main():
        b = await Member(2).start()
        b.transport.add_peer(1, [f"http://{HOST}:1"])
        b.transport.receive_limit = 1000
        try:
            reader, writer = await peerwire.open_stream(HOST, b.port)
            # Announce 2 GB and send none of it: the answer comes at once.
            writer.write((2 << 30).to_bytes(4, "big"))
            body = await asyncio.wait_for(peerwire.read_frame(reader, 1 << 16), 5)
            assert body[0] == peerwire.KIND_END
            assert body[1] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
            assert b"at most 1000" in body[2:]
            assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
            writer.close()
            assert b.received == []
        finally:
            await b.close()
    run(main())


def test_only_a_definite_answer_means_the_peer_does_not_speak_it(monkeypatch) -> None:
    """open_stream: gRPC's SETTINGS -> None (fall back to Peer.Stream);
    silence or a closed connection -> an error (a busy or stopping member
    must not be talked to over gRPC for good)."""
    monkeypatch.setattr(peerwire, "HANDSHAKE_TIMEOUT", 0.3)

    async def main():
        grpc_only = await Member(2, peer_port=False).start()

        async def silent(reader, writer):
            await reader.read()

        async def hangs_up(reader, writer):
            await reader.readexactly(len(peerwire.MAGIC))
            writer.close()
        servers = [await asyncio.start_server(h, HOST, 0) for h in (silent, hangs_up)]
        try:
            assert await peerwire.open_stream(HOST, grpc_only.port) is None
            with pytest.raises(asyncio.TimeoutError):
                await peerwire.open_stream(HOST, servers[0].sockets[0].getsockname()[1])
            with pytest.raises(ConnectionError):
                await peerwire.open_stream(HOST, servers[1].sockets[0].getsockname()[1])
        finally:
            for s in servers:
                s.close()
            await grpc_only.close()
    run(main())
