"""The scrubber's { and } presses, without a cluster: presses made while a
search runs are not lost (three presses, three changes), a search that finds
nothing says so and stops where the presses got, and [ meanwhile wins."""
from __future__ import annotations

import asyncio

from textual.app import App

import themes
from raftui.screens.scrub import ScrubScreen
from raftui.source.scrub import RevisionView

from .conftest import run, until


async def _load(revision: int) -> RevisionView:
    return RevisionView("p/", True, revision, 500)


class ScrubApp(App):
    CSS_PATH = themes.STYLESHEETS

    def __init__(self, find) -> None:
        super().__init__()
        self.find = find

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(themes.VARIABLE_DEFAULTS)

    def on_mount(self) -> None:
        self.push_screen(ScrubScreen("p/", True, 400, _load, lambda: (500, 100), self.find))


def test_presses_during_a_search_each_count_and_nothing_found_is_said():
    gate = asyncio.Event()
    asked = []

    async def find(revision: int, forward: bool):
        asked.append((revision, forward))
        await gate.wait()
        if not forward and revision <= 370:
            return "no change before revision 370"
        return revision + 10 if forward else revision - 10

    async def body():
        app = ScrubApp(find)
        async with app.run_test(size=(80, 24)) as pilot:
            scrub = await until(pilot, lambda: isinstance(app.screen, ScrubScreen) and app.screen)
            await until(pilot, lambda: scrub.view is not None and scrub.view.revision == 400)
            await pilot.press("left_curly_bracket", "left_curly_bracket", "left_curly_bracket")
            gate.set()
            await until(pilot, lambda: scrub.wanted == 370, what="three changes back")
            assert asked == [(400, False), (390, False), (380, False)]
            await pilot.press("left_curly_bracket")                  # nothing before 370: said, not moved
            await until(pilot, lambda: scrub.note == "no change before revision 370", what="said")
            assert scrub.wanted == 370
            gate.clear()
            await pilot.press("right_curly_bracket", "left_square_bracket")   # [ while } searches: [ wins
            gate.set()
            await until(pilot, lambda: scrub.view is not None and scrub.view.revision == 369, what="[ applied")
            await pilot.pause(0.1)
            assert scrub.wanted == 369
    run(body())
