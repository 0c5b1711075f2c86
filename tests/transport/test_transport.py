"""PeerTransport over real grpc.aio servers on loopback."""
from __future__ import annotations

import asyncio
import random

import pytest

from engine.proto import raft_pb2 as raftpb
from engine.transport import PeerTransport
from engine.transport.transport import SNAPSHOT_CHUNK_BYTES, url_target
from tests.support.ports import free_port
from tests.transport.helpers import (HOST, Member, close_all, cluster, msg, run,
                                     wait_until)


def test_batches_arrive_in_order_per_peer() -> None:
    async def main():
        a, b, c = await cluster(3)
        try:
            for start in range(0, 1000, 100):
                a.transport.send([msg(peer, 1, i) for i in range(start, start + 100)
                                  for peer in (2, 3)])
            c.transport.send([msg(2, 3, i) for i in range(50)])
            await wait_until(lambda: len(b.received) == 1050 and len(c.received) == 1000,
                             what="all messages")
            assert b.indexes_from(1) == list(range(1000))
            assert c.indexes_from(1) == list(range(1000))
            assert b.indexes_from(3) == list(range(50))
            # Batched: far fewer deliveries than messages.
            assert len(c.batches) <= 10
            assert not a.unreachable and not b.unreachable and not c.unreachable
            assert a.transport.peers()[2].active and a.transport.peers()[2].sent == 1000
        finally:
            await close_all([a, b, c])
    run(main())


def test_down_peer_is_reported_and_reconnects() -> None:
    async def main():
        port = free_port()
        a = await Member(1).start()
        b = Member(2)
        try:
            a.transport.add_peer(2, [f"http://{HOST}:{port}"])
            a.transport.send([msg(2, 1, 0)])
            # Nobody listens: the connect deadline passes, the peer is reported.
            await wait_until(lambda: 2 in a.unreachable, what="unreachable(2)")
            assert not a.transport.is_active(2)
            await b.start(port)
            b.transport.add_peer(1, [a.url])
            await wait_until(lambda: b.received, what="delivery after peer came up",
                             poll=lambda: a.transport.send([msg(2, 1, 1, raftpb.MsgHeartbeat)]))
            assert a.transport.is_active(2)
            # Up, then down again: the stream breaks, the peer is reported.
            await b.stop_server()
            a.unreachable.clear()
            await wait_until(lambda: 2 in a.unreachable, what="unreachable after stop",
                             poll=lambda: a.transport.send([msg(2, 1, 2, raftpb.MsgHeartbeat)]))
            seen = len(b.received)
            await b.start_server(port)
            await wait_until(lambda: len(b.received) > seen, what="delivery after restart",
                             poll=lambda: a.transport.send([msg(2, 1, 3, raftpb.MsgHeartbeat)]))
        finally:
            await close_all([a, b])
    run(main())


def test_five_mib_snapshot_arrives_whole() -> None:
    data = random.Random(7).randbytes(5 * 1024 * 1024 + 123)
    async def main():
        a, b = await cluster(2)
        try:
            snap = raftpb.Snapshot(data=data, metadata=raftpb.SnapshotMetadata(
                index=42, term=3, conf_state=raftpb.ConfState(voters=[1, 2])))
            a.transport.send([msg(2, 1, 0, raftpb.MsgSnap, term=3, snapshot=snap),
                              msg(2, 1, 43, raftpb.MsgHeartbeat)])
            await wait_until(lambda: a.snap_status, what="snapshot status")
            assert a.snap_status == [(2, True)]
            snaps = [m for m in b.received if m.type == raftpb.MsgSnap]
            assert len(snaps) == 1
            got = snaps[0]
            assert got.snapshot.data == data
            assert got.snapshot.metadata.index == 42 and got.from_ == 1 and got.to == 2
            assert list(got.snapshot.metadata.conf_state.voters) == [1, 2]
            assert len(data) > 5 * SNAPSHOT_CHUNK_BYTES  # it really was chunked
            # Heartbeats went their own way meanwhile.
            await wait_until(lambda: any(m.type == raftpb.MsgHeartbeat for m in b.received))
        finally:
            await close_all([a, b])
    run(main())


def test_snapshot_to_down_peer_fails() -> None:
    async def main():
        a = await Member(1).start()
        try:
            a.transport.add_peer(2, [f"http://{HOST}:{free_port()}"])
            a.transport.send([msg(2, 1, 0, raftpb.MsgSnap,
                                  snapshot=raftpb.Snapshot(data=b"x" * 10))])
            await wait_until(lambda: a.snap_status, what="snapshot status")
            assert a.snap_status == [(2, False)]
            assert 2 in a.unreachable
        finally:
            await a.close()
    run(main())


def test_other_cluster_and_wrong_recipient_are_refused() -> None:
    async def main():
        a = await Member(1).start()
        stranger = await Member(2, cluster_id=0x999).start()
        imposter = await Member(3).start()
        try:
            stranger.transport.add_peer(1, [a.url])
            # 3 believes member 4 lives at a's address.
            imposter.transport.add_peer(4, [a.url])
            def poke():
                stranger.transport.send([msg(1, 2, 0, raftpb.MsgHeartbeat)])
                imposter.transport.send([msg(4, 3, 0, raftpb.MsgHeartbeat)])
            await wait_until(lambda: 1 in stranger.unreachable and 4 in imposter.unreachable,
                             what="refused streams reported", poll=poke)
            assert a.received == []
        finally:
            await close_all([a, stranger, imposter])
    run(main())


