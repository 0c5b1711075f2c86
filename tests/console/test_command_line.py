"""`:` command mode (k9s): completed as typed, every command still asks its question."""
from __future__ import annotations

from textual.widgets import Input

from raftui.app import RaftuiApp
from raftui.screens.command_line import CommandLineScreen, parse
from raftui.screens.confirm import ConfirmScreen
from raftui.widgets.keys_panel import KeysPanel

from .conftest import run, until
from .test_safety import Recording, _burst
from .ui import screen

IDS = {"defrag", "transfer", "compact", "write", "watch"}


def test_parse():
    assert parse(":members", IDS).name == "cluster"
    assert (parse("keys /app/", IDS).name, parse("keys /app/", IDS).arg) == ("keys", "/app/")
    assert (parse(":defrag n2", IDS).kind, parse(":defrag n2", IDS).arg) == ("command", "n2")
    assert parse(":compact 1200", IDS).arg == "1200"
    assert parse(":q", IDS).kind == "quit" and parse(":theme light", IDS).name == "light"
    assert parse(":theme pink", IDS).kind == "unknown" and parse(":frobnicate", IDS).kind == "unknown"


def test_command_line_completes_runs_and_asks():
    async def body():
        app = RaftuiApp(Recording, live=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            _burst(app, ":def")                                  # typed at once: lands in the line
            line = await until(pilot, lambda: app.screen if isinstance(app.screen, CommandLineScreen) else None,
                               what="the command line")
            await until(pilot, lambda: line.query_one(Input).value == "def", what="the keys typed")
            await pilot.press("right", "backspace", "2", "enter")  # the suggestion "defrag n1", made n2
            confirm = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmScreen) else None,
                                  what="defrag's question")
            assert str(confirm.query_one("#confirm-question").render()).startswith("Defragment n2?")
            await pilot.press("y")
            await until(pilot, lambda: app.source.ran == [("defrag", 0x1002)], what="n2 defragmented")

            _burst(app, ":keys /app/\n")
            await until(pilot, lambda: screen(app).active_panel == "keys"
                        and screen(app).query_one(KeysPanel).listing.prefix == "/app/", what="the keys filtered")
            await pilot.press("escape")                          # back: the filter cleared
            assert screen(app).prefix == ""
            _burst(app, ":theme light\n")
            await until(pilot, lambda: app.theme == "raftui-light", what="the light theme")
            _burst(app, ":q\n")
            await until(pilot, lambda: not app.is_running, what="quit")
    run(body())


def test_slash_filters_live_and_escape_clears():
    async def body():
        app = RaftuiApp(Recording, live=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            panel = screen(app).query_one(KeysPanel)
            _burst(app, "//ap")
            await until(pilot, lambda: panel.listing.prefix == "/ap", what="filtered as typed, before enter")
            _burst(app, "p/\n")
            await until(pilot, lambda: app.screen is screen(app) and panel.listing.prefix == "/app/",
                        what="the filter kept")
            await pilot.press("slash", "escape")
            await until(pilot, lambda: app.screen is screen(app) and panel.listing.prefix == "", what="cleared")
    run(body())


def test_run_and_lincheck_lines_reach_their_screens_or_say_why_not():
    """`:run` and `:lincheck` open raftui/scenario's and raftui/lincheck's screens (their
    tests run them on a cluster); here: completion, and each refusal as one line."""
    from raftui.scenario.library import names

    async def body():
        app = RaftuiApp(Recording, live=False, readonly=True)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            main = screen(app)
            notes = []
            main._report = lambda result, record=False: notes.append(result.text)
            _burst(app, ":run lead")
            line = await until(pilot, lambda: app.screen if isinstance(app.screen, CommandLineScreen) else None,
                               what="the command line")
            await until(pilot, lambda: line.query_one(Input).value == "run lead", what="typed")
            await pilot.press("right", "enter")                      # completed to a shipped scenario
            await until(pilot, lambda: notes, what="the read-only refusal")
            assert "read-only" in notes[-1] and any(n.startswith("leader") for n in names())
            for typed, says in ((":run", "run: which scenario?"), (":lincheck 4 x", "lincheck: :lincheck [CLIENTS]"),
                                (":lincheck", "read-only")):
                _burst(app, typed)
                line = await until(pilot, lambda: app.screen if isinstance(app.screen, CommandLineScreen) else None,
                                   what="the command line")
                await until(pilot, lambda: line.query_one(Input).value == typed[1:], what="typed")
                await pilot.press("enter")
                await until(pilot, lambda: len(notes) and says in notes[-1], what=says)
    run(body())


def test_run_asks_before_a_scenario_touches_the_cluster():
    """:run cuts links, kills members and writes keys: it asks first, the
    question says so, and only y starts it (found by a first-time user:
    :run leader-isolation cut the leader off at once)."""
    from raftui.scenario.ui import ScenarioScreen

    async def body():
        app = RaftuiApp(Recording, live=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            _burst(app, ":run leader-isolation")
            line = await until(pilot, lambda: app.screen if isinstance(app.screen, CommandLineScreen) else None,
                               what="the command line")
            await until(pilot, lambda: line.query_one(Input).value == "run leader-isolation", what="typed")
            await pilot.press("enter")
            ask = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmScreen) else None,
                              what="the question")
            assert "leader isolation" in ask.question and "cut, drop or delay links" in ask.question
            await pilot.press("enter")                      # enter is No
            await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="the answer")
            assert not isinstance(app.screen, ScenarioScreen)
    run(body())
