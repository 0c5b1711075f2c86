"""The keys panel's periodic refresh against the operator's home/end jumps,
in every order the network can deliver them (no network: pages handed in
by the test, in the racy order).

The flake this pins (test_hosted's paging test, 2 of 6 runs under load):
a refresh of the last page was out when `home` was pressed; `home`'s first
page landed, then the stale last page put the listing back at the end, and
every later refresh re-read the end. The same with `end` and a stale first
page (the cursor then stayed where it was)."""
from __future__ import annotations

from textual.app import App, ComposeResult

from raftui.source.model import KeyPage, KeyValue
from raftui.widgets.keys_panel import KeysPanel, KeysTable

from .conftest import run, until

PREFIX = "p/"
KEYS = [f"{PREFIX}{i:04d}" for i in range(250)]


def _page(keys: list[str], more: bool) -> KeyPage:
    return KeyPage(tuple(KeyValue(k, "", 2, 2, 1) for k in keys), more, len(KEYS))


FIRST = _page(KEYS[:100], True)
LAST = _page(KEYS[-100:], True)       # read descending: "more" means keys before it


class PanelApp(App):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        yield KeysPanel(id="keys")

    def on_keys_panel_need_page(self, event: KeysPanel.NeedPage) -> None:
        self.asked.append((event.where, event.key))


def test_a_refresh_of_the_other_end_landing_after_a_jump_is_dropped():
    async def body():
        app = PanelApp()
        async with app.run_test(size=(80, 24)) as pilot:
            panel = app.query_one(KeysPanel)
            table = panel.query_one(KeysTable)
            panel.took(PREFIX, "first", "", FIRST, refresh=True)
            table.focus()
            await until(pilot, lambda: table.row_count == 100, what="the first page")

            await pilot.press("end")
            await until(pilot, lambda: ("last", "") in app.asked, what="end asks for the last page")
            panel.took(PREFIX, "first", "", FIRST, refresh=True)       # a refresh sent before `end`: harmless
            panel.took(PREFIX, "last", "", LAST)                         # end's own page
            panel.took(PREFIX, "first", "", FIRST, refresh=True)       # stale: sent before `end` landed
            await pilot.pause()
            assert panel.listing.keys[-1].key == KEYS[-1] and panel.listing.earlier
            assert table.cursor_row == table.row_count - 1              # end's cursor, not used up by a refresh

            app.asked.clear()
            await pilot.press("home")
            await until(pilot, lambda: ("first", "") in app.asked, what="home asks for the first page")
            panel.took(PREFIX, "last", "", LAST, refresh=True)         # a refresh sent before `home`: harmless
            panel.took(PREFIX, "first", "", FIRST)                       # home's own page
            panel.took(PREFIX, "last", "", LAST, refresh=True)         # stale: must not undo home
            await pilot.pause()
            assert panel.listing.keys[0].key == KEYS[0] and not panel.listing.earlier
            assert table.cursor_row == 0
            assert panel.refresh_wanted() == "first"                   # later refreshes keep it there
    run(body(), timeout=30)
