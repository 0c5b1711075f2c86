"""One-way links: the fault filter's directions, the Fault service's new
fields (old requests unchanged, hostile ones refused before anything is
stored), the link matrix read from fault statuses, and the matrix screen on
a fixed state. No cluster here: the end-to-end proof is in test_hosted."""
from __future__ import annotations

import dataclasses
import time

import grpc
import grpc.aio
import pytest

from engine.proto import fault_pb2, fault_pb2_grpc
from engine.transport import make_server
from engine.transport.fault_service import add_fault_service
from engine.transport.faults import MAX_PEERS, Direction, FaultFilter
from raftui.app import RaftuiApp
from raftui.screens.confirm import ConfirmScreen
from raftui.screens.form import FormScreen
from raftui.screens.links import LinksScreen
from raftui.source import links
from raftui.source.faults import IN, OUT, FaultView, view_of
from raftui.widgets.cluster_panel import ClusterPanel
from raftui.widgets.link_matrix import LinkMatrix

from .conftest import run, until
from .fake_state import STATE, FakeSource

N1, N2, N3 = 0x1001, 0x1002, 0x1003


# ------------------------------------------------------------ the filter

def test_a_one_way_cut_stops_one_direction_only():
    f = FaultFilter()
    f.cut({2}, Direction.OUT)
    assert f.judge(2, Direction.OUT) is None and f.judge(2, Direction.IN) == 0.0
    assert f.judge(3, Direction.OUT) == 0.0
    st = f.status()
    assert st.cut_out == {2} and not st.cut and not st.cut_in and not st.cut_all
    assert st.cuts(2, Direction.OUT) and not st.cuts(2, Direction.IN)
    f.cut({2}, Direction.IN)                        # the other way too: now a both-ways cut
    st = f.status()
    assert st.cut == {2} and not st.cut_out and not st.cut_in
    f.uncut({2}, Direction.OUT)                     # back to one way (in)
    assert f.status().cut_in == {2} and f.judge(2, Direction.OUT) == 0.0
    f.cut(None, Direction.OUT)                      # everything out
    assert f.status().cut_all_out and f.judge(3, Direction.OUT) is None and f.judge(3, Direction.IN) == 0.0
    f.uncut({3}, Direction.OUT)                     # a peer's own uncut leaves the all-peers cut
    assert f.judge(3, Direction.OUT) is None
    f.uncut(None)                                   # every cut, both ways; nothing else touched
    assert not f.status().active
    assert [e.what for e in f.log][-1] == "uncut peers=all"
    assert "cut peers=[2] direction=out" in [e.what for e in f.log]


def test_both_ways_calls_read_as_before_and_per_direction_rules_split():
    f = FaultFilter()
    f.drop(0.25)
    f.delay(40, 10, peers={2})
    st = f.status()
    assert st.drop == {None: 0.25} and st.delay == {2: (40, 10)} and not st.drop_out and not st.delay_in
    f.drop(0.5, peers={3}, direction=Direction.OUT)
    f.delay(100, peers={2}, direction=Direction.IN)     # in differs from out now
    st = f.status()
    assert st.drop_out == {3: 0.5} and st.delay == {} and st.delay_out == {2: (40, 10)}
    assert st.delay_in == {2: (100, 0)}
    assert st.describe() == ("drop 0.25 all, drop out 0.5 peer 3, delay out 40ms+10ms peer 2, "
                             "delay in 100ms+0ms peer 2")


def test_the_filter_refuses_huge_and_bad_peer_lists():
    f = FaultFilter()
    for bad in (lambda: f.cut(set(range(1, MAX_PEERS + 2)), Direction.OUT), lambda: f.uncut(set()),
                lambda: f.drop(0.5, {0}, Direction.IN)):
        with pytest.raises(ValueError):
            bad()
    assert f.log == () and not f.status().active


# ------------------------------------------------------------ the service

async def _service(known=None):
    f = FaultFilter()
    server = make_server()
    add_fault_service(server, f, member_id=7, known_peers=known)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return f, server, channel, fault_pb2_grpc.FaultStub(channel)


