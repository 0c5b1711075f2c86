"""The fault filter, alone and inside live transports, and its gRPC service."""
from __future__ import annotations

import asyncio
import random

import grpc
import grpc.aio
import pytest

from engine.proto import fault_pb2, fault_pb2_grpc
from engine.proto import raft_pb2 as raftpb
from engine.transport import make_server
from engine.transport.fault_service import add_fault_service
from engine.transport.faults import Direction, FaultFilter
from tests.transport.helpers import HOST, close_all, cluster, msg, run, wait_until


# -- the filter alone -------------------------------------------------------------

def test_status_and_log_describe_every_call() -> None:
    clock = iter(range(100, 200))
    f = FaultFilter(rng=random.Random(1), clock=lambda: float(next(clock)))
    assert not f.status().active and f.status().describe() == "no faults"
    f.cut({3})
    f.drop(0.25)
    f.delay(40, 10, peers={2})
    st = f.status()
    assert st.cut == {3} and not st.cut_all
    assert st.drop == {None: 0.25} and st.delay == {2: (40, 10)}
    assert st.describe() == "cut [3], drop 0.25 all, delay 40ms+10ms peer 2"
    f.heal()
    assert not f.status().active
    assert [(e.unix_time, e.what) for e in f.log] == [
        (100.0, "cut peers=[3]"),
        (101.0, "drop rate=0.25 peers=all"),
        (102.0, "delay ms=40 jitter_ms=10 peers=[2]"),
        (103.0, "heal"),
    ]


def test_rules_per_peer_override_the_all_peers_rule() -> None:
    f = FaultFilter(rng=random.Random(1))
    f.drop(1.0)
    f.drop(0.5, peers={2})
    assert f.judge(3) is None                      # all-peers rule: always dropped
    verdicts = [f.judge(2) for _ in range(1000)]   # its own rule: about half
    assert 350 < verdicts.count(None) < 650
    f.drop(0, peers={2})                           # 0 removes peer 2's rule only
    assert f.status().drop == {None: 1.0}
    f.cut(None)
    assert f.judge(2) is None and f.status().cut_all


def test_bad_arguments_are_refused() -> None:
    f = FaultFilter()
    for bad in (lambda: f.drop(1.5), lambda: f.drop(-0.1), lambda: f.delay(-1),
                lambda: f.cut(set()), lambda: f.cut({0})):
        with pytest.raises(ValueError):
            bad()
    assert f.log == ()


def test_drop_rate_is_roughly_honoured() -> None:
    f = FaultFilter(rng=random.Random(42))
    f.drop(0.3)
    got: list[int] = []
    f.filter(2, Direction.OUT, list(range(10_000)), got.extend)
    # Binomial(10000, 0.7): mean 7000, sd ~46; the bound is ~20 sd wide.
    assert 6000 < len(got) < 8000
    assert got == sorted(got)
    assert f.dropped == 10_000 - len(got)


def test_delay_keeps_order_and_does_not_block() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        f = FaultFilter(rng=random.Random(3))
        f.delay(50, jitter_ms=100, peers={2})
        arrived: list[tuple[float, int]] = []
        start = loop.time()
        f.filter(2, Direction.OUT, list(range(20)),
                 lambda items: arrived.extend((loop.time(), i) for i in items))
        f.delay(0, peers={2})
        # No rule any more, but these queue behind the delayed ones (TCP order).
        f.filter(2, Direction.OUT, [20, 21],
                 lambda items: arrived.extend((loop.time(), i) for i in items))
        assert arrived == []        # nothing yet, and filter() returned at once
        ticks = 0
        while len(arrived) < 22:    # the loop keeps running meanwhile
            await asyncio.sleep(0.005)
            ticks += 1
            assert loop.time() - start < 5
        assert [i for _, i in arrived] == list(range(22))
        assert min(t for t, _ in arrived) - start >= 0.05
        assert ticks >= 5
        assert f.delayed == 22
    run(main())


# -- inside live transports ---------------------------------------------------------

def test_cut_told_to_one_member_stops_both_directions() -> None:
    async def main():
        a, b, c = await cluster(3)
        try:
            a.transport.faults.cut({2})   # only member 1 is told
            a.transport.send([msg(2, 1, i) for i in range(5)] + [msg(3, 1, 100)])
            b.transport.send([msg(1, 2, i) for i in range(5)])
            a.transport.send([msg(2, 1, 9, raftpb.MsgSnap,
                                  snapshot=raftpb.Snapshot(data=b"snap"))])
            await wait_until(lambda: c.indexes_from(1) == [100], what="uncut peer served")
            await wait_until(lambda: a.snap_status == [(2, False)], what="cut snapshot fails")
            a.transport.faults.heal()
            # A marker after the heal: the stream keeps order, so once it is
            # there, anything sent during the cut would have arrived before it.
            a.transport.send([msg(2, 1, 50)])
            b.transport.send([msg(1, 2, 50)])
            await wait_until(lambda: b.indexes_from(1) == [50] and a.indexes_from(2) == [50],
                             what="markers after heal")
            assert [m for m in b.received if m.type == raftpb.MsgSnap] == []
        finally:
            await close_all([a, b, c])
    run(main())


