"""Timeline order: what the console sees itself in the order it learned it
(a sequence number), never re-sorted by time stamp (one second holds a whole
election, and the console's clock may step back); what a member reports
(its leader events) at the time it happened, to full precision, so that a
campaign learned late still shows below the leader it produced. And a member
is its ID: a name it gets later is no removal."""
from __future__ import annotations

from raftui.source import ClusterSource, poll
from raftui.source.model import TimelineLine
from raftui.source.timeline import prepend

from .conftest import run

T = 1_700_000_000.0


def test_what_the_console_sees_keeps_the_order_learned_within_a_second():
    shown = prepend((), [TimelineLine(T + 0.9, "leader", "no leader", ok=False, seq=1)])
    shown = prepend(shown, [TimelineLine(T + 0.3, "leader", "leader is now n2 (term 5)", seq=2)])
    assert [e.text for e in shown] == ["leader is now n2 (term 5)", "no leader"]


def test_a_member_reported_event_is_placed_by_its_own_time():
    # What a fresh hosted cluster showed: the poll saw the leader before the
    # leader's status stream delivered the campaigns that elected it.
    shown = prepend((), [TimelineLine(T + 0.10, "host", "started 3 members", seq=1),
                         TimelineLine(T + 1.00, "attach", "attached to 3 members, no leader", seq=2)])
    shown = prepend(shown, [TimelineLine(T + 1.50, "leader", "leader is now n1 (term 2)", seq=3)])
    shown = prepend(shown, [
        TimelineLine(T + 1.201, "election", "n1 campaigns for term 2 (pre-vote)", seq=4, reported=True),
        TimelineLine(T + 1.203, "election", "n1 campaigns for term 2 (election)", seq=5, reported=True)])
    # Learned after the line stamped T+1.50 and at the same time to the
    # millisecond: the tie goes to the one learned later.
    shown = prepend(shown, [TimelineLine(T + 1.50, "election", "n3 lost its leader (term 2)", seq=6,
                                         reported=True)])
    shown = prepend(shown, [TimelineLine(T + 2.0, "action", "put k", seq=7)])
    assert [e.text for e in shown] == [
        "put k", "n3 lost its leader (term 2)", "leader is now n1 (term 2)",
        "n1 campaigns for term 2 (election)", "n1 campaigns for term 2 (pre-vote)",
        "attached to 3 members, no leader", "started 3 members"]


def test_the_source_places_a_member_event_stamped_before_a_console_event_below_it():
    async def body():
        now = [T + 5]
        source = ClusterSource(["127.0.0.1:1"], clock=lambda: now[0])
        try:
            source.note("attached")
            now[0] = T + 6
            source._fold(lambda s: (s, [TimelineLine(T + 5.5, "election", "n1 campaigns for term 2",
                                                     reported=True)]))
            source._fold(lambda s: (s, [TimelineLine(T + 4.5, "election", "n2 campaigns for term 2",
                                                     reported=True)]))
            source.note("after")
            assert [e.text for e in source.state.timeline] == [
                "after", "n1 campaigns for term 2", "attached", "n2 campaigns for term 2"]
        finally:
            await source.close()
    run(body())


def test_history_from_before_attaching_stays_below_live_lines_by_time():
    live = prepend((), [TimelineLine(T + 10, "attach", "attached to 3 members", seq=1)])
    shown = prepend(live, [TimelineLine(T - 50, "leader", "leader is now n1 (term 2)"),
                           TimelineLine(T - 90, "leader", "leader is now n3 (term 1)")])
    shown = prepend(shown, [TimelineLine(T - 70, "election", "n1 campaigns for term 2")])
    assert [e.text for e in shown] == ["attached to 3 members", "leader is now n1 (term 2)",
                                       "n1 campaigns for term 2", "leader is now n3 (term 1)"]


