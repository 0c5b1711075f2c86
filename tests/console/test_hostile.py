"""Hostile server strings and hostile form input: the console stays up and
shows them literally (issue 8, item 10).

Keys and values such as `[/]` (a Rich/Textual markup error), `[bold]x[/bold]`,
`[link=...]`, `\\x1b[2J` (clears a terminal), `\\xff\\xfe` vs `\\xfe\\xff` (not
UTF-8), newlines, tabs, a 10 KiB value and wide characters are written
through gRPC and through the console's own put form on a hosted 3-member
raftnode cluster; the tests read what the panels draw (the plain text of
table cells, of the timeline/watch/WAL lines, of the toasts) and check that
the app keeps running and refreshing. Forms refuse numbers out of range
before anything is sent. A member named `[red]x` is shown by that name.

Every wait is on what the console shows, with a deadline; members are
stopped by PID.
"""
from __future__ import annotations

import dataclasses
import uuid

import grpc
import pytest
from textual.widgets import Input
from textual.widgets._toast import Toast

from engine.proto import inspect_pb2, rpc_pb2, rpc_pb2_grpc
from engine.wal.describe import quote
from raftui.app import RaftuiApp
from raftui.screens.form import FormScreen
from raftui.source import ActionResult
from raftui.source.model import LiveWatch, TimelineLine, WalEntry, WatchEvent, WatcherInfo
from raftui.widgets.keys_panel import DetailTable, KeysPanel, KeysTable
from raftui.widgets.timeline_panel import TimelineList, TimelinePanel
from raftui.widgets.wal_panel import WalList
from raftui.widgets.watchers_panel import WatchEventList

from .conftest import run, until
from .fake_state import STATE, FakeSource
from .ui import COL, cell_text, cluster_rows, make_app, ready, screen

HOSTILE = [
    b"[/]",
    b"[bold]x[/bold]",
    b"[link=https://example.com]y[/link]",
    b"\x1b[2J",
    b"\xff\xfe",
    b"\xfe\xff",
    b"a\nb",
    b"\t",
    "😀漢字é".encode(),
]
BIG = b"v" * 10240


# ------------------------------------------------------------------ helpers

def shown(data: bytes) -> str:
    """What every panel must show for these bytes: the WAL panel's escaping
    (engine/wal/describe.quote, a Python literal) without its quotes --
    control characters and bytes that are not UTF-8 as \\xNN / \\n / \\t,
    a backslash doubled, everything printable as it is."""
    if len(data) > 64:                   # quote() cuts there; only plain ASCII is that long here
        assert data.isascii() and data.decode().isprintable()
        return data.decode()
    return quote(data)[1:-1]


def shown_str(text: str) -> str:
    """The same for a key as the console holds it (bytes decoded with surrogateescape)."""
    return shown(text.encode("utf-8", "surrogateescape"))


@pytest.fixture(scope="module")
def hosted(shared_hosted):
    return shared_hosted        # conftest: one hosted cluster for the console's hosted modules


@pytest.fixture
def prefix() -> bytes:
    return f"x{uuid.uuid4().hex[:6]}/".encode()


async def _grpc_put(endpoint: str, items: list[tuple[bytes, bytes]]) -> None:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for k, v in items:
            await kv.Put(rpc_pb2.PutRequest(key=k, value=v), timeout=10.0)


async def _grpc_get(endpoint: str, key: bytes) -> list[bytes]:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        resp = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=key), timeout=10.0)
        return [kv.value for kv in resp.kvs]


def _shown_keys(app) -> list[str]:
    table = screen(app).query_one(KeysTable)
    return [cell_text(table, r, 0) for r in range(table.row_count)]


def _detail_rows(app) -> list[tuple[str, str]]:
    table = screen(app).query_one(DetailTable)
    return [(cell_text(table, r, 0), cell_text(table, r, 1)) for r in range(table.row_count)]


def _timeline_lines(app) -> list[str]:
    """The timeline as drawn (each event through the list's own render_item)."""
    lines = screen(app).query_one(TimelineList)
    return [lines.render_item(e).plain for e in screen(app).query_one(TimelinePanel).events]


def _toasts(app) -> list[str]:
    return [t.render().plain for t in app.screen.query(Toast)]


