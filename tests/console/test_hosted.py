"""The console in host mode on real raftnode members, driven by key presses.

One hosted 3-member cluster (raftui's own ProcessHost, fault injection on)
serves the module -- and the console's other hosted modules (conftest's
shared_hosted); each test leaves it healthy for the next. Every wait is
on what the screen shows (a table cell, a panel's state) with a deadline;
nothing sleeps to synchronise. Members are stopped by PID at teardown.
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import uuid

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from raftui.host import raftnode_host
from raftui.screens.confirm import ConfirmScreen
from raftui.screens.form import FormScreen
from raftui.screens.quit import QuitScreen
from raftui.source import ClusterSource
from raftui.widgets.keys_panel import DetailTable, KeysPanel
from raftui.widgets.timeline_panel import TimelinePanel
from raftui.widgets.wal_panel import WalList, WalPanel

from .conftest import fill, run, stop_by_pid, until
from .ui import (COL, cell_text, cluster_panel, cluster_rows, key_rows, leader_row, make_app, ready,
                 row_of, screen, timeline)


DOWN_WITHIN = 3.0           # a killed member is shown down this fast (its status stream breaks at once)
ELECTION_WITHIN = 10.0      # a new leader after the old one is killed


@pytest.fixture(scope="module")
def hosted(shared_hosted):
    return shared_hosted        # conftest: one hosted cluster for the console's hosted modules


@pytest.fixture
def key() -> str:
    return f"h{uuid.uuid4().hex[:6]}"


def _app(host):
    return make_app(host.endpoints, host=host)


def _num(row: list[str], col: str) -> int:
    text = row[COL[col]]
    return int(text) if text.strip().isdigit() else -1


def _number_of(app, name: str) -> str:
    """The digit that selects member `name` (rows are numbered from 1)."""
    return next(r[COL["#"]] for r in cluster_rows(app) if r[COL["member"]] == name)


def _followers(app) -> list[str]:
    return [r[COL["member"]] for r in cluster_rows(app) if "follower" in r[COL["role"]]]


async def _put_direct(endpoint: str, items: list[tuple[bytes, bytes]] | None = None,
                      delete_prefix: bytes | None = None, timeout: float = 10.0) -> None:
    """Writes outside the console (a test's set-up, not what is tested)."""
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(0, len(items or []), 50):
            await asyncio.gather(*(kv.Put(rpc_pb2.PutRequest(key=k, value=v), timeout=timeout)
                                   for k, v in items[i:i + 50]))
        if delete_prefix is not None:
            end = delete_prefix[:-1] + bytes([delete_prefix[-1] + 1])
            await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=delete_prefix, range_end=end),
                                 timeout=timeout)


# --------------------------------------------------------------------- keys

def test_write_key_see_revision_and_read_older_revision(hosted, key):
    async def body():
        app = _app(hosted)
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
            table = screen(app).query_one("#keys-table")
            shown = [[cell_text(table, r, c) for c in range(4)] for r in range(table.row_count)]
            assert [key, first[1], second[2], "2"] in shown      # key, create, mod revision, version

            await until(pilot, lambda: screen(app).state.revision == int(second[2]), what="the revision known")
            await pilot.press("r")
            await fill(pilot, key)
            revision = app.screen.query_one("#field-revision")
            assert revision.value == str(screen(app).state.revision)     # the current one, to edit down from
            await fill(pilot, first[2])
            detail = screen(app).query_one(DetailTable)
            await until(pilot, lambda: detail.row_count == 1, what="the read at the old revision")
            assert cell_text(detail, 0, 1) == "one" and cell_text(detail, 0, 3) == first[2]
            assert any(f"get {key} at revision {first[2]}" in t for t in timeline(app))

            await pilot.press("w")
            await fill(pilot, key, "", "")                                # an empty value: etcd allows it
            await until(pilot, lambda: next((r for r in key_rows(app) if r[0] == key and r[3] == "3"), None),
                        what="version 3 with an empty value")
    run(body())