def test_old_requests_mean_both_ways_and_new_fields_go_one_way():
    async def body():
        f, server, channel, stub = await _service()
        try:
            st = await stub.Cut(fault_pb2.CutRequest(peers=[2]), timeout=5)       # no direction: both
            assert list(st.cut) == [2] and not st.cut_out and not st.cut_in
            st = await stub.Cut(fault_pb2.CutRequest(peers=[3], direction=fault_pb2.OUT), timeout=5)
            assert list(st.cut_out) == [3] and list(st.cut) == [2]
            st = await stub.Uncut(fault_pb2.CutRequest(peers=[2], direction=fault_pb2.IN), timeout=5)
            assert list(st.cut_out) == [2, 3] and not st.cut
            st = await stub.Cut(fault_pb2.CutRequest(all=True, direction=fault_pb2.IN), timeout=5)
            assert st.cut_all_in and not st.cut_all and not st.cut_all_out
            st = await stub.Drop(fault_pb2.DropRequest(peers=[2], rate=0.5, direction=fault_pb2.OUT), timeout=5)
            assert [(d.peer, d.direction) for d in st.drops] == [(2, fault_pb2.OUT)]
            st = await stub.Delay(fault_pb2.DelayRequest(all=True, ms=30), timeout=5)
            assert [(d.all, d.ms, d.direction) for d in st.delays] == [(True, 30, fault_pb2.BOTH)]
            view = view_of(st)                     # as the console reads it
            assert view.rule(3, OUT).cut and view.rule(3, IN).cut and not view.rule(9, OUT).cut
            assert view.rule(2, OUT).drop == 0.5 and view.rule(2, IN).drop == 0.0
            assert view.rule(5, IN).delay_ms == 30
        finally:
            await channel.close()
            await server.stop(None)
    run(body())


def test_hostile_fault_requests_are_refused_and_store_nothing():
    async def body():
        f, server, channel, stub = await _service(known=lambda: {2, 3})
        try:
            huge = list(range(1, 200_001))                     # ~1 MB of ids in one request
            bad = [
                fault_pb2.CutRequest(peers=huge, direction=fault_pb2.OUT),
                fault_pb2.CutRequest(peers=[2, 99]),                             # not a peer
                fault_pb2.CutRequest(peers=[7], direction=fault_pb2.IN),          # itself
                fault_pb2.CutRequest(all=True, peers=[2], direction=fault_pb2.OUT),  # both at once
                fault_pb2.CutRequest(peers=[2], direction=9),                     # no such direction
                fault_pb2.CutRequest(peers=[0]),
                fault_pb2.CutRequest(direction=fault_pb2.OUT),                    # nobody named
            ]
            started = time.monotonic()
            for request in bad:
                for call in (stub.Cut, stub.Uncut):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call(request, timeout=10)
                    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (request, e.value.details())
            for request in (fault_pb2.DropRequest(peers=huge, rate=0.1),
                            fault_pb2.DropRequest(peers=[3], rate=float("nan"), direction=fault_pb2.IN)):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.Drop(request, timeout=10)
                assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Delay(fault_pb2.DelayRequest(peers=[2, 3, 4], ms=5, direction=fault_pb2.IN),
                                 timeout=10)
            assert "not a peer of member 7: 4" in e.value.details()
            assert time.monotonic() - started < 10
            assert f.log == () and not f.status().active         # nothing stored, nothing logged
            st = await stub.Cut(fault_pb2.CutRequest(peers=[3, 2], direction=fault_pb2.OUT), timeout=5)
            assert list(st.cut_out) == [2, 3]                      # a good one still works
        finally:
            await channel.close()
            await server.stop(None)
    run(body())


# ------------------------------------------------------------ the matrix, read

def _state(*views: tuple[int, FaultView]):
    return dataclasses.replace(STATE, faults=tuple(views))


def test_links_combine_both_ends_and_reach_says_who_talks():
    leader_out = FaultView(cuts=frozenset({(N2, OUT), (N3, OUT)}), drops=(((0, IN), 0.5),))
    n3_in = FaultView(drops=(((N2, IN), 0.5),), delays=(((N2, IN), 20),))
    n2 = FaultView(delays=(((N3, OUT), 30),))
    state = _state((N1, leader_out), (N2, n2), (N3, n3_in))
    m = links.matrix(state)
    assert m[(N1, N2)].cut and m[(N1, N2)].by == ("n1 out",) and not m[(N2, N1)].cut
    assert m[(N2, N1)].drop == 0.5                           # n1's all-peers IN drop
    assert m[(N2, N3)].drop == 0.5 and m[(N2, N3)].delay_ms == 50 and m[(N2, N3)].by == ("n2 out", "n3 in")
    assert links.reach(state, N1, m).describe() == "←n2 ←n3"
    assert links.reach(state, N2, m).describe() == "⇄n3 →n1"
    assert not links.quorum_reached(state, N1, m) and links.quorum_reached(state, N2, m)
    assert links.reach(_state(), N1).whole and links.matrix(_state())[(N1, N2)].known is False


