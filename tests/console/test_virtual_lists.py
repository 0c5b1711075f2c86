"""Virtualised lists on fake data (no network): 100,000 lines scroll without
a widget per row, and the WAL panel pages back through a long log."""
from __future__ import annotations

import dataclasses

from textual.app import App, ComposeResult

from raftui.source.model import WalEntry
from raftui.widgets.wal_panel import WalList, WalPanel

from .conftest import run, until
from .fake_state import STATE

N = 100_000


def _entry(i: int) -> WalEntry:
    return WalEntry(i, 7, "normal", f'put "key{i:06d}" = "v" lease=0', True, True)


def _visible(lines: WalList) -> list[str]:
    return [lines.render_line(y).text for y in range(lines.size.height)]


class ListApp(App):
    def compose(self) -> ComposeResult:
        yield WalList(id="wal-list")


def test_100k_lines_scroll_without_100k_widgets():
    items = tuple(_entry(N - i) for i in range(N))        # newest on top, as the WAL panel shows them

    async def body():
        app = ListApp()
        async with app.run_test(size=(80, 24)) as pilot:
            lines = app.query_one(WalList)
            lines.set_items(items)
            lines.focus()
            await pilot.pause()
            widgets = len(list(app.query("*")))
            assert widgets < 10, widgets
            assert f"{N:>8}" in _visible(lines)[0]
            await pilot.press("pagedown")
            await until(pilot, lambda: lines.scroll_offset.y > 0, what="a page down")
            assert f"{N - lines.scroll_offset.y:>8}" in _visible(lines)[0]
            await pilot.press("end")
            await until(pilot, lambda: lines.scroll_offset.y + lines.size.height == N, what="the end")
            assert _visible(lines)[-1].lstrip().startswith("1 t7")          # the last line: index 1
            await pilot.press("home")
            await until(pilot, lambda: lines.scroll_offset.y == 0, what="home")
            assert f"{N:>8}" in _visible(lines)[0]
            assert len(list(app.query("*"))) == widgets                     # no widget per row, ever
    run(body(), timeout=30)


def test_a_line_cut_at_the_edge_ends_in_an_ellipsis_until_scrolled_to_its_end():
    long = WalEntry(3, 7, "normal", 'put "' + "k" * 200 + '" = "v" lease=0', True, True)

    async def body():
        app = ListApp()
        async with app.run_test(size=(60, 5)) as pilot:
            lines = app.query_one(WalList)
            lines.set_items((long, _entry(2)))
            await pilot.pause()
            cut, short = _visible(lines)[:2]
            assert len(cut) == lines.size.width and cut.endswith("kk…")
            assert "…" not in short and short.rstrip().endswith("lease=0")
            lines.scroll_to(x=lines.max_scroll_x, animate=False)
            await until(pilot, lambda: lines.scroll_offset.x == lines.max_scroll_x > 0, what="scrolled right")
            assert _visible(lines)[0].endswith('" = "v" lease=0')          # the end of it, no ellipsis
    run(body(), timeout=30)


class FakeLog:
    """A member's log of `last` entries, first index `first`, served in pages
    like Inspect.WalTail(limit, before_index)."""

    def __init__(self, first: int, last: int, limit: int = 1000) -> None:
        self.first, self.last, self.limit, self.asked = first, last, limit, []

    def page(self, before: int) -> tuple[WalEntry, ...]:
        self.asked.append(before)
        top = min(before - 1, self.last)
        return tuple(_entry(i) for i in range(max(self.first, top - self.limit + 1), top + 1))


class PanelApp(App):
    def __init__(self, log: FakeLog) -> None:
        super().__init__()
        self.fake_log = log

    def compose(self) -> ComposeResult:
        yield WalPanel(id="wal")

    def on_wal_panel_need_older(self, event: WalPanel.NeedOlder) -> None:
        panel = self.query_one(WalPanel)
        self.call_later(panel.add_older, event.member_id, event.before_index,
                        self.fake_log.page(event.before_index), self.fake_log.first)


def test_wal_panel_pages_back_to_the_first_index_on_end():
    log = FakeLog(first=3, last=5_200)
    member = STATE.members[0]

    async def body():
        app = PanelApp(log)
        async with app.run_test(size=(80, 24)) as pilot:
            panel = app.query_one(WalPanel)
            lines = panel.query_one(WalList)
            tail = tuple(_entry(i) for i in range(log.last - 199, log.last + 1))
            panel.state = dataclasses.replace(STATE, wal=tail, wal_member=member.id)
            panel.selected = member.id
            lines.focus()
            await until(pilot, lambda: len(lines.items) == 200 and lines.allow_vertical_scroll, what="the live tail laid out")
            assert not log.asked                      # nothing is fetched before the user scrolls back
            for _ in range(10):
                if panel.exhausted:
                    break
                held = len(lines.items)
                await pilot.press("end")        # the oldest line in view: the next page is fetched
                await until(pilot, lambda: len(lines.items) > held or panel.exhausted, what="a page older")
            assert panel.exhausted
            indexes = [e.index for e in lines.items]
            assert indexes == list(range(log.last, log.first - 1, -1))   # every entry once, newest first
            assert log.asked[0] == log.last - 199 and len(log.asked) == 5
            await pilot.press("end")
            await until(pilot, lambda: lines.scroll_offset.y == lines.max_scroll_y, what="the end")
            assert _visible(lines)[-1].lstrip().startswith(f"{log.first} t7")
            assert len(log.asked) == 5                # nothing more asked once the first index is held
            assert panel.border_subtitle.endswith(f"{len(indexes)} entries · back to {log.first} (the first)")

            # The live tail moves on by a few entries: the held pages stay, the view stays put.
            y = lines.scroll_offset.y
            tail = tuple(_entry(i) for i in range(log.last - 194, log.last + 6))
            panel.state = dataclasses.replace(STATE, wal=tail, wal_member=member.id)
            await pilot.pause()
            assert [e.index for e in lines.items] == list(range(log.last + 5, log.first - 1, -1))
            assert lines.scroll_offset.y == min(y + 5, lines.max_scroll_y)
            assert len(list(app.query("*"))) < 10
    run(body(), timeout=30)