async def _count(endpoint: str, prefix: bytes = b"") -> int:
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        end = prefix[:-1] + bytes([prefix[-1] + 1]) if prefix else b"\x00"
        resp = await kv.Range(rpc_pb2.RangeRequest(key=prefix or b"\x00", range_end=end, count_only=True),
                              timeout=10)
        return resp.count


def test_delete_star_shows_the_key_count_and_defaults_to_no(hosted, key):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            ep = screen(app).state.leader.endpoint
            await _put_direct(ep, [(f"{key}/{i}".encode(), b"v") for i in range(3)])
            total = await _count(ep)

            async def question(typed: str) -> str:
                await pilot.press("d")
                await fill(pilot, typed)
                confirm = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmScreen) else None,
                                      what="the delete question")
                return str(confirm.query_one("#confirm-question").render())

            asked = await question("*")
            assert asked.startswith(f"Delete every key in the cluster: {total:,} keys?"), asked
            await pilot.press("enter")                        # the default is No
            await until(pilot, lambda: app.screen is screen(app), what="the question answered")
            assert await _count(ep) == total and not any(t.startswith("deleted") for t in timeline(app))

            asked = await question(f"{key}/*")
            assert asked.startswith(f"Delete every key starting with '{key}/': 3 keys?"), asked
            await pilot.press("y")
            await until(pilot, lambda: any(t.startswith(f"deleted 3 key(s) at prefix {key}/") for t in timeline(app)),
                        what="the prefix deleted on y")
            assert await _count(ep) == total - 3
    run(body(), timeout=40)


# ------------------------------------------------------------ leader change

def test_kill_leader_new_leader_and_term_flash_then_restart(hosted):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(160, 48)) as pilot:
            await ready(app, pilot)
            panel = cluster_panel(app)
            before = leader_row(app)
            old_term, old_leader = _num(before, "term"), before[COL["member"]]
            flashes = panel.flashes
            await pilot.press(before[COL["#"]], "k", "y")
            await until(pilot, lambda: "killed" in row_of(app, old_leader)[COL["health"]],
                        timeout=DOWN_WITHIN, what="the killed leader marked killed")
            await until(pilot, lambda: (leader_row(app) or before)[COL["member"]] != old_leader,
                        timeout=ELECTION_WITHIN, what="a new leader")
            new = leader_row(app)
            assert _num(new, "term") > old_term
            assert f"term {new[COL['term']]}" in screen(app).query_one("#summary-bar").plain
            assert any(t.startswith(f"leader is now {new[COL['member']]}") for t in timeline(app))
            assert panel.flashes > flashes      # the term change flashed (see test_panels for the look)
            _assert_election_order(app, old_leader, new[COL["member"]], _num(new, "term"))

            await pilot.press("s")   # restart the selected (killed) member
            await until(pilot, lambda: "up" in row_of(app, old_leader)[COL["health"]],
                        timeout=ELECTION_WITHIN, what="the restarted member up")
            # Reported once the new process answers, not when it was spawned.
            await until(pilot, lambda: any(t.startswith(f"restarted {old_leader}: it answers on")
                                           for t in timeline(app)), what="the restart reported")
            await until(pilot, lambda: _num(row_of(app, old_leader), "term") == _num(leader_row(app), "term"),
                        what="the restarted member in the new term")
    run(body(), timeout=60)


def _assert_election_order(app, old: str, new: str, term: int) -> None:
    """The timeline of an election, newest first: the new leader above the
    campaign and the "no leader" it ended, above the old leader going down.
    What the console saw is in the order learned (sequence numbers); what
    members reported is placed by their clocks, which hosted members share
    with the console: every live line is then in time order too."""
    events = screen(app).query_one(TimelinePanel).events
    seen = [e.seq for e in events if e.seq and not e.reported]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == len(seen)
    live = [e.at for e in events if e.seq]
    assert live == sorted(live, reverse=True), [(e.text, e.at, e.seq) for e in events[:12]]
    texts = [e.text for e in events]
    elected = texts.index(f"leader is now {new} (term {term})")
    before = [t for t in texts if t == "no leader" or t.endswith(f"campaigns for term {term}")
              or t.startswith(f"{old} is down")]
    assert before and all(texts.index(t) > elected for t in before), texts[:12]