# ------------------------------------------------------------ the screen

class LinkSource(FakeSource):
    def __init__(self, state):
        super().__init__(state)
        self.calls = []

    def note(self, *a, **k):
        pass

    async def link_cut(self, src, dst, cut):
        from raftui.source import ActionResult
        self.calls.append(("cut", src, dst, cut))
        return ActionResult(True, f"cut {src:x} -> {dst:x}")

    async def link_drop_delay(self, src, dst, drop_percent=None, delay_ms=None):
        from raftui.source import ActionResult
        self.calls.append(("drop/delay", src, dst, drop_percent, delay_ms))
        return ActionResult(True, "set")

    async def refresh_faults(self):
        return self.state


def test_the_matrix_at_80x24_shows_a_one_way_cut_and_asks_before_cutting():
    state = _state((N1, FaultView(cuts=frozenset({(N2, OUT)}))), (N2, FaultView(cuts=frozenset({(N1, IN)}))),
                   (N3, FaultView()))
    source = LinkSource(state)

    async def body():
        app = RaftuiApp(lambda: source, live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            panel = app.screen.query_one(ClusterPanel)
            detail = str(panel.query_one("#member-detail").render())
            assert "reaches ⇄n3 ←n2" in detail, detail          # n1 selected: it hears n2, n2 does not hear it
            await pilot.press("L")
            screen = await until(pilot, lambda: isinstance(app.screen, LinksScreen) and app.screen)
            matrix = screen.query_one(LinkMatrix)
            assert matrix.highlighted() == (N1, N2)
            table = matrix.table
            assert table.get_cell(str(N1), str(N2)).plain == "✗ cut"
            assert table.get_cell(str(N2), str(N1)).plain == "·"
            assert screen.query_one("#link-detail").render().plain.startswith("n1 → n2: cut")
            region = screen.query_one(".dialog").region
            assert region.right <= 80 and region.bottom <= 24
            await pilot.press("right")                      # n1 -> n3, open
            assert matrix.highlighted() == (N1, N3)
            await pilot.press("space")
            confirm = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen)
            question = confirm.query_one("#confirm-question").render().plain
            assert question.startswith("Cut n1 → n3 one way?") and "campaigns" in question, question
            await pilot.press("enter")                      # the default: No
            await until(pilot, lambda: isinstance(app.screen, LinksScreen))
            assert source.calls == []
            await pilot.press("space", "y")
            await until(pilot, lambda: source.calls == [("cut", N1, N3, True)], what="the cut sent")
            await pilot.press("left", "space")              # n1 -> n2 is cut: space opens it, unasked
            await until(pilot, lambda: source.calls[-1] == ("cut", N1, N2, False), what="the link opened")
            assert isinstance(app.screen, LinksScreen)
            await pilot.press("d")                          # n1 -> n2's drop %: asked, then confirmed
            form = await until(pilot, lambda: isinstance(app.screen, FormScreen) and app.screen, what="the form")
            assert form.query_one("#field-drop").value == "0"
            await pilot.press("ctrl+u", "3", "0", "enter")
            confirm = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen)
            assert confirm.query_one("#confirm-question").render().plain.startswith("Drop 30% of n1 → n2's")
            await pilot.press("y")
            await until(pilot, lambda: source.calls[-1] == ("drop/delay", N1, N2, 30, None), what="the drop sent")
            await pilot.press("l")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the delay form")
            await pilot.press("ctrl+u", "0", "enter")       # 0 clears the rule: nothing to ask
            await until(pilot, lambda: source.calls[-1] == ("drop/delay", N1, N2, None, 0), what="the delay cleared")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, LinksScreen))
    run(body(), timeout=30)
