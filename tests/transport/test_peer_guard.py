"""issue 8 item 8: the peer port talks only to members, message by message.

A raw grpc client plays the hostile sender against a real PeerTransport
server on loopback; the member under test records what reaches its core
(`on_messages`). A property test runs every message the raft core itself
sends (thousands of simulated schedules) through the same check: nothing
legitimate is dropped.
"""
from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
import pytest

from engine.proto import peer_pb2, peer_pb2_grpc
from engine.proto import raft_pb2 as raftpb
from engine.transport import peerwire
from engine.transport.transport import (MAX_BATCH_MSGS, PEER_RECEIVE_BYTES, check_message)
from tests.transport.helpers import CLUSTER, HOST, Member, close_all, cluster, msg, run, wait_until

ME = 2
PEER = 1


async def push_grpc(port: int, batches: list[peer_pb2.MessageBatch]) -> grpc.StatusCode:
    """Write `batches` on one Peer.Stream; the status it ended with."""
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as ch:
        call = peer_pb2_grpc.PeerStub(ch).Stream(timeout=10)
        try:
            for b in batches:
                await call.write(b)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        try:
            await call
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as e:
            return e.code()


async def push_tcp(port: int, batches: list[peer_pb2.MessageBatch]) -> grpc.StatusCode:
    """Write `batches` as frames on one plain-TCP stream (peerwire), then
    close our side; the status the member's refusal carried, OK if none."""
    opened = await peerwire.open_stream(HOST, port)
    assert opened is not None, "the peer port did not answer MAGIC"
    reader, writer = opened
    try:
        try:
            # As the member's dialer: a header-only first frame, then the batches.
            first = batches[0]
            hello = peer_pb2.MessageBatch(from_member=first.from_member, cluster_id=first.cluster_id,
                                          to_member=first.to_member)
            writer.write(peerwire.frame(hello.SerializeToString()))
            for b in batches:
                writer.write(peerwire.frame(b.SerializeToString()))
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass  # refused mid-way: the answer says why
        while True:
            try:
                body = await asyncio.wait_for(peerwire.read_frame(reader, 1 << 16), 10)
            except (asyncio.IncompleteReadError, ConnectionError):
                return grpc.StatusCode.OK
            if body[0] == peerwire.KIND_END:
                return {c.value[0]: c for c in grpc.StatusCode}[body[1]]
            assert body == bytes([peerwire.KIND_ACK]), body
    finally:
        writer.close()


@pytest.fixture(params=["grpc", "tcp"])
def push(request):
    """Both ways a peer's raft stream arrives: Peer.Stream (gRPC, proxied by
    the peer port) and the plain-TCP stream; the same checks must hold."""
    return push_grpc if request.param == "grpc" else push_tcp


def batch(msgs, frm: int = PEER, to: int = ME, cluster_id: int = CLUSTER) -> peer_pb2.MessageBatch:
    return peer_pb2.MessageBatch(from_member=frm, cluster_id=cluster_id, to_member=to, msgs=msgs)


def hb(index: int, frm: int = PEER, to: int = ME, **kw) -> raftpb.Message:
    return msg(to, frm, index, raftpb.MsgHeartbeat, **kw)


async def member_pair():
    """Member 2 under test, knowing member 1 (whose address nobody needs)."""
    b = await Member(ME).start()
    b.transport.add_peer(PEER, [f"http://{HOST}:1"])
    return b


def test_non_member_is_refused(push) -> None:
    async def main():
        b = await member_pair()
        try:
            prop = raftpb.Message(type=raftpb.MsgProp, from_=9, to=ME,
                                  entries=[raftpb.Entry(data=b"put x")])
            code = await push(b.port, [batch([prop, msg(ME, 9, 1, raftpb.MsgTimeoutNow)], frm=9)])
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            # Wrong cluster, wrong recipient, no recipient: refused as well.
            assert await push(b.port, [batch([hb(1)], cluster_id=0x999)]) == \
                grpc.StatusCode.FAILED_PRECONDITION
            assert await push(b.port, [batch([hb(1)], to=7)]) == grpc.StatusCode.FAILED_PRECONDITION
            assert await push(b.port, [batch([hb(1)], to=0)]) == grpc.StatusCode.FAILED_PRECONDITION
            assert b.received == []
            assert b.transport.refused_streams == 4
            # A member is heard.
            assert await push(b.port, [batch([hb(1)])]) == grpc.StatusCode.OK
            assert [m.index for m in b.received] == [1]
            # Once removed, it is refused too.
            b.transport.remove_peer(PEER)
            assert await push(b.port, [batch([hb(2)])]) == grpc.StatusCode.FAILED_PRECONDITION
            assert [m.index for m in b.received] == [1]
        finally:
            await b.close()
    run(main())