# ------------------------------------------------------------- partitions

def test_partition_a_member_rest_commits_then_heal_catches_up(hosted, key):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(160, 48)) as pilot:
            await ready(app, pilot)
            victim = _followers(app)[0]
            await pilot.press(_number_of(app, victim), "p", "y")
            await until(pilot, lambda: "partitioned" in row_of(app, victim)[COL["health"]],
                        what=f"{victim} marked partitioned")
            assert all("up" in r[COL["health"]] for r in cluster_rows(app) if r[COL["member"]] != victim)
            cut_commit = _num(row_of(app, victim), "commit")
            leader_commit = _num(leader_row(app), "commit")
            await pilot.press("w")
            await fill(pilot, key, "v", "")
            await until(pilot, lambda: _num(leader_row(app), "commit") > leader_commit,
                        what="the majority committing while the member is cut off")
            await until(pilot, lambda: all(_num(r, "commit") > leader_commit
                                           for r in cluster_rows(app) if r[COL["member"]] != victim),
                        what="every member of the majority committing")
            assert _num(row_of(app, victim), "commit") == cut_commit

            await pilot.press("H")
            await until(pilot, lambda: "up" in row_of(app, victim)[COL["health"]],
                        what=f"{victim} up again after heal")
            await until(pilot, lambda: _num(row_of(app, victim), "applied") == _num(leader_row(app), "applied")
                        > leader_commit, what=f"{victim} caught up (applied index = the leader's)")
            assert any(t.startswith("partitioned {" + victim) for t in timeline(app))
            assert any(t.startswith("healed") for t in timeline(app))
    run(body(), timeout=60)


# ------------------------------------------------------------- maintenance

def test_compact_and_defrag_shrink_the_db(hosted, key):
    big = b"x" * 4096
    leader_ep = None

    async def body():
        nonlocal leader_ep
        app = _app(hosted)
        async with app.run_test(size=(160, 48)) as pilot:
            await ready(app, pilot)
            leader_ep = screen(app).state.leader.endpoint
            prefix = f"{key}/bulk/".encode()
            await _put_direct(leader_ep, [(prefix + b"%05d" % i, big) for i in range(400)], prefix)
            name = leader_row(app)[COL["member"]]
            await pilot.press(_number_of(app, name))
            await until(pilot, lambda: screen(app).state.revision >= 401, what="the bulk load on screen")
            await pilot.press("c")
            await fill(pilot, str(screen(app).state.revision))
            await pilot.press("y")
            await until(pilot, lambda: any(t.startswith("compacted to revision") for t in timeline(app)),
                        what="the compaction")
            size_before = row_of(app, name)[COL["db size"]]
            await pilot.press("g", "y")
            line = await until(pilot, lambda: next((t for t in timeline(app)
                                                    if t.startswith(f"defragmented {name}: db ")), None),
                               timeout=30, what="the defrag result in the timeline")
            db_before, db_after = line.split(": db ")[1].split(" -> ")
            assert _bytes(db_after) < _bytes(db_before), line
            await until(pilot, lambda: row_of(app, name)[COL["db size"]] != size_before,
                        what="the db size column changing")
            assert _bytes(row_of(app, name)[COL["db size"]]) < _bytes(size_before)
    run(body(), timeout=60)


def _bytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]


# --------------------------------------------------------------------- WAL

