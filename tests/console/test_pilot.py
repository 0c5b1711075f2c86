"""The console driven by key presses only, against real etcd clusters.

Every wait is on something visible in the app (a table cell, a panel's
state) with a deadline; no sleep is used to synchronise.
"""
from __future__ import annotations

import json
import uuid

import pytest

from raftui.app import RaftuiApp
from raftui.host import etcd_host
from raftui.screens.main import MainScreen
from raftui.source import ClusterSource
from raftui.widgets.cluster_panel import ClusterTable
from raftui.widgets.keys_panel import DetailTable, KeysPanel
from raftui.widgets.timeline_panel import TimelinePanel
from raftui.widgets.watchers_panel import WatchersPanel
from tests.support.etcd import etcdctl

from .conftest import fill, run, type_text, until

DOWN_WITHIN = 3.0          # a killed member must be shown down this fast (poll 0.3 s + deadline 0.8 s)
NEW_LEADER_WITHIN = 15.0   # election timeout 1 s, plus pre-vote-less term churn


def _app(endpoints, host=None) -> RaftuiApp:
    return RaftuiApp(lambda: ClusterSource(endpoints), host=host)


def _screen(app) -> MainScreen:
    return next(s for s in app.screen_stack if isinstance(s, MainScreen))


def _cell_text(table, row: int, col: int) -> str:
    cell = table.get_row_at(row)[col]
    return getattr(cell, "plain", str(cell))


def _cluster_rows(app) -> list[list[str]]:
    table = _screen(app).query_one(ClusterTable)
    return [[_cell_text(table, r, c) for c in range(len(table.columns))] for r in range(table.row_count)]


def _leader_row(app) -> list[str] | None:
    return next((r for r in _cluster_rows(app) if "leader" in r[2]), None)


def _key_rows(app) -> list[tuple[str, ...]]:
    panel = _screen(app).query_one(KeysPanel)
    return [(kv.key, str(kv.create_revision), str(kv.mod_revision), str(kv.version))
            for kv in panel.listing.keys]


def _timeline(app) -> list[str]:
    return [e.text for e in _screen(app).query_one(TimelinePanel).events]


async def _ready(app, pilot, members: int = 3):
    await until(pilot, lambda: len(_cluster_rows(app)) == members and _leader_row(app)
                and all("up" in r[3] for r in _cluster_rows(app)), what="a healthy cluster on screen")


@pytest.fixture
def key() -> str:
    return f"pilot{uuid.uuid4().hex[:6]}"


def test_write_then_read_at_older_revision(real_etcd3, key):
    async def body():
        app = _app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(app, pilot)
            await pilot.press("w")
            await fill(pilot, key, "one", "")
            first = await until(pilot, lambda: next((r for r in _key_rows(app) if r[0] == key), None),
                                what=f"{key} in the keys panel")
            await pilot.press("w")
            await fill(pilot, key, "two", "")
            second = await until(pilot, lambda: next((r for r in _key_rows(app) if r[0] == key
                                                      and r[3] == "2"), None), what="version 2")
            assert int(second[2]) > int(first[2]) and second[1] == first[1]
            # The keys table itself shows the revision (what the operator sees).
            table = _screen(app).query_one("#keys-table")
            shown = [[_cell_text(table, r, c) for c in range(4)] for r in range(table.row_count)]
            assert [key, first[1], second[2], "2"] in shown

            await pilot.press("r")
            await fill(pilot, key, first[2])
            detail = _screen(app).query_one(DetailTable)
            await until(pilot, lambda: detail.row_count == 1, what="the read at the old revision")
            assert _cell_text(detail, 0, 1) == "one" and _cell_text(detail, 0, 3) == first[2]
            assert any(f"get {key} at revision {first[2]}" in t for t in _timeline(app))
    run(body())


def test_cluster_panel_shows_leader_and_term(real_etcd3):
    status = json.loads(etcdctl(real_etcd3.endpoints, "endpoint", "status", "-w", "json", check=True).stdout)
    leader_id = status[0]["Status"]["leader"]
    term = status[0]["Status"]["raftTerm"]

    async def body():
        app = _app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(app, pilot)
            row = _leader_row(app)
            assert row[-1] == f"{leader_id:x}" and row[4] == str(term)
            assert f"term {term}" in str(_screen(app).query_one("#title-bar").render())
    run(body())