async def _alive(app, pilot) -> None:
    """Not exited, still polling, and the whole screen renders."""
    assert app.is_running and app.return_code is None and app._exception is None
    polled = app.source.state.polled_at
    await until(pilot, lambda: app.source.state.polled_at > polled, what="the next poll")
    app.export_screenshot()        # every visible widget drawn (a markup error would raise here)
    assert app.is_running and app._exception is None


async def _select_key(app, pilot, text: str) -> None:
    """Put the keys table's cursor on the row that shows `text` (what arrows would do)."""
    screen(app).focus_panel("keys")
    await until(pilot, lambda: text in _shown_keys(app), what=f"{text!r} in the keys table")
    table = screen(app).query_one(KeysTable)
    table.move_cursor(row=_shown_keys(app).index(text), animate=False)
    await until(pilot, lambda: shown_str(screen(app).selected_key) == text, what=f"{text!r} selected")


async def _submit_form(app, pilot, values: dict[str, str]) -> None:
    """Fill the open form (Input values set as a paste would), enter in the last field."""
    form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                       what="the form")
    for name, value in values.items():
        form.query_one(f"#field-{name}", Input).value = value
    last = list(form.query(Input))[-1]
    form.set_focus(last)
    await pilot.pause()
    await pilot.press("enter")


# --------------------------------------------------- offline: every panel

def test_every_panel_shows_hostile_server_strings_literally():
    """A fixed state full of hostile strings (no network): each panel draws them as text."""
    evil = "[/]\x1b[2J[bold]b[/bold]\udcff"     # \udcff: the byte 0xff as codec.decode holds it
    members = tuple(dataclasses.replace(m, name=f"[red]{m.name}", endpoint=f"[/]{m.endpoint}",
                                        errors=("[link=https://example.com]e[/link]\n\x1b[31m",),
                                        alarms=("[/]",)) for m in STATE.members)
    state = dataclasses.replace(
        STATE, members=members,
        timeline=(TimelineLine(STATE.polled_at, "error", f"put {evil} failed: [/]", ok=False),) + STATE.timeline,
        wal=STATE.wal + (WalEntry(1045, 7, "normal", 'put key="[/]" value="\x1b[2J"', True, True),),
        watchers=(WatcherInfo("[red]n1", 1, evil, "[/]", 0, True, 1),),
        watch=LiveWatch(evil, True, (WatchEvent(STATE.polled_at, "PUT", evil, "[/]\n", 9),), "[/] watching"),
    )

    async def body():
        app = RaftuiApp(lambda: FakeSource(state), live=False)
        async with app.run_test(size=(200, 50), notifications=True) as pilot:
            await pilot.pause()
            main = screen(app)
            panel = main.query_one(KeysPanel)
            panel.listing = dataclasses.replace(panel.listing, keys=(), error="[/] listing failed")
            await pilot.pause()
            svg = app.export_screenshot()
            assert app._exception is None
            rows = cluster_rows(app)
            assert [r[COL["member"]] for r in rows] == ["[red]n1", "[red]n2", "[red]n3"]
            problems = "[/], [link=https://example.com]e[/link]\\n\\x1b[31m"
            shown = rows[0][COL["alarms / errors"]]       # the whole text, or its start and an ellipsis
            assert shown == problems or (shown.endswith("…") and problems.startswith(shown[:-1])), shown
            assert "[red]n" in str(main.query_one("#title-bar").render())
            shown_evil = shown_str(evil)
            assert shown_evil == "[/]\\x1b[2J[bold]b[/bold]\\xff"
            timeline = main.query_one(TimelineList)
            assert f"put {shown_evil} failed: [/]" in timeline.render_item(state.timeline[0]).plain
            wal = main.query_one(WalList)
            assert wal.render_item(state.wal[-1]).plain.endswith('put key="[/]" value="\\x1b[2J"')
            watch = main.query_one(WatchEventList)
            assert watch.render_item(state.watch.events[0]).plain.endswith(f"PUT     {shown_evil} @9 = [/]\\n")
            assert "\x1b" not in svg and "[red]n1" in svg.replace("&#160;", " ")
    run(body())