def test_wal_shows_uncommitted_entries_while_followers_are_paused(hosted, key):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            leader = leader_row(app)[COL["member"]]
            leader_ep = screen(app).state.leader.endpoint
            followers = _followers(app)
            for f in followers:
                await pilot.press(_number_of(app, f), "z", "y")
            await pilot.press(_number_of(app, leader))
            await until(pilot, lambda: all(hosted.state(f) == "paused" for f in followers),
                        what="both followers stopped")
            # A write straight to the leader at once (set-up: typing it into
            # the form takes longer than check-quorum gives): the leader
            # appends it but cannot commit it; about an election timeout later
            # it steps down, and the entry stays in its log, uncommitted.
            put = asyncio.ensure_future(_put_direct(leader_ep, [(key.encode(), b"pending")], timeout=3))
            wal = screen(app).query_one(WalPanel)

            def entry():
                return next((e for e in wal.state.wal if key in e.text), None)

            pending = await until(pilot, lambda: (e := entry()) is not None and not e.committed and e,
                                  what="the uncommitted entry in the leader's WAL")
            lines = screen(app).query_one(WalList)
            uncommitted = lines.get_component_rich_style("wal--uncommitted")
            committed = lines.get_component_rich_style("wal--committed")
            assert uncommitted != committed
            rendered = lines.render_item(pending)
            assert any(span.style == uncommitted for span in rendered.spans)
            assert "…" in rendered.plain         # the not-yet-committed mark
            assert all("paused" in row_of(app, f)[COL["health"]] for f in followers)
            for f in followers:
                await pilot.press(_number_of(app, f), "u")
            await ready(app, pilot, timeout=ELECTION_WITHIN)
            await asyncio.gather(put, return_exceptions=True)
    run(body(), timeout=60)


# ---------------------------------------------------- quitting and resuming

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_learner_quit_leave_reattach_stop_and_resume_with_keys(raftnode_binary, tmp_path, key):
    data_dir = tmp_path / "cluster"
    host = raftnode_host(data_dir, 1)
    hosts = [host]
    try:
        host.start()
        host.wait_listening(30.0)

        async def first():
            app = _app(host)
            async with app.run_test(size=(80, 24)) as pilot:
                await ready(app, pilot, members=1)
                await pilot.press("w")
                await fill(pilot, key, "kept", "")
                await until(pilot, lambda: any(r[0] == key for r in key_rows(app)), what="the key")
                await pilot.press("a")          # host mode: an empty URL starts a local learner
                await fill(pilot, "")
                await pilot.press("y")          # it starts a process: asked first
                await until(pilot, lambda: row_of(app, "n2") and "learner" in row_of(app, "n2")[COL["role"]]
                            and "up" in row_of(app, "n2")[COL["health"]],
                            timeout=20, what="the new learner n2 up")
                title = screen(app).query_one("#title-bar")
                await until(pilot, lambda: "hosting 2 members" in str(title.render()),
                            what="the header counting the learner")
                await pilot.press("q")
                await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
                assert f"raftui --data-dir {host.data_dir}" in app.screen.reattach
                await pilot.press("l")          # leave them running
            return app.return_code

        assert run(first(), timeout=60) == 0
        pids = {n: host.pid(n) for n in host.names}
        assert host.names == ["n1", "n2"] and all(pid and _alive(pid) for pid in pids.values())

        again = raftnode_host(data_dir, 3)      # the saved layout wins over --members
        hosts.append(again)
        assert again.resumed and again.names == ["n1", "n2"]
        again.start()                           # adopts the running members, starts nothing
        assert {n: again.pid(n) for n in again.names} == pids

        async def second():
            app = _app(again)
            async with app.run_test(size=(80, 24)) as pilot:
                await ready(app, pilot, members=2)
                await pilot.press("q", "s")     # stop them
                await until(pilot, lambda: not app.is_running, timeout=20, what="the console to exit")

        run(second(), timeout=60)
        assert not any(_alive(pid) for pid in pids.values())

        third = raftnode_host(data_dir, 3)
        hosts.append(third)
        third.start()
        third.wait_listening(30.0)

        async def resumed():
            source = ClusterSource(third.endpoints)
            try:
                for _ in range(100):
                    got = await source.get(key)
                    if got.ok and got.data:
                        return got.data[0].value, len((await source.poll()).members)
                    await asyncio.sleep(0.1)  # retry interval while the resumed members elect
                return None, 0
            finally:
                await source.close()

        assert run(resumed()) == ("kept", 2)
    finally:
        for h in hosts:
            stop_by_pid(h)