def test_a_stream_has_one_sender(push) -> None:
    async def main():
        b = await member_pair()
        b.transport.add_peer(3, [f"http://{HOST}:1"])
        try:
            # Messages claiming another member inside 1's stream are dropped.
            code = await push(b.port, [batch([hb(1), hb(2, frm=3), hb(3, to=7), hb(4)])])
            assert code == grpc.StatusCode.OK
            assert [(m.from_, m.index) for m in b.received] == [(1, 1), (1, 4)]
            # A later batch naming another sender ends the stream.
            code = await push(b.port, [batch([hb(5)]), batch([hb(6, frm=3)], frm=3),
                                       batch([hb(7)])])
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert [m.index for m in b.received] == [1, 4, 5]
        finally:
            await b.close()
    run(main())


MALFORMED = {
    "MsgHup (local)": raftpb.Message(type=raftpb.MsgHup, from_=PEER, to=ME, term=1),
    "MsgBeat (local)": raftpb.Message(type=raftpb.MsgBeat, from_=PEER, to=ME, term=1),
    "MsgCheckQuorum (local)": raftpb.Message(type=raftpb.MsgCheckQuorum, from_=PEER, to=ME, term=1),
    "MsgUnreachable (local)": raftpb.Message(type=raftpb.MsgUnreachable, from_=PEER, to=ME, term=1),
    "MsgSnapStatus (local)": raftpb.Message(type=raftpb.MsgSnapStatus, from_=PEER, to=ME, term=1),
    "unknown type": raftpb.Message(type=99, from_=PEER, to=ME, term=1),
    "MsgSnap on the stream": raftpb.Message(type=raftpb.MsgSnap, from_=PEER, to=ME, term=1,
                                            snapshot=raftpb.Snapshot(data=b"x" * 1000)),
    "MsgProp without entries": raftpb.Message(type=raftpb.MsgProp, from_=PEER, to=ME),
    "MsgProp with a term": raftpb.Message(type=raftpb.MsgProp, from_=PEER, to=ME, term=5,
                                          entries=[raftpb.Entry(data=b"x")]),
    "MsgApp without a term": raftpb.Message(type=raftpb.MsgApp, from_=PEER, to=ME, index=1),
    "MsgApp with a gap": raftpb.Message(
        type=raftpb.MsgApp, from_=PEER, to=ME, term=2, index=1, log_term=1,
        entries=[raftpb.Entry(term=2, index=2), raftpb.Entry(term=2, index=4)]),
    "MsgApp entry from the future": raftpb.Message(
        type=raftpb.MsgApp, from_=PEER, to=ME, term=2, index=1, log_term=1,
        entries=[raftpb.Entry(term=3, index=2)]),
    "MsgApp entry older than its predecessor": raftpb.Message(
        type=raftpb.MsgApp, from_=PEER, to=ME, term=3, index=1, log_term=2,
        entries=[raftpb.Entry(term=1, index=2)]),
    "entry of unknown type": raftpb.Message(
        type=raftpb.MsgApp, from_=PEER, to=ME, term=2, index=1, log_term=1,
        entries=[raftpb.Entry(term=2, index=2, type=7)]),
    "MsgReadIndex without its context": raftpb.Message(type=raftpb.MsgReadIndex, from_=PEER, to=ME),
    "heartbeat with entries": raftpb.Message(type=raftpb.MsgHeartbeat, from_=PEER, to=ME, term=1,
                                             entries=[raftpb.Entry(data=b"x")]),
    "vote carrying a snapshot": raftpb.Message(type=raftpb.MsgVote, from_=PEER, to=ME, term=1,
                                               snapshot=raftpb.Snapshot(data=b"x")),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_check_message_refuses(name: str) -> None:
    assert check_message(MALFORMED[name], PEER, ME) is not None


def test_malformed_messages_are_dropped_with_few_warnings(caplog, push) -> None:
    caplog.set_level(logging.WARNING, "engine.transport")

    async def main():
        b = await member_pair()
        try:
            bad = list(MALFORMED.values()) * 20
            code = await push(b.port, [batch(bad + [hb(1)]), batch(bad + [hb(2)])])
            assert code == grpc.StatusCode.OK
            assert [m.index for m in b.received] == [1, 2]
            assert b.transport.dropped_incoming == 2 * len(bad)
        finally:
            await b.close()
    run(main())
    drops = [r for r in caplog.records if "dropping a message from peer" in r.getMessage()]
    assert 1 <= len(drops) <= 2, [r.getMessage() for r in drops]


def test_oversized_frames_and_batches_are_refused(push) -> None:
    async def main():
        b = await member_pair()
        try:
            many = batch([hb(i) for i in range(MAX_BATCH_MSGS + 1)])
            assert await push(b.port, [many]) == grpc.StatusCode.INVALID_ARGUMENT
            huge = batch([raftpb.Message(type=raftpb.MsgProp, from_=PEER, to=ME,
                                         entries=[raftpb.Entry(data=b"x" * PEER_RECEIVE_BYTES)])])
            assert await push(b.port, [huge]) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert b.received == []
            assert await push(b.port, [batch([hb(1)])]) == grpc.StatusCode.OK
            assert [m.index for m in b.received] == [1]
        finally:
            await b.close()
    run(main())


def test_transport_between_members_still_flows() -> None:
    """Both directions, every legitimate stream type, between live members."""
    async def main():
        a, b = await cluster(2)
        try:
            ok = [msg(2, 1, 1, raftpb.MsgApp, term=2, log_term=1,
                      entries=[raftpb.Entry(term=2, index=2, data=b"v")]),
                  raftpb.Message(type=raftpb.MsgProp, from_=1, to=2,
                                 entries=[raftpb.Entry(data=b"p")]),
                  raftpb.Message(type=raftpb.MsgReadIndex, from_=1, to=2,
                                 entries=[raftpb.Entry(data=b"ctx")]),
                  msg(2, 1, 3, raftpb.MsgTimeoutNow, term=2)]
            a.transport.send(ok)
            await wait_until(lambda: len(b.received) == len(ok), what="all legitimate messages")
            assert b.transport.dropped_incoming == 0
        finally:
            await close_all([a, b])
    run(main())


def test_everything_the_core_sends_passes() -> None:
    """Random simulated schedules (elections, partitions, snapshots, conf
    changes): every message the raft core sends passes check_message."""
    from engine.sim import cluster as sim_cluster
    from engine.sim.schedule import ScheduleConfig, run_schedule

    refused: list[str] = []
    seen: set[int] = set()
    cls = sim_cluster.SimCluster
    original = cls.deliver

    def checked(self, m):
        seen.add(m.type)
        why = check_message(m, m.from_, m.to, snapshot=m.type == raftpb.MsgSnap)
        if why is not None:
            refused.append(f"{why}: {m}")
        return original(self, m)

    cls.deliver = checked
    try:
        for seed in range(120):
            run_schedule(seed, ScheduleConfig(nodes=(3, 5)[seed % 2], steps=300))
    finally:
        cls.deliver = original
    assert refused == [], refused[:3]
    # The schedules really exercised the interesting types.
    for t in (raftpb.MsgApp, raftpb.MsgHeartbeat, raftpb.MsgVote, raftpb.MsgPreVote,
              raftpb.MsgSnap, raftpb.MsgAppResp):
        assert t in seen, t


def test_a_joiner_does_not_ask_a_peer_whose_certificate_it_refuses():
    """--initial-cluster-state existing: the member list is fetched only
    from a peer whose certificate passes the dial check (allowed CN or
    hostname, CRL), as every other dial of the transport."""
    import asyncio

    import grpc
    import pytest

    from engine.transport.transport import fetch_members

    asked: list[str] = []

    async def refuse(target: str) -> str:
        asked.append(target)
        return "CN intruder not allowed"

    async def main():
        with pytest.raises(ConnectionError, match="certificate of https://127.0.0.1:9 refused: CN intruder"):
            await fetch_members(["https://127.0.0.1:9"], timeout=0.5,
                                tls=grpc.ssl_channel_credentials(), dial_check=refuse)
    asyncio.run(main())
    assert asked == ["127.0.0.1:9"]


GARBAGE = b"\xff" * 40   # field 31, wire type 7: no protobuf message parses it


async def push_garbage_grpc(port: int) -> grpc.StatusCode:
    """Bytes that are no MessageBatch, as one Peer.Stream frame."""
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as ch:
        call = ch.stream_unary("/raftuipb.Peer/Stream", request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)(timeout=10)
        try:
            await call.write(GARBAGE)
            await call.done_writing()
            await call
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as e:
            return e.code()


async def push_garbage_tcp(port: int) -> grpc.StatusCode:
    """The same bytes as the first frame after a plain stream's greeting."""
    reader, writer = await peerwire.open_stream(HOST, port)
    try:
        writer.write(peerwire.frame(GARBAGE))
        body = await asyncio.wait_for(peerwire.read_frame(reader, 1 << 16), 10)
        assert body[0] == peerwire.KIND_END, body
        return {c.value[0]: c for c in grpc.StatusCode}[body[1]]
    finally:
        writer.close()


@pytest.mark.parametrize("push_garbage", [push_garbage_grpc, push_garbage_tcp], ids=["grpc", "tcp"])
def test_an_undecodable_frame_ends_the_stream(push_garbage) -> None:
    async def main():
        b = await member_pair()
        try:
            assert await push_garbage(b.port) == grpc.StatusCode.INVALID_ARGUMENT
            assert b.received == [] and b.transport.refused_streams == 1
            # The port keeps serving the member.
            assert await push_tcp(b.port, [batch([hb(1)])]) == grpc.StatusCode.OK
            assert [m.index for m in b.received] == [1]
        finally:
            await b.close()
    run(main())