def test_an_exception_in_a_command_is_a_timeline_error_not_an_exit():
    class Broken(FakeSource):
        def note(self, text, ok=True, kind="action"):
            self.state = dataclasses.replace(self.state, timeline=(TimelineLine(0, kind, text, ok),)
                                             + self.state.timeline)

        async def compact(self, revision):
            raise RuntimeError("[/] boom")

        async def alarm_list(self):
            return ActionResult(True, "alarms: [/] \x1b[2J[link=x]y[/link]")

        async def list_keys(self, prefix="", limit=1000, after=None, before=None, last=False):
            raise ValueError("[/] page")

    async def body():
        app = RaftuiApp(Broken, live=False)
        async with app.run_test(size=(160, 48), notifications=True) as pilot:
            await pilot.press("c")
            await _submit_form(app, pilot, {"revision": "5"})
            await pilot.press("y")
            await until(pilot, lambda: any("compact failed: RuntimeError('[/] boom')" in t
                                           for t in _timeline_lines(app)), what="the error on the timeline")
            await until(pilot, lambda: any("compact failed: RuntimeError('[/] boom')" in t for t in _toasts(app)),
                        what="the error as a toast")
            # A worker that raises (here the keys pager): a timeline error, the console goes on.
            screen(app).read_keys("", "after", "k")
            await until(pilot, lambda: any("keys-page failed: ValueError('[/] page')" in t
                                           for t in _timeline_lines(app)), what="the worker's error")
            screen(app).read_keys("", "after", "k")          # the same failure again: told once
            await until(pilot, lambda: not screen(app).workers or all(
                w.group != "keys-page" or w.is_finished for w in screen(app).workers), what="the pager done")
            await pilot.pause()
            assert sum("keys-page failed" in t for t in _timeline_lines(app)) == 1
            await pilot.press("A")
            await until(pilot, lambda: "alarms: [/] \\x1b[2J[link=x]y[/link]" in _toasts(app),
                        what="the alarm list as a literal toast")
            app.export_screenshot()
            assert app.is_running and app._exception is None
    run(body())


# ------------------------------------------------------- hosted, by gRPC

def test_hostile_keys_written_by_grpc_are_shown_literally(hosted, prefix):
    before = [(prefix + b"a" + k, k) for k in HOSTILE[:3]]          # there when the console starts
    after = [(prefix + k, v) for k, v in zip(HOSTILE, reversed(HOSTILE))] + [(prefix + b"big", BIG)]

    async def body():
        await _grpc_put(hosted.endpoints[0], before)
        app = make_app(hosted.endpoints, host=hosted)
        async with app.run_test(size=(160, 48), notifications=True) as pilot:
            await ready(app, pilot)
            main = screen(app)
            # A live watch on the prefix, opened by the form (W, key*).
            await pilot.press("W")
            await _submit_form(app, pilot, {"key": shown(prefix) + "*"})
            await until(pilot, lambda: main.source.state.watch and main.source.state.watch.status == "watching",
                        what="the watch open")
            await _grpc_put(hosted.endpoints[1], after)

            want = [shown(k) for k, _ in before + after]
            assert len(set(want)) == len(want)                 # \xff\xfe and \xfe\xff look different
            await until(pilot, lambda: set(want) <= set(_shown_keys(app)), what="every hostile key listed")
            assert shown(prefix + b"\x1b[2J") == shown(prefix) + "\\x1b[2J"
            assert shown(prefix) + "[link=https://example.com]y[/link]" in _shown_keys(app)
            await _alive(app, pilot)

            # The watch panel draws each event literally (the 10 KiB value cut, with its size).
            events = main.query_one(WatchEventList)
            await until(pilot, lambda: len([e for e in main.source.state.watch.events if e.type == "PUT"])
                        >= len(after), what="the watch events")
            drawn = [events.render_item(e).plain for e in main.source.state.watch.events if e.type == "PUT"]
            for k, v in after[:-1]:
                assert any(f"PUT     {shown(k)} @" in d and d.endswith(f" = {shown(v)}") for d in drawn), k
            assert any(d.endswith(" = " + "v" * 1000 + "...(10240 bytes)") for d in drawn)

            # enter on [/]: its history, literally.
            await _select_key(app, pilot, shown(prefix + b"[/]"))
            await pilot.press("enter")
            await until(pilot, lambda: _detail_rows(app)[:1] == [(shown(prefix + b"[/]"), shown(HOSTILE[-1]))],
                        what="the history of [/]")
            # r on [/] and on \xff\xfe: the key prefilled as shown, read back exactly.
            for key in (prefix + b"[/]", prefix + b"\xff\xfe"):
                await _select_key(app, pilot, shown(key))
                await pilot.press("r")
                form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                                   what="the read form")
                assert form.query_one("#field-key", Input).value == shown(key)
                await pilot.press("enter", "ctrl+u", "0", "enter")
                await until(pilot, lambda k=key: _detail_rows(app) == [(shown(k), shown(dict(after)[k]))],
                            what=f"the read of {shown(key)}")
            assert any(f"get {shown(prefix)}\\xff\\xfe at latest" in t for t in _timeline_lines(app))
            # The big value in the detail table: cut to the panel, with its size.
            await _select_key(app, pilot, shown(prefix + b"big"))
            await pilot.press("enter")
            await until(pilot, lambda: (lambda rows: rows and rows[0][0] == shown(prefix + b"big")
                                        and rows[0][1].endswith("v…(10240 bytes)")
                                        and set(rows[0][1][:-len("…(10240 bytes)")]) == {"v"})(_detail_rows(app)),
                        what="the big value")
            # The WAL panel (raftnode's own escaping) draws the puts too.
            wal = main.query_one(WalList)
            await until(pilot, lambda: any("\\x1b[2J" in wal.render_item(e).plain for e in wal.items),
                        what="the put of \\x1b[2J in the WAL panel")
            await _alive(app, pilot)
    run(body(), timeout=120)