def test_removed_member_is_refused_and_not_sent_to() -> None:
    async def main():
        a, b = await cluster(2)
        try:
            a.transport.send([msg(2, 1, 0)])
            await wait_until(lambda: b.received)
            b.transport.remove_peer(1)
            a.transport.send([msg(2, 1, 1)])           # b refuses a's stream now
            b.transport.send([msg(1, 2, 0)])           # 1 is unknown to b: lost
            await wait_until(lambda: 1 in b.unreachable and 2 in a.unreachable,
                             poll=lambda: a.transport.send([msg(2, 1, 2)]))
            assert b.indexes_from(1) == [0]
            assert a.received == []
        finally:
            await close_all([a, b])
    run(main())


def test_full_queue_drops_and_reports() -> None:
    async def main():
        a = Member(1)
        a.transport = PeerTransport(1, 0x1C1, a.batches.append, a.unreachable.append,
                                    lambda p, ok: None, queue_size=10)
        await a.start()
        try:
            # The peer never connects (nobody listens), so its queue fills.
            a.transport.add_peer(2, [f"http://{HOST}:{free_port()}"])
            a.transport.send([msg(2, 1, i) for i in range(25)])
            await wait_until(lambda: a.unreachable, what="unreachable on full queue")
            assert a.transport.peers()[2].dropped >= 15
            assert a.transport.peers()[2].queued <= 10
        finally:
            await a.close()
    run(main())


def test_close_leaves_no_tasks() -> None:
    async def main():
        before = asyncio.all_tasks()  # the test's own (run()'s wrapper, this one)
        a, b, c = await cluster(3)
        a.transport.add_peer(9, [f"http://{HOST}:{free_port()}"])  # one peer down
        a.transport.faults.delay(5000, peers={3})                 # one timer pending
        a.transport.send([msg(p, 1, 0) for p in (2, 3, 9)])
        a.transport.send([msg(2, 1, 1, raftpb.MsgSnap, snapshot=raftpb.Snapshot(data=b"s"))])
        await wait_until(lambda: b.received)
        for m in (a, b, c):
            await m.transport.close()
        # Nothing of the transports' own is left, at once.
        assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("peer-")] == []
        for m in (a, b, c):
            await m.stop_server()
        # The servers' handler tasks unwind a moment after stop() returns.
        await wait_until(lambda: asyncio.all_tasks() - before == set(), what="no tasks left")
        with pytest.raises(RuntimeError):
            a.transport.add_peer(5, ["http://127.0.0.1:1"])
        a.transport.send([msg(2, 1, 2)])  # after close: silently nothing
    run(main())


def test_undialable_urls_make_an_unreachable_peer(caplog) -> None:
    """issue 8 item 1: add_peer never raises on URLs; a peer it cannot dial is
    unreachable (reported, one warning), and becomes reachable when its URLs
    are updated to something dialable."""
    async def main():
        a = await Member(1).start()
        b = await Member(2).start()
        try:
            t = a.transport
            bad = ([], ["127.0.0.1:2380"], ["unix:///tmp/x"], ["http://host"],
                   ["https://127.0.0.1:1"], ["http://127.0.0.1:0"], ["unix://sock:1"],
                   ["http://127.0.0.1:"], ["http://127.0.0.1:99999"])
            for i, urls in enumerate(bad):
                t.add_peer(10 + i, urls)          # never raises
                t.update_peer(10 + i, urls[::-1])  # nor does updating
            t.add_peer(2, ["https://127.0.0.1:1"])
            t.send([msg(2, 1, 5, raftpb.MsgHeartbeat)])
            t.send([msg(2, 1, 0, raftpb.MsgSnap, term=3,
                        snapshot=raftpb.Snapshot(data=b"s", metadata=raftpb.SnapshotMetadata(
                            index=1, term=1)))])
            await wait_until(lambda: 2 in a.unreachable and (2, False) in a.snap_status,
                             what="unreachable and failed snapshot")
            assert not t.is_active(2)
            warnings = [r for r in caplog.records if "peer 2 unreachable" in r.getMessage()]
            assert len(warnings) == 1, [r.getMessage() for r in warnings]
            assert "no peer TLS credentials" in warnings[0].getMessage()
            # A well-formed, dialable URL later: the peer is reached.
            b.transport.add_peer(1, [a.url])
            t.update_peer(2, [b.url])
            await wait_until(lambda: b.indexes_from(1) == [7], what="delivery after update",
                             poll=lambda: b.received or t.send([msg(2, 1, 7, raftpb.MsgHeartbeat)]))
            with pytest.raises(ValueError):
                t.add_peer(1, ["http://127.0.0.1:2380"])  # not its own peer
        finally:
            await close_all([a, b])
    run(main())
    assert url_target("https://[::1]:2380") == ("[::1]:2380", True)
    assert url_target("http://u@127.0.0.1:5?x#y") == ("127.0.0.1:5", False)


def test_update_peer_moves_the_stream() -> None:
    async def main():
        a, b = await cluster(2)
        b2 = Member(2)
        b2.transport = b.transport  # same member, second address
        try:
            await b2.start_server()
            a.transport.update_peer(2, [b2.url])
            await b.stop_server()
            await wait_until(lambda: any(m.index == 77 for m in b.received),
                             poll=lambda: a.transport.send([msg(2, 1, 77)]))
        finally:
            await close_all([a, b])
            await b2.stop_server()
    run(main())
