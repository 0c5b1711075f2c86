"""Snapshots of the main screen at 80x24, 120x36, 160x48 and 200x50 in every theme.

The data is a fixed fake state (UI unit tests only); the fixture pins the
time zone and cursor blink. Update after a deliberate change with
`python -m pytest tests/console/test_snapshots.py --snapshot-update` and
review the SVGs.
"""
from __future__ import annotations

import pytest

import themes
from raftui.app import RaftuiApp
from raftui.screens.main import MainScreen
from raftui.widgets.keys_panel import Detail, KeysPanel, Listing

from .fake_state import HISTORY, KEYS, FakeSource


@pytest.fixture(autouse=True)
def _deterministic(fixed_clock_and_tz):
    yield


async def _fill_keys(pilot) -> None:
    screen = next(s for s in pilot.app.screen_stack if isinstance(s, MainScreen))
    panel = screen.query_one(KeysPanel)
    panel.listing = Listing("/app/", KEYS, more=True)
    panel.detail = Detail("history /app/k1: 3 version(s)", HISTORY)
    await pilot.pause()


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (160, 48), (200, 50)], ids=["80x24", "120x36", "160x48", "200x50"])
@pytest.mark.parametrize("theme", sorted(themes.THEMES))
def test_main_screen(snap_compare, theme, size):
    app = RaftuiApp(FakeSource, theme=theme, mode_label="hosting 3 members", live=False)
    assert snap_compare(app, terminal_size=size, run_before=_fill_keys)