# ------------------------------------------- leadership, split, faults, snapshot

def test_transfer_leadership_to_the_selected_member(hosted):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(160, 48)) as pilot:
            await ready(app, pilot)
            old = leader_row(app)[COL["member"]]
            target = _followers(app)[0]
            await pilot.press(_number_of(app, target), "t", "y")
            await until(pilot, lambda: (leader_row(app) or [""] * len(COL))[COL["member"]] == target,
                        what=f"{target} shown as the leader")
            # The old leader's own answer may be a poll behind the new one's.
            await until(pilot, lambda: "leader" not in row_of(app, old)[COL["role"]],
                        what=f"{old} no longer shown as the leader")
            await until(pilot, lambda: any(t.startswith(f"leadership moved to {target}") for t in timeline(app)),
                        what="the transfer in the timeline")
    run(body(), timeout=40)


def test_split_into_two_groups_minority_marked_majority_commits_then_heal(hosted, key):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(160, 48)) as pilot:
            await ready(app, pilot)
            minority = _followers(app)[0]
            majority = [r[COL["member"]] for r in cluster_rows(app) if r[COL["member"]] != minority]
            leader_commit = _num(leader_row(app), "commit")
            await pilot.press("P")
            await fill(pilot, minority)
            await pilot.press("y")
            await until(pilot, lambda: "partitioned" in row_of(app, minority)[COL["health"]],
                        what=f"{minority} (the minority side) marked partitioned")
            assert all("up" in row_of(app, n)[COL["health"]] for n in majority)
            assert all(f"cut from {minority}" in row_of(app, n)[COL["alarms / errors"]] for n in majority)
            assert any(t.startswith("partitioned {" + minority + "}") for t in timeline(app))
            cut_commit = _num(row_of(app, minority), "commit")
            await pilot.press("w")
            await fill(pilot, key, "split", "")
            await until(pilot, lambda: all(_num(row_of(app, n), "commit") > leader_commit for n in majority),
                        what="the majority side committing")
            assert _num(row_of(app, minority), "commit") == cut_commit
            await pilot.press("H")
            await until(pilot, lambda: "up" in row_of(app, minority)[COL["health"]]
                        and _num(row_of(app, minority), "applied") == _num(leader_row(app), "applied")
                        > leader_commit, what=f"{minority} healed and caught up")
    run(body(), timeout=40)


def test_drop_and_delay_peer_messages_shown_in_the_member_fault_status(hosted):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(160, 48)) as pilot:
            await ready(app, pilot)
            victim = _followers(app)[0]
            await pilot.press(_number_of(app, victim), "f")
            await fill(pilot, "30", "40")
            await pilot.press("y")
            shown = await until(pilot, lambda: (lambda s: "dropping 30%" in s and "delaying 40 ms" in s and s)(
                row_of(app, victim)[COL["alarms / errors"]]), what=f"{victim}'s drop/delay status")
            assert "dropping 30%" in shown
            assert any(t.startswith(f"{victim}: dropping 30% and delaying 40 ms") for t in timeline(app))
            assert "partitioned" not in row_of(app, victim)[COL["health"]]
            await pilot.press("H")
            await until(pilot, lambda: "dropping" not in row_of(app, victim)[COL["alarms / errors"]]
                        and "delaying" not in row_of(app, victim)[COL["alarms / errors"]],
                        what="the drop/delay gone after heal")
    run(body(), timeout=40)


