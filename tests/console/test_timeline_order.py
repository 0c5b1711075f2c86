"""Timeline order is the order the console learned things (a sequence
number), never a re-sort by time stamp: members' clocks and the console's
differ, and one second holds a whole election."""
from __future__ import annotations

from raftui.source import ClusterSource
from raftui.source.model import TimelineLine
from raftui.source.timeline import prepend

from .conftest import run

T = 1_700_000_000.0


def test_live_events_keep_the_order_learned_even_when_stamped_earlier():
    shown = prepend((), [TimelineLine(T + 0.9, "leader", "no leader", ok=False, seq=1)])
    # The member's own report of the election that followed, stamped by its clock a little earlier.
    shown = prepend(shown, [TimelineLine(T + 0.3, "election", "n2 campaigns for term 5", seq=2),
                            TimelineLine(T + 0.5, "leader", "leader is now n2 (term 5)", seq=3)])
    assert [e.text for e in shown] == ["leader is now n2 (term 5)", "n2 campaigns for term 5", "no leader"]


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