def test_the_source_numbers_events_in_the_order_it_learns_them():
    async def body():
        now = [T]
        source = ClusterSource(["127.0.0.1:1"], clock=lambda: now[0])
        try:
            now[0] = T + 2
            source.note("first")
            now[0] = T + 1                 # a clock that steps back (NTP) changes nothing
            source.note("second")
            source._fold(lambda s: (s, [TimelineLine(T - 30, "leader", "leader is now n1 (term 1)", key=(1, 1))]))
            events = source.state.timeline
            assert [e.text for e in events] == ["second", "first", "leader is now n1 (term 1)"]
            assert [e.seq for e in events] == [2, 1, 0]
        finally:
            await source.close()
    run(body())


def test_a_member_named_later_is_the_same_member_not_a_removal(monkeypatch):
    """A fresh cluster: no member answers the first round (the console shows
    one stand-in per endpoint, named after it), then the member list comes
    with IDs but no names (members not yet published), then with names."""
    endpoints = ["127.0.0.1:57563", "127.0.0.1:57564", "127.0.0.1:57565"]
    ids = {ep: 0x1000 + i for i, ep in enumerate(endpoints)}
    cluster = {"up": False, "names": False}

    async def status(stubs, deadline=poll.POLL_DEADLINE):
        ep = stubs.endpoint
        if not cluster["up"]:
            return poll.StatusResult(ep, ok=False, error="connection refused")
        return poll.StatusResult(ep, ok=True, member_id=ids[ep], cluster_id=7, leader_id=ids[endpoints[0]],
                                 term=2, version="3.4.23")

    async def member_list(stubs, deadline=poll.POLL_DEADLINE):
        if not cluster["up"]:
            return None
        return [poll.MemberInfo(ids[ep], f"n{i + 1}" if cluster["names"] else "", (f"http://peer{i}",),
                                (f"http://{ep}",) if cluster["names"] else (), False)
                for i, ep in enumerate(endpoints)]

    async def nothing(*args, **kwargs):
        return None

    async def no_inspect(stubs, deadline=poll.POLL_DEADLINE):
        return poll.InspectResult(stubs.endpoint, available=False)

    async def no_fault(stubs, deadline):
        return False

    monkeypatch.setattr(poll, "status", status)
    monkeypatch.setattr(poll, "member_list", member_list)
    monkeypatch.setattr(poll, "compact_revision", nothing)
    monkeypatch.setattr(poll, "inspect_status", no_inspect)
    monkeypatch.setattr("raftui.source.faults.status", no_fault)

    async def body():
        source = ClusterSource(endpoints)
        try:
            state = await source.poll()
            assert [m.label for m in state.members] == endpoints and all(m.id <= 0 for m in state.members)
            cluster["up"] = True
            state = await source.poll()
            assert {m.id for m in state.members} == set(ids.values())
            cluster["names"] = True
            state = await source.poll()
            assert [m.label for m in state.members] == ["n1", "n2", "n3"]
            texts = [e.text for e in state.timeline]
        finally:
            await source.close()
        assert not [t for t in texts if "removed" in t or "added" in t], texts
        # What is true is still told: they did not answer, then did.
        assert texts[-1] == "attached to 3 members, no leader"
        assert sorted(t for t in texts if t.endswith(" is up")) == [
            "1000 is up", "1001 is up", "1002 is up"], texts
    run(body())


def test_an_election_before_the_member_list_names_the_members_by_their_own_names():
    from types import SimpleNamespace

    from raftui.source.model import ClusterState, Member
    from raftui.source.status_stream import LeaderNote

    async def body():
        ep = "127.0.0.1:57563"
        source = ClusterSource([ep])
        try:
            # A stand-in (no answer yet) and the name the member gives itself in its status.
            source._streams = SimpleNamespace(latest={ep: poll.InspectResult(ep, True, member_id=0x1000, name="n1")})
            state = ClusterState(members=(Member(name=ep, id=-1, endpoint=ep),))
            lines = source._leader_notes([LeaderNote(ep, T, "campaign", 2, 0, "election"),
                                          LeaderNote(ep, T + 0.01, "elected", 2, 0x1000, "")], state)
            assert [e.text for e in lines] == ["n1 campaigns for term 2 (election)", "leader is now n1 (term 2)"]
            assert all(e.reported for e in lines)
        finally:
            source._streams = None
            await source.close()
    run(body())
