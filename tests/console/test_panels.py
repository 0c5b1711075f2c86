"""Panels on a fixed state (no network): what a change looks like."""
from __future__ import annotations

import dataclasses

from raftui.app import RaftuiApp
from raftui.widgets.cluster_panel import FLASH_SECONDS, ClusterPanel

from .conftest import run
from .fake_state import STATE, FakeSource
from .ui import cluster_cell, screen


def _next_term(state, term: int):
    return dataclasses.replace(state, term=term, members=tuple(
        dataclasses.replace(m, term=term) if m.health == "up" else m for m in state.members))


def test_term_change_flashes_the_term_column_then_stops():
    async def body():
        app = RaftuiApp(FakeSource, live=False)
        async with app.run_test(size=(160, 48)) as pilot:
            panel = screen(app).query_one(ClusterPanel)
            now = [1000.0]
            panel._clock = lambda: now[0]
            table = panel.table
            flash = table.get_component_rich_style("cluster--flash")

            def term_style(row: int):
                return cluster_cell(table, row, "term").style

            assert term_style(0) != flash and not panel.flashing
            panel.state = _next_term(STATE, 8)
            await pilot.pause()
            assert panel.flashing and panel.flashes == 1
            assert term_style(0) == flash and term_style(1) == flash     # the members that answer
            assert term_style(2) != flash                                # n3 is down: still term 6, dimmed
            assert cluster_cell(table, 0, "term").plain == "8"

            now[0] += FLASH_SECONDS + 0.1
            panel._redraw()       # what the panel's own timer does when the flash is over
            await pilot.pause()
            assert not panel.flashing and term_style(0) != flash
            panel.state = dataclasses.replace(_next_term(STATE, 8), revision=999)   # same term: no flash
            await pilot.pause()
            assert panel.flashes == 1 and term_style(0) != flash
    run(body())


def test_loop_lag_column_slow_members_stand_out():
    """Inspect's loop_lag_ms: shown per member, in the slow style over 100 ms; blank when unknown."""
    async def body():
        app = RaftuiApp(FakeSource, live=False)
        async with app.run_test(size=(200, 50)) as pilot:
            panel = screen(app).query_one(ClusterPanel)
            table = panel.table
            slow = table.get_component_rich_style("cluster--slow")
            cells = [cluster_cell(table, r, "loop lag") for r in range(3)]
            assert [c.plain for c in cells] == ["3 ms", "140 ms", ""]       # n3 is down: not known
            assert cells[1].style == slow and cells[0].style != slow
            members = tuple(dataclasses.replace(m, loop_lag_ms=50) for m in STATE.members)
            panel.state = dataclasses.replace(STATE, members=members)
            await pilot.pause()
            assert cluster_cell(table, 1, "loop lag").plain == "50 ms"
            assert cluster_cell(table, 1, "loop lag").style != slow
    run(body())