def test_cut_all_then_heal() -> None:
    async def main():
        a, b, c = await cluster(3)
        try:
            b.transport.faults.cut(None)
            a.transport.send([msg(2, 1, 1), msg(3, 1, 1)])
            c.transport.send([msg(2, 3, 1)])
            b.transport.send([msg(1, 2, 1), msg(3, 2, 1)])
            await wait_until(lambda: c.indexes_from(1) == [1], what="a->c unaffected")
            b.transport.faults.heal()
            for m in (a, c):
                m.transport.send([msg(2, m.id, 2)])
            b.transport.send([msg(1, 2, 2), msg(3, 2, 2)])
            await wait_until(lambda: b.indexes_from(1) == [2] and b.indexes_from(3) == [2]
                             and a.indexes_from(2) == [2] and c.indexes_from(2) == [2],
                             what="only post-heal messages")
        finally:
            await close_all([a, b, c])
    run(main())


def test_drop_between_live_members() -> None:
    async def main():
        a, b = await cluster(2, faults={1: FaultFilter(rng=random.Random(5))})
        try:
            a.transport.faults.drop(0.5, peers={2})
            a.transport.send([msg(2, 1, i) for i in range(400)])
            a.transport.faults.drop(0, peers={2})
            a.transport.send([msg(2, 1, 1000)])
            await wait_until(lambda: 1000 in b.indexes_from(1), what="marker")
            got = b.indexes_from(1)[:-1]
            assert 100 < len(got) < 300 and got == sorted(got)
        finally:
            await close_all([a, b])
    run(main())


def test_inbound_delay_delays_only_that_peer() -> None:
    async def main():
        loop = asyncio.get_running_loop()
        a, b, c = await cluster(3)
        try:
            # Member 2 delays what comes from 1; member 1 was not told.
            b.transport.faults.delay(300, peers={1})
            t0 = loop.time()
            a.transport.send([msg(2, 1, 1)])
            c.transport.send([msg(2, 3, 1)])
            await wait_until(lambda: b.indexes_from(3) == [1], what="undelayed peer")
            t_fast = loop.time() - t0
            assert b.indexes_from(1) == []
            await wait_until(lambda: b.indexes_from(1) == [1], what="delayed message")
            t_slow = loop.time() - t0
            assert t_slow >= 0.3 and t_fast < 0.3
            # And member 2's own messages to 1 are delayed on the way out.
            t1 = loop.time()
            b.transport.send([msg(1, 2, 7)])
            await wait_until(lambda: a.indexes_from(2) == [7], what="delayed outbound")
            assert loop.time() - t1 >= 0.3
        finally:
            await close_all([a, b, c])
    run(main())


# -- the Fault service ---------------------------------------------------------------

def test_fault_service_roundtrip() -> None:
    async def main():
        f = FaultFilter()
        server = make_server()
        add_fault_service(server, f, member_id=7)
        port = server.add_insecure_port(f"{HOST}:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
        try:
            stub = fault_pb2_grpc.FaultStub(channel)
            st = await stub.Cut(fault_pb2.CutRequest(peers=[2, 3]), timeout=5)
            assert st.member_id == 7 and list(st.cut) == [2, 3] and not st.cut_all
            st = await stub.Drop(fault_pb2.DropRequest(all=True, rate=0.1), timeout=5)
            assert [(d.all, d.rate) for d in st.drops] == [(True, pytest.approx(0.1))]
            st = await stub.Delay(fault_pb2.DelayRequest(peers=[2], ms=30, jitter_ms=5),
                                  timeout=5)
            assert [(d.peer, d.ms, d.jitter_ms) for d in st.delays] == [(2, 30, 5)]
            assert f.status().delay == {2: (30, 5)}
            for bad in (stub.Cut(fault_pb2.CutRequest(), timeout=5),
                        stub.Cut(fault_pb2.CutRequest(all=True, peers=[2]), timeout=5),
                        stub.Drop(fault_pb2.DropRequest(all=True, rate=2), timeout=5)):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await bad
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            st = await stub.Heal(fault_pb2.HealRequest(), timeout=5)
            assert not st.cut and not st.drops and not st.delays and not st.cut_all
            st = await stub.Status(fault_pb2.FaultStatusRequest(), timeout=5)
            assert [e.what for e in st.log] == [
                "cut peers=[2, 3]", "drop rate=0.1 peers=all",
                "delay ms=30 jitter_ms=5 peers=[2]", "heal"]
            assert all(e.unix_nanos > 1_600_000_000 * 10**9 for e in st.log)
        finally:
            await channel.close()
            await server.stop(None)
    run(main())