def test_defrag_selected_member_reports_result(real_etcd3):
    async def body():
        app = _app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(app, pilot)
            await pilot.press("2", "g")
            name = _cluster_rows(app)[1][1]
            await until(pilot, lambda: any(t.startswith(f"defragmented {name}: db ") for t in _timeline(app)),
                        what="the defrag result in the timeline")
    run(body())


def test_watch_opened_from_the_console_receives_events(real_etcd3, key):
    async def body():
        app = _app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(app, pilot)
            await pilot.press("W")
            await fill(pilot, key + "*")
            panel = _screen(app).query_one(WatchersPanel)
            await until(pilot, lambda: panel.state.watch and panel.state.watch.status == "watching",
                        what="the watch to be created")
            etcdctl(real_etcd3.endpoints, "put", key + "/a", "hello", check=True)
            etcdctl(real_etcd3.endpoints, "del", key + "/a", check=True)
            await until(pilot, lambda: [e.type for e in panel.state.watch.events
                                        if e.key == key + "/a"] == ["PUT", "DELETE"],
                        what="PUT and DELETE events")
            assert "etcd has none" in str(panel.query_one("#watchers-note").render())
    run(body())


def test_kill_leader_then_restart_pause_resume_in_host_mode(etcd_binaries, tmp_path):
    host = etcd_host(tmp_path / "cluster", 3, etcd_bin=etcd_binaries[0])
    host.start()
    try:
        host.wait_listening()

        async def body():
            app = _app(host.endpoints, host=host)
            async with app.run_test(size=(160, 48)) as pilot:
                await _ready(app, pilot)
                before = _leader_row(app)
                old_term = int(before[4])
                await pilot.press(before[0], "k")
                await pilot.press("y")
                await until(pilot, lambda: "killed" in _cluster_rows(app)[int(before[0]) - 1][3],
                            timeout=DOWN_WITHIN, what="the killed leader marked down")
                await until(pilot, lambda: (_leader_row(app) or before)[1] != before[1],
                            timeout=NEW_LEADER_WITHIN, what="a new leader")
                assert int(_leader_row(app)[4]) > old_term
                assert any(t.startswith("leader is now") for t in _timeline(app))

                await pilot.press("s")   # restart the selected (killed) member
                await until(pilot, lambda: "up" in _cluster_rows(app)[int(before[0]) - 1][3],
                            timeout=NEW_LEADER_WITHIN, what="the restarted member up")

                await pilot.press("z")   # SIGSTOP
                await until(pilot, lambda: "paused" in _cluster_rows(app)[int(before[0]) - 1][3],
                            timeout=DOWN_WITHIN, what="the member marked paused")
                await pilot.press("u")   # SIGCONT
                await until(pilot, lambda: "up" in _cluster_rows(app)[int(before[0]) - 1][3],
                            timeout=NEW_LEADER_WITHIN, what="the resumed member up")
        run(body(), timeout=90)
    finally:
        host.stop_all()


def test_help_lists_every_binding_and_host_actions_explain_attach_mode(real_etcd3):
    async def body():
        app = _app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await _ready(app, pilot)
            await pilot.press("question_mark")
            table = app.screen.query_one("#help-table")
            ids = {_cell_text(table, r, 3) for r in range(table.row_count)}
            assert {"write", "read", "kill", "partition", "compact", "defrag", "snapshot", "quit"} <= ids
            await pilot.press("escape", "k")
            await until(pilot, lambda: any("needs host mode" in t for t in _timeline(app)),
                        what="the host-mode explanation")
            await pilot.press("p", "y")
            await until(pilot, lambda: any("Fault service" in t for t in _timeline(app)),
                        what="the fault-service explanation")
            await pilot.press("T")
            assert app.theme == "raftui-light"
            await pilot.press("T", "T")
            assert app.theme == "raftui-dark"
    run(body())
