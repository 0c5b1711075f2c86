"""Reading the console the way an operator does: what the widgets show."""
from __future__ import annotations

from raftui.app import RaftuiApp
from raftui.screens.main import MainScreen
from raftui.source import ClusterSource
from raftui.widgets.cluster_panel import COLUMNS, ClusterPanel, ClusterTable
from raftui.widgets.keys_panel import KeysPanel
from raftui.widgets.timeline_panel import TimelinePanel

COL = {name: i for i, name in enumerate(COLUMNS)}


def make_app(endpoints, host=None) -> RaftuiApp:
    return RaftuiApp(lambda: ClusterSource(endpoints), host=host)


def screen(app) -> MainScreen:
    return next(s for s in app.screen_stack if isinstance(s, MainScreen))


def cell_text(table, row: int, col: int) -> str:
    cell = table.get_row_at(row)[col]
    return getattr(cell, "plain", str(cell))


def cluster_cell(table, row: int, name: str):
    """The cell (a rich Text) of column `name` in `row`; None if a narrow panel does not show it."""
    shown = [key.value for key in table.columns]
    return table.get_row_at(row)[shown.index(name)] if name in shown else None


def cluster_rows(app) -> list[list[str]]:
    """Every row as COLUMNS, "" in the columns a narrow panel does not show."""
    table = screen(app).query_one(ClusterTable)
    shown = [key.value for key in table.columns]
    rows = []
    for r in range(table.row_count):
        cells = dict(zip(shown, (cell_text(table, r, c) for c in range(len(shown)))))
        rows.append([cells.get(name, "") for name in COLUMNS])
    return rows


def row_of(app, name: str) -> list[str] | None:
    return next((r for r in cluster_rows(app) if r[COL["member"]] == name), None)


def leader_row(app) -> list[str] | None:
    return next((r for r in cluster_rows(app) if "leader" in r[COL["role"]]), None)


def cluster_panel(app) -> ClusterPanel:
    return screen(app).query_one(ClusterPanel)


def key_rows(app) -> list[tuple[str, ...]]:
    panel = screen(app).query_one(KeysPanel)
    return [(kv.key, str(kv.create_revision), str(kv.mod_revision), str(kv.version))
            for kv in panel.listing.keys]


def timeline(app) -> list[str]:
    return [e.text for e in screen(app).query_one(TimelinePanel).events]


async def ready(app, pilot, members: int = 3, timeout: float = 15.0):
    from .conftest import until

    await until(pilot, lambda: len(cluster_rows(app)) == members and leader_row(app)
                and all("up" in r[COL["health"]] for r in cluster_rows(app)),
                timeout=timeout, what="a healthy cluster on screen")