def test_save_a_snapshot_asks_where_defaults_to_the_data_dir_and_never_overwrites_unasked(hosted):
    saved = {}

    async def body():
        app = _app(hosted)
        async with app.run_test(size=(160, 48)) as pilot:
            await ready(app, pilot)
            await pilot.press("S")
            form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                               what="the snapshot form")
            path = form.query_one("#field-path").value
            assert path.startswith(str(hosted.data_dir / "snapshots") + "/") and path.endswith(".db"), path
            await pilot.press("enter")
            line = await until(pilot, lambda: next((t for t in timeline(app) if t.startswith("snapshot ")), None),
                               timeout=20, what="the snapshot result in the timeline")
            assert "sha256 ok" in line and f"saved to {path} " in line, line      # says where it wrote
            saved["path"] = path
            before = os.stat(path).st_mtime_ns
            for answer in ("enter", "y"):                                        # No (the default), then yes
                await pilot.press("S")
                form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                                   what="the snapshot form")
                form.query_one("#field-path").value = path        # as a paste would (typing it is slow)
                await pilot.press("enter")
                confirm = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmScreen) else None,
                                      what="the overwrite question")
                assert str(confirm.query_one("#confirm-question").render()).startswith(f"{path} exists. Overwrite")
                await pilot.press(answer)
                await until(pilot, lambda: app.screen is screen(app), what="the question answered")
            await until(pilot, lambda: sum(t.startswith("snapshot ") for t in timeline(app)) == 2, timeout=20,
                        what="the second snapshot (after y only)")
            assert os.stat(path).st_mtime_ns != before
    run(body(), timeout=40)
    target = pathlib.Path(saved["path"])
    size = target.stat().st_size
    assert size > 32 and size % 512 == 32, size      # bbolt pages + the trailing sha256
    assert not target.with_name(target.name + ".part").exists()


# ------------------------------------------------------ keys beyond one page

def test_keys_exact_count_paging_end_in_one_read_long_key_cut_and_shown_whole(hosted, key, monkeypatch):
    from raftui.screens import main as main_screen
    from raftui.screens.view import ViewScreen

    monkeypatch.setattr(main_screen, "KEY_PAGE", 100)      # pages of 100 keys: 251 keys make three
    prefix = f"{key}/many/"
    long_key = prefix + "z" * 3000                        # sorts last
    calls = []

    async def body():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            await _put_direct(screen(app).state.leader.endpoint,
                              [(f"{prefix}{i:04d}".encode(), b"v") for i in range(250)]
                              + [(long_key.encode(), b"")])
            source = app.source
            list_keys = source.list_keys

            async def counted(p="", limit=1000, after=None, before=None, last=False):
                calls.append("last" if last else ("before " + before) if before else after)
                return await list_keys(p, limit, after, before, last)

            source.list_keys = counted
            await pilot.press("slash")
            await fill(pilot, prefix)
            panel = screen(app).query_one(KeysPanel)
            table = screen(app).query_one("#keys-table")
            await until(pilot, lambda: len(key_rows(app)) == 100 and key_rows(app)[0][0] == f"{prefix}0000",
                        what="the first page of the prefix")
            assert panel.listing.count == 251                               # Range's count, exact
            summary = str(panel.query_one("#keys-summary").render())
            assert "251 keys (100 read)" in summary, summary
            await pilot.press("tab", "tab", "tab")                          # to the keys panel
            await until(pilot, lambda: app.focused is table, what="the keys table focused")

            table.move_cursor(row=90)                                       # near the end of the page
            await until(pilot, lambda: len(key_rows(app)) == 200, what="the next page paged in")
            assert [c for c in calls if c not in (None, "last")] == [f"{prefix}0099"]

            calls.clear()
            await pilot.press("end")                                        # the last key, in one read
            await until(pilot, lambda: key_rows(app) and key_rows(app)[-1][0] == long_key
                        and table.cursor_row == table.row_count - 1, what="the last key, highlighted")
            # One descending read took it there: no page after page (the others are the periodic refresh).
            assert "last" in calls and [c for c in calls if c not in ("last", None)] == []
            assert panel.listing.earlier and not panel.listing.more
            cell = cell_text(table, table.cursor_row, 0)
            assert cell.endswith("…(3013 bytes)") and len(cell) < 80         # cut to the panel, not 3000 wide
            assert table.virtual_size.width <= table.size.width

            await pilot.press("v")                                          # the whole key
            # The screen is pushed before its widgets are mounted: wait for the key's widget too.
            view = await until(pilot, lambda: app.screen if isinstance(app.screen, ViewScreen)
                               and app.screen.query("#view-key") else None, what="the key shown whole")
            assert str(view.query_one("#view-key").render()).replace("\n", "") == long_key
            await pilot.press("escape")
            await pilot.press("home")
            await until(pilot, lambda: key_rows(app)[0][0] == f"{prefix}0000" and table.cursor_row == 0,
                        what="back to the first key")
            await _put_direct(screen(app).state.leader.endpoint, [], prefix.encode())
    run(body(), timeout=40)


