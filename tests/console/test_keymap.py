"""A user keymap (raftui/keymap.py) moves bindings by id; help shows the keys in use."""
from __future__ import annotations

from raftui.app import RaftuiApp, binding_ids
from raftui.keymap import load
from raftui.screens.form import FormScreen

from .conftest import run, until
from .fake_state import FakeSource
from .ui import screen


def test_keymap_file_is_read_and_its_mistakes_reported(tmp_path):
    f = tmp_path / "keymap.toml"
    f.write_text('write = "ctrl+w"\nfilter = "slash, f3"\nnope = "x"\nkill = 3\n')
    keymap, problems = load(f, binding_ids())
    assert keymap == {"write": "ctrl+w", "filter": "slash,f3"}
    assert any("'nope'" in p for p in problems) and any("kill must be a key name" in p for p in problems)
    assert load(tmp_path / "missing.toml", binding_ids())[1]                    # asked for, not there
    f.write_text("write = [")
    assert load(f, binding_ids()) == ({}, [load(f, binding_ids())[1][0]])     # not TOML: said, nothing applied


def test_a_moved_binding_runs_from_its_new_key_and_help_shows_it():
    async def body():
        app = RaftuiApp(FakeSource, live=False, keymap={"write": "ctrl+w", "cycle_theme": "f2"})
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            await pilot.press("w")
            await pilot.pause()
            assert app.screen is screen(app)                                    # w no longer writes
            await pilot.press("f2")
            assert app.theme == "raftui-light"
            await pilot.press("question_mark")
            table = app.screen.query_one("#help-table")
            keys = {str(table.get_row_at(r)[3]): str(table.get_row_at(r)[0]) for r in range(table.row_count)}
            assert keys["write"] == "ctrl+w" and keys["cycle_theme"] == "f2" and keys["filter"] == "/"
            await pilot.press("escape", "ctrl+w")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the write form from ctrl+w")
    run(body())
