"""Layout by the space there is: at 120x36 the cluster, timeline, keys and the
selected member's WAL together; cluster columns dropped by priority, never
cut off; at 80x24 every member's db size and problems in the table."""
from __future__ import annotations

from raftui.app import RaftuiApp
from raftui.widgets.cluster_panel import ClusterTable

from .conftest import run
from .fake_state import FakeSource
from .ui import COL, cluster_rows, screen


def _visible(app, pid: str) -> bool:
    region = screen(app).query_one(f"#{pid}").region
    return region.width > 10 and region.height > 5 and app.screen.region.contains_region(region)


SIZES = ((80, 24), (100, 30), (120, 36), (160, 48), (200, 50))


def test_panels_and_columns_fit_the_terminal():
    """One console, resized through the common sizes (as an operator's terminal would be)."""
    async def body():
        app = RaftuiApp(FakeSource, live=False)
        async with app.run_test(size=SIZES[0]) as pilot:
            for size in SIZES:
                await pilot.resize_terminal(*size)
                await pilot.pause()
                await pilot.pause()
                table = screen(app).query_one(ClusterTable)
                # Nothing cut off on the right: the columns shown fit the table.
                assert table.virtual_size.width <= table.size.width, (size, table.virtual_size, table.size)
                rows = cluster_rows(app)
                assert all(r[COL["db size"]] for r in rows), size                   # every member's db size
                assert rows[2][COL["alarms / errors"]].startswith("context dead"), size   # and its problems
                shown = {pid for pid in ("cluster", "timeline", "keys", "wal", "watchers", "rates")
                         if _visible(app, pid)}
                if size >= (100, 30):
                    assert {"cluster", "timeline", "keys", "wal"} <= shown, (size, shown)
                else:
                    assert shown == {"cluster"}, shown                                  # one panel, under tabs
                if size == (120, 36):
                    await pilot.press("tab", "tab", "tab", "tab")                     # to the watchers panel
                    await pilot.pause()
                    assert _visible(app, "watchers") and not _visible(app, "wal")
                    assert all(_visible(app, p) for p in ("cluster", "timeline", "keys"))
    run(body())


def test_columns_changing_keeps_the_selected_member():
    """A table rebuilt for a new set of columns (a long error arrived) keeps the
    selection; it used to select the first row (the defrag went to n1)."""
    import dataclasses

    from .fake_state import STATE

    async def body():
        app = RaftuiApp(FakeSource, live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            main = screen(app)
            await pilot.press("2")
            await pilot.pause()
            assert main.selected == 0x1002
            panel = main.query_one("#cluster")
            before = panel._layout
            long = tuple(dataclasses.replace(m, errors=("x" * 300,)) if m.name == "n1" else m
                         for m in STATE.members)
            main.source.state = dataclasses.replace(STATE, members=long)
            main._show(main.source.state)
            await pilot.pause()
            await pilot.pause()
            assert panel._layout != before                         # the columns were laid out again
            assert main.selected == 0x1002
            assert main.query_one(ClusterTable).cursor_row == 1
    run(body())