# ---------------------------------------------- hosted, by the put form

def test_hostile_keys_written_by_the_console_form(hosted, prefix):
    shown_prefix = shown(prefix)

    async def body():
        app = make_app(hosted.endpoints, host=hosted)
        # The form is filled at 80x24 (what is tested is the form and what it stores: every
        # key press redraws the dimmed screen behind the form, 4x the cells at 160x48);
        # the listing and the read are checked at 160x48, where keys this long are not cut.
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await ready(app, pilot)
            # [/] typed key by key, as an operator would.
            await pilot.press("w", "ctrl+u", *shown_prefix, "[", "/", "]", "enter", "x", "enter", "enter")
            await until(pilot, lambda: any(t.startswith(f"put {shown_prefix}[/] at revision") for t in _toasts(app)),
                        what="the toast after writing [/]")
            # The rest as pasted: keys and values in the form's escapes (what the panels show).
            cases = [(k, HOSTILE[(i + 1) % len(HOSTILE)]) for i, k in enumerate(HOSTILE[1:])]
            for k, v in cases + [(b"big", BIG)]:
                await pilot.press("w")
                await _submit_form(app, pilot, {"key": shown(prefix + k), "value": shown(v), "ttl": ""})
                # Its toast (drawn by Textual's Toast widget) says it literally.
                await until(pilot, lambda k=k: any(t.startswith(f"put {shown(prefix + k)} at revision")
                                                   for t in _toasts(app)),
                            what=f"the toast after writing {shown(k)}")
            # Stored byte for byte.
            for k, v in cases + [(b"[/]", b"x"), (b"big", BIG)]:
                assert await _grpc_get(hosted.endpoints[2], prefix + k) == [v], k
            await pilot.resize_terminal(160, 48)
            want = {shown(prefix + k) for k, _ in cases} | {shown_prefix + "[/]"}
            await until(pilot, lambda: want <= set(_shown_keys(app)), what="every key listed")
            # The timeline says it literally too.
            assert any(f"put {shown_prefix}\\x1b[2J at revision" in t for t in _timeline_lines(app))
            assert any(f"put {shown_prefix}[link=https://example.com]y[/link] at revision" in t
                       for t in _timeline_lines(app))
            # r on the [/] key the form wrote.
            await _select_key(app, pilot, shown_prefix + "[/]")
            await pilot.press("r", "enter", "ctrl+u", "0", "enter")
            await until(pilot, lambda: _detail_rows(app) == [(shown_prefix + "[/]", "x")], what="the read of [/]")
            await _alive(app, pilot)
    run(body(), timeout=120)


# ----------------------------------------------------------- form numbers

