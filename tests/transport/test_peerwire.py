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


async def mixed_pair() -> tuple[Member, Member]:
    """Member 1 serves the peer port as raftnode does; member 2 is the gRPC
    server alone (an older member's port); each knows the other."""
    a = await Member(1).start()
    b = await Member(2, peer_port=False).start()
    a.transport.add_peer(2, [b.url])
    b.transport.add_peer(1, [a.url])
    return a, b


def test_a_peer_without_the_listener_gets_peer_stream() -> None:
    """A member whose port is the gRPC server alone (the transport tests'
    and an older member's): the dialer falls back to Peer.Stream."""
    async def main():
        a, b = await mixed_pair()
        try:
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


def test_a_removed_member_with_nothing_to_send_hears_it_from_its_greeting() -> None:
    """The dialer's first frame (header only) is checked at once, so a
    restarted removed learner, which has no raft message to send, is told
    on connecting (Peer.Stream opened nothing before a message: there only
    the prober could tell, tests/hardening/test_server_removed.py)."""
    async def main():
        a, b = await Member(1).start(), await Member(2).start()
        removed: list[int] = []
        a.transport.on_removed = removed.append
        try:
            b.transport.add_peer(1, [f"http://{HOST}:1"])
            b.transport.remove_peer(1)          # b applied a's removal
            a.transport.add_peer(2, [b.url])    # a sends nothing
            await wait_until(lambda: removed == [2], 10, "a to learn it was removed")
            assert b.transport.refused_streams >= 1   # by the stream, not (only) a probe
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
    """The first frame is held to HELLO_LIMIT (nobody gets a big buffer
    before the gate admitted them); later ones to the receive limit."""
    async def main():
        b = await Member(2).start()
        b.transport.add_peer(1, [f"http://{HOST}:1"])
        b.transport.receive_limit = 100_000
        try:
            async def refusal(frames: list[bytes]) -> bytes:
                reader, writer = await peerwire.open_stream(HOST, b.port)
                try:
                    for f in frames:
                        writer.write(f)
                    body = await asyncio.wait_for(peerwire.read_frame(reader, 1 << 16), 5)
                    while body == bytes([peerwire.KIND_ACK]):
                        body = await asyncio.wait_for(peerwire.read_frame(reader, 1 << 16), 5)
                    assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
                    return body
                finally:
                    writer.close()
            # Announce 2 GB and send none of it: the answer comes at once.
            body = await refusal([(2 << 30).to_bytes(4, "big")])
            assert body[:2] == bytes([peerwire.KIND_END, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]])
            assert f"at most {peerwire.HELLO_LIMIT}".encode() in body
            hello = peerwire.frame(peer_pb2.MessageBatch(from_member=1, cluster_id=b.cluster_id,
                                                         to_member=2).SerializeToString())
            body = await refusal([hello, (200_000).to_bytes(4, "big")])
            assert body[:2] == bytes([peerwire.KIND_END, grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]])
            assert b"at most 100000" in body
            assert b.received == []
        finally:
            await b.close()
    run(main())


def test_connections_are_bounded(monkeypatch) -> None:
    """Connections not admitted yet are capped and timed: a stranger who
    greets and then says nothing is closed at the deadline, and beyond
    MAX_PENDING new connections are closed at once; members still get in."""
    monkeypatch.setattr(peerwire, "MAX_PENDING", 3)
    monkeypatch.setattr(peerwire, "SNIFF_TIMEOUT", 1.5)

    async def main():
        a, b = await cluster(2)
        held = []
        try:
            await wait_until(lambda: b.front.raw_streams >= 1, what="a's stream",
                             poll=lambda: a.transport.send([hb(2, 1, 1)]))
            for _ in range(3):
                r, w = await asyncio.open_connection(HOST, b.port)
                w.write(peerwire.MAGIC)   # greets, sends no first frame
                held.append((r, w))
            await wait_until(lambda: b.front._pending == 3, what="three pending")
            r, w = await asyncio.open_connection(HOST, b.port)
            assert await asyncio.wait_for(r.read(), 5) == b""   # turned away at once
            w.close()
            assert b.front.turned_away == 1
            for r, w in held:   # the held ones end at the deadline
                assert await asyncio.wait_for(r.read(), 10) == peerwire.MAGIC
                assert await asyncio.wait_for(r.read(), 10) == b""
                w.close()
            await wait_until(lambda: b.front._pending == 0, what="none pending")
            # The member's own stream was never disturbed.
            before = len(b.received)
            a.transport.send([hb(2, 1, 2)])
            await wait_until(lambda: len(b.received) > before, what="delivery")
        finally:
            for _, w in held:
                w.close()
            await close_all([a, b])
    run(main())


def test_peer_stream_gives_way_to_the_plain_stream_when_the_peer_learns_it(monkeypatch) -> None:
    """A peer that spoke only Peer.Stream restarts on a build with the peer
    port: its dialer moves to the plain stream once RAW_RETRY_SECONDS are
    up, while the Peer.Stream it had was still healthy."""
    from engine.transport import transport as tr
    monkeypatch.setattr(tr, "RAW_RETRY_SECONDS", 1.0)

    async def main():
        a, b = await mixed_pair()
        try:
            await wait_until(lambda: len(b.received) >= 1, what="delivery over Peer.Stream",
                             poll=lambda: a.transport.send([hb(2, 1, 1)]))
            first_ask = a.transport._peers[2].raw_retry_at
            assert first_ask > 0
            # While b still speaks only Peer.Stream, a asks again when the
            # time is up, without ever calling b unreachable.
            await wait_until(lambda: a.transport._peers[2].raw_retry_at > first_ask, timeout=10,
                             what="asked again", poll=lambda: a.transport.send([hb(2, 1, 1)]))
            assert 2 not in a.unreachable
            # b gets the peer port in front of the same gRPC server, same address.
            port = b.port
            await b.stop_server()
            b.use_peer_port = True
            await b.start_server(port)
            await wait_until(lambda: b.front.raw_streams >= 1, timeout=10, what="the plain stream",
                             poll=lambda: a.transport.send([hb(2, 1, 2)]))
        finally:
            await close_all([a, b])
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
