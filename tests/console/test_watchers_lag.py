"""Watchers with lag, without a cluster: Inspect's answer read into behind /
pending, the console's own watch found among the members' watchers, and the
panel (most behind first, the console's watch marked, its own lag in the title).
The same on real members: test_features_hosted (-m soak)."""
from __future__ import annotations

import asyncio
import dataclasses
import types

from textual.app import App, ComposeResult

from engine.proto import inspect_pb2
from raftui.source import poll
from raftui.source.cluster_source import _marked
from raftui.source.model import LiveWatch, WatcherInfo
from raftui.widgets.watchers_panel import WatchersPanel

from .conftest import run
from .fake_state import STATE


def test_inspect_watchers_read_as_behind_and_pending():
    answer = inspect_pb2.WatchersResponse(current_revision=500)
    answer.watchers.add(watch_id=0, key=b"slow/", range_end=b"slow0", next_revision=120, synced=False,
                        events_sent=100, pending_events=1024, peer="ipv4:127.0.0.1:5000")
    answer.watchers.add(watch_id=3, key=b"k", next_revision=7, synced=True, events_sent=2)

    class Inspect:
        async def Watchers(self, request, timeout):
            return answer

    stubs = types.SimpleNamespace(inspect=Inspect(), endpoint="e1")
    slow, quiet = asyncio.run(poll.watchers(stubs, "n1"))
    assert (slow.behind, slow.pending, slow.next_revision, slow.peer) == (381, 1024, 120, "ipv4:127.0.0.1:5000")
    assert (quiet.behind, quiet.pending) == (0, 0)      # synced: nothing behind, whatever next_revision says


def test_the_console_own_watch_is_found_and_the_panel_lists_the_most_behind_first():
    live = LiveWatch("/app/", True, status="watching", revision=505, endpoint=STATE.members[0].endpoint,
                     watch_id=1)
    state = dataclasses.replace(STATE, watch=live, revision=512, watchers=(
        WatcherInfo("n1", 1, "/app/", "/app0", 0, True, 42),
        WatcherInfo("n1", 1, "/app", "", 0, True, 1),                 # same id, another key: not ours
        WatcherInfo("n2", 4, "/jobs", "", 480, False, 3, behind=29, pending=12)))
    state = dataclasses.replace(state, watchers=_marked(state.watchers, state))
    assert [w.console for w in state.watchers] == [True, False, False]

    class PanelApp(App):
        def compose(self) -> ComposeResult:
            yield WatchersPanel(id="watchers")

    async def body():
        app = PanelApp()
        async with app.run_test(size=(100, 30)) as pilot:
            panel = app.query_one(WatchersPanel)
            panel.state = state
            await pilot.pause()
            table = panel.query_one("#watchers-table")
            rows = [[table.get_row_at(r)[c].plain for c in range(5)] for r in range(table.row_count)]
            assert rows[0] == ["n2", "4", "/jobs", "29", "12"]
            assert rows[1][0] == "n1 · console" and rows[1][3:] == ["0", "0"]
            assert "1 behind or with events waiting" in panel.query_one("#watchers-note").render().plain
            assert "· 7 behind (at 505 of 512)" in panel.query_one("#watch-title").render().plain
    run(body())