# ------------------------------------------------------ removing a member

def test_remove_a_member_in_host_mode_stops_its_process_and_forgets_it(raftnode_binary, tmp_path):
    import json

    host = raftnode_host(tmp_path / "cluster", 1)
    try:
        host.start()
        host.wait_listening(30.0)
        pids = {}

        async def body():
            app = _app(host)
            async with app.run_test(size=(160, 48)) as pilot:
                await ready(app, pilot, members=1)
                await pilot.press("a")          # host mode: an empty URL starts a local learner
                await fill(pilot, "")
                await pilot.press("y")          # it starts a process: asked first
                await until(pilot, lambda: row_of(app, "n2") and "up" in row_of(app, "n2")[COL["health"]],
                            timeout=20, what="the new learner n2 up")
                pids["n2"] = host.pid("n2")
                await pilot.press(_number_of(app, "n2"), "X", "y")
                await until(pilot, lambda: row_of(app, "n2") is None, timeout=15, what="n2 gone from the table")
                await until(pilot, lambda: any("dropped it from cluster.json" in t for t in timeline(app)),
                            what="the removal and the stop in the timeline")
                assert len(cluster_rows(app)) == 1 and "up" in row_of(app, "n1")[COL["health"]]

        run(body(), timeout=60)
        assert pids["n2"] and not _alive(pids["n2"])
        assert host.names == ["n1"] and host.state("n2") == "not started"
        saved = json.loads((host.data_dir / "cluster.json").read_text())
        assert [m["name"] for m in saved["members"]] == ["n1"]
        assert not (host.data_dir / "n2.data").exists()          # moved aside: a new n2 starts clean
        assert list(host.data_dir.glob("n2.data.removed-*"))
        assert raftnode_host(host.data_dir, 3).names == ["n1"]    # a resume does not bring it back
    finally:
        stop_by_pid(host)


def test_wal_panel_pages_back_through_the_member_log(hosted, key):
    async def body():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            leader = leader_row(app)[COL["member"]]
            await _put_direct(screen(app).state.leader.endpoint,
                              [(f"{key}/{i:03d}".encode(), b"v") for i in range(260)])
            await pilot.press(_number_of(app, leader), "tab", "tab")       # the WAL panel
            wal = screen(app).query_one(WalPanel)
            lines = screen(app).query_one(WalList)
            await until(pilot, lambda: app.focused is lines and lines.allow_vertical_scroll
                        and len(wal.state.wal) == 200, what="the WAL panel focused with a full live tail")
            assert not wal.older
            await pilot.press("end")                                        # the oldest line in view
            await until(pilot, lambda: wal.older, what="an older page from Inspect.WalTail(before_index)")
            indexes = [e.index for e in lines.items]
            assert indexes == list(range(indexes[0], indexes[0] - len(indexes), -1))   # contiguous, newest first
            assert len(indexes) > 200
            assert any(f'"{key}/000"' in e.text for e in lines.items)        # the first put, below the tail
    run(body(), timeout=40)