def test_forms_refuse_bad_numbers_inline_and_send_nothing(hosted):
    async def body():
        app = make_app(hosted.endpoints, host=hosted)
        # 80x24: the forms and their inline errors are the same at any size, and each of the
        # ~90 key presses redraws the dimmed screen behind the form (4x the cells at 160x48).
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await ready(app, pilot)
            main = screen(app)
            before = list(main.source.state.timeline)

            # f on a member: a negative delay, a drop over 100 %.
            await pilot.press("1", "f")
            form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                               what="the drop/delay form")
            await pilot.press("ctrl+u", "0", "enter", "ctrl+u", "-", "5", "enter")
            await until(pilot, lambda: getattr(form, "problems", None) == {"delay": "Delay (ms): at least 0"},
                        what="the inline error for -5")
            assert app.screen is form and form.query_one("#error-delay").has_class("-shown")
            await pilot.press("ctrl+u", "6", "0", "0", "0", "0", "1", "enter")
            await until(pilot, lambda: getattr(form, "problems", None) == {"delay": "Delay (ms): at most 60000"},
                        what="the inline error for 600001")
            await pilot.press("escape")

            # r: a revision beyond int64, letters, an exponent.
            for bad, problem in (("99999999999999999999", "Revision: at most 9223372036854775807"),
                                 ("abc", "Revision: a whole number, like 1"),
                                 ("1e3", "Revision: a whole number, like 1"),
                                 ("-1", "Revision: at least 0")):
                await pilot.press("r")
                form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                                   what="the read form")
                await pilot.press("ctrl+u", "k", "enter", "ctrl+u", *bad, "enter")
                await until(pilot, lambda f=form, p=problem: getattr(f, "problems", None) == {"revision": p},
                            what=f"the inline error for {bad}")
                assert app.screen is form                       # still open, the operator can fix it
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, FormScreen), what="the form closed")

            # c (compact) to 0, a TTL of -3.
            await pilot.press("c")
            form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                               what="the compact form")
            await pilot.press("ctrl+u", "0", "enter")
            await until(pilot, lambda: getattr(form, "problems", None) == {"revision": "Revision: at least 1"},
                        what="the inline error for compact 0")
            await pilot.press("escape")
            await pilot.press("w")
            form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                               what="the write form")
            await pilot.press("ctrl+u", "k", "enter", "v", "enter", "-", "3", "enter")
            await until(pilot, lambda: getattr(form, "problems", None) == {"ttl": "Lease TTL (s): at least 0"},
                        what="the inline error for a TTL of -3")
            await pilot.press("escape")

            await _alive(app, pilot)
            # Nothing was sent: no fault set, no read, no write, no compaction.
            new = [e for e in main.source.state.timeline if e not in before]
            assert not [e for e in new if e.kind in ("fault", "read", "action", "compact", "error")], new
            assert all("delaying" not in " ".join(m.errors) for m in main.source.state.members)
    run(body(), timeout=120)


# --------------------------------------------------------- a hostile name

def test_member_named_with_markup_is_shown_literally(raftnode_binary, tmp_path):
    from tests.support.raftnode import start_raftnode_cluster

    name = "[red]x"
    # A short election (CI time: a lone member waits a whole election timeout; the name is what is tested).
    cluster = start_raftnode_cluster(tmp_path / "named", 1,
                                     extra_args=("--heartbeat-interval=50", "--election-timeout=250"))
    try:
        planned = cluster.plan_member(name)

        async def add():
            async with grpc.aio.insecure_channel(cluster.endpoints[0]) as ch:
                await rpc_pb2_grpc.ClusterStub(ch).MemberAdd(
                    rpc_pb2.MemberAddRequest(peerURLs=[planned.peer_url], isLearner=True), timeout=10.0)

        run(add())
        cluster.start_planned(planned, timeout=30.0)

        async def body():
            app = make_app(cluster.endpoints)
            async with app.run_test(size=(160, 48), notifications=True) as pilot:
                await until(pilot, lambda: any(r[COL["member"]] == name for r in cluster_rows(app)),
                            timeout=30.0, what="the member named [red]x in the cluster panel")
                row = next(r for r in cluster_rows(app) if r[COL["member"]] == name)
                await pilot.press(row[COL["#"]])
                if "loop_lag_ms" in inspect_pb2.RaftStatusResponse.DESCRIPTOR.fields_by_name:
                    # raftnode reports how late its loop wakes: every member shows it.
                    await until(pilot, lambda: all(r[COL["loop lag"]].endswith(" ms") for r in cluster_rows(app)),
                                what="every member's loop lag")
                await until(pilot, lambda: name in str(screen(app).query_one("#title-bar").render()),
                            what="the name in the title")
                await _alive(app, pilot)
        run(body(), timeout=90)
    finally:
        cluster.stop()
