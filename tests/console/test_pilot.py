"""The console driven by key presses only, attached to real etcd clusters.

Every wait is on something visible in the app (a table cell, a panel's
state) with a deadline; no sleep is used to synchronise.
"""
from __future__ import annotations

import json
import uuid

import pytest

from raftui.widgets.keys_panel import DetailTable
from raftui.widgets.watchers_panel import WatchersPanel
from tests.support.etcd import etcdctl

from .conftest import fill, run, until
from .ui import COL, cell_text, cluster_rows, key_rows, leader_row, make_app, ready, screen, timeline


@pytest.fixture
def key() -> str:
    return f"pilot{uuid.uuid4().hex[:6]}"


def test_write_then_read_at_older_revision(real_etcd3, key):
    async def body():
        app = make_app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            await pilot.press("w")
            await fill(pilot, key, "one", "")
            first = await until(pilot, lambda: next((r for r in key_rows(app) if r[0] == key), None),
                                what=f"{key} in the keys panel")
            await pilot.press("w")
            await fill(pilot, key, "two", "")
            second = await until(pilot, lambda: next((r for r in key_rows(app) if r[0] == key
                                                      and r[3] == "2"), None), what="version 2")
            assert int(second[2]) > int(first[2]) and second[1] == first[1]
            # The keys table itself shows the revision (what the operator sees).
            table = screen(app).query_one("#keys-table")
            shown = [[cell_text(table, r, c) for c in range(4)] for r in range(table.row_count)]
            assert [key, first[1], second[2], "2"] in shown

            await pilot.press("r")
            await fill(pilot, key, first[2])
            detail = screen(app).query_one(DetailTable)
            await until(pilot, lambda: detail.row_count == 1, what="the read at the old revision")
            assert cell_text(detail, 0, 1) == "one" and cell_text(detail, 0, 3) == first[2]
            assert any(f"get {key} at revision {first[2]}" in t for t in timeline(app))
    run(body())


def test_cluster_panel_shows_leader_and_term(real_etcd3):
    status = json.loads(etcdctl(real_etcd3.endpoints, "endpoint", "status", "-w", "json", check=True).stdout)
    leader_id = status[0]["Status"]["leader"]
    term = status[0]["Status"]["raftTerm"]

    async def body():
        app = make_app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            row = leader_row(app)
            leader = screen(app).state.leader
            assert row[COL["member"]] == leader.label and leader.id == leader_id and row[COL["term"]] == str(term)
            assert f"term {term}" in screen(app).query_one("#summary-bar").plain
    run(body())


def test_defrag_selected_member_reports_result(real_etcd3):
    async def body():
        app = make_app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            await pilot.press("2", "g", "y")
            name = cluster_rows(app)[1][1]
            await until(pilot, lambda: any(t.startswith(f"defragmented {name}: db ") for t in timeline(app)),
                        what="the defrag result in the timeline")
    run(body())


def test_watch_opened_from_the_console_receives_events(real_etcd3, key):
    async def body():
        app = make_app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            await pilot.press("W")
            await fill(pilot, key + "*")
            panel = screen(app).query_one(WatchersPanel)
            await until(pilot, lambda: panel.state.watch and panel.state.watch.status == "watching",
                        what="the watch to be created")
            etcdctl(real_etcd3.endpoints, "put", key + "/a", "hello", check=True)
            etcdctl(real_etcd3.endpoints, "del", key + "/a", check=True)
            await until(pilot, lambda: [e.type for e in panel.state.watch.events
                                        if e.key == key + "/a"] == ["PUT", "DELETE"],
                        what="PUT and DELETE events")
            assert "etcd has none" in str(panel.query_one("#watchers-note").render())
    run(body())


def test_help_shows_keys_as_typed_and_attach_mode_offers_no_host_or_fault_command(real_etcd3):
    async def body():
        app = make_app(real_etcd3.endpoints)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            await until(pilot, lambda: screen(app).state.fault is False, what="etcd known to have no Fault service")
            await pilot.press("question_mark")
            table = app.screen.query_one("#help-table")
            rows = {cell_text(table, r, 3): cell_text(table, r, 0) for r in range(table.row_count)}
            assert {"write", "read", "compact", "defrag", "snapshot", "quit"} <= set(rows)
            assert rows["help"] == "?" and rows["filter"] == "/" and rows["disarm"] == "!"
            assert "kill" not in rows and "partition" not in rows        # not offered in attach mode to etcd
            await pilot.press("escape")
            footer = " ".join(b.binding.description for b in app.screen.active_bindings.values()
                              if b.binding.show and b.enabled)
            assert "Kill" not in footer and "Write" in footer
            before = list(timeline(app))
            await pilot.press("k", "p", "z")
            await pilot.pause()
            assert app.screen is screen(app) and timeline(app) == before   # nothing asked, nothing run
            await pilot.press("T")
            assert app.theme == "raftui-light"
            await pilot.press("T", "T")
            assert app.theme == "raftui-dark"
    run(body())
