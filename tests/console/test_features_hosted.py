"""Issue 14's in-console features on real raftnode members (host mode), driven
by key presses at 80x24: the link matrix, the revision scrubber, why a txn
failed, watchers with lag.

One hosted 3-member cluster serves the module (conftest's shared_hosted, with
the console's other hosted modules); each test leaves it healthy (healed, a
leader) for the next. Every wait is on what the screen shows, with
a deadline; members are stopped by PID at teardown.
"""
from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from engine.proto import fault_pb2, fault_pb2_grpc
from raftui.screens.confirm import ConfirmScreen
from raftui.screens.links import LinksScreen
from raftui.widgets.link_matrix import LinkMatrix

from .conftest import hosted_cluster, run, until
from .test_hosted import _app
from .ui import COL, cluster_rows, leader_row, ready, row_of, screen

ELECTION_WITHIN = 15.0


@pytest.fixture(scope="module")
def hosted(shared_hosted):
    return shared_hosted        # conftest: one hosted cluster for the console's hosted modules


@pytest.fixture
def key() -> str:
    return f"f{uuid.uuid4().hex[:6]}"


async def _heal_all(endpoints: list[str]) -> None:
    """Every fault undone (a failed test must not leave the module's cluster cut)."""
    for endpoint in endpoints:
        async with grpc.aio.insecure_channel(endpoint) as ch:
            await fault_pb2_grpc.FaultStub(ch).Heal(fault_pb2.HealRequest(), timeout=5)


async def _fault_status(endpoint: str) -> fault_pb2.FaultStatus:
    """A member's fault status read directly (not through the console)."""
    async with grpc.aio.insecure_channel(endpoint) as ch:
        return await fault_pb2_grpc.FaultStub(ch).Status(fault_pb2.FaultStatusRequest(), timeout=5)


async def _paste_fill(pilot, *values: str) -> None:
    """Fill the open form like `fill`, each value pasted (one Paste event, as a
    terminal delivers a paste) instead of typed key by key: long txn texts
    cost seconds typed."""
    from textual import events

    for value in values:
        await pilot.press("ctrl+u")
        pilot.app.focused.post_message(events.Paste(value))
        await pilot.pause()
        await pilot.press("enter")


async def _move_to(pilot, matrix: LinkMatrix, row: int, col: int) -> None:
    """The matrix cursor to (row, col) with arrow keys (col >= 1: the names column is not a link)."""
    for _ in range(8):
        at = matrix.table.cursor_coordinate
        if (at.row, at.column) == (row, col):
            return
        keys = (["down"] * (row - at.row) if row > at.row else ["up"] * (at.row - row))
        keys += (["right"] * (col - at.column) if col > at.column else ["left"] * (at.column - col))
        await pilot.press(*keys)
    raise AssertionError(f"cursor stuck at {matrix.table.cursor_coordinate}, wanted {(row, col)}")


# ------------------------------------------------------------ link matrix

def test_link_matrix_one_way_cut_leader_to_followers_elects_a_new_leader(hosted):
    async def body():
        try:
            await cut_and_see()
        finally:
            await _heal_all(hosted.endpoints)

    async def cut_and_see():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            state = screen(app).state
            old = state.leader
            ids = [m.id for m in state.members]
            followers = [m for m in state.members if m.id != old.id]
            await pilot.press("L")
            links_screen = await until(pilot, lambda: isinstance(app.screen, LinksScreen) and app.screen,
                                       what="the link matrix")
            matrix = links_screen.query_one(LinkMatrix)
            for f in followers:                        # old leader -> each follower, one way
                await _move_to(pilot, matrix, ids.index(old.id), ids.index(f.id) + 1)
                assert matrix.highlighted() == (old.id, f.id)
                await pilot.press("space")
                confirm = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen,
                                      what="the question")
                assert "one way" in confirm.query_one("#confirm-question").render().plain
                await pilot.press("y")
                await until(pilot, lambda: isinstance(app.screen, LinksScreen), what="back to the matrix")

            # Both ends' own fault status show each cut (read from the members, not the console) ...
            await until(pilot, lambda: all(matrix.link(old.id, f.id) and matrix.link(old.id, f.id).cut
                                           for f in followers), what="the cuts in the matrix")
            leader_st = await _fault_status(old.endpoint)
            assert sorted(leader_st.cut_out) == sorted(f.id for f in followers)
            assert not leader_st.cut and not leader_st.cut_in
            for f in followers:
                st = await _fault_status(f.endpoint)
                assert list(st.cut_in) == [old.id] and not st.cut_out and not st.cut
                assert matrix.link(old.id, f.id).by == (f"{old.label} out", f"{f.label} in")
                assert not matrix.link(f.id, old.id).cut           # the other way stays open
                assert matrix.table.get_cell(str(old.id), str(f.id)).plain == "✗ cut"

            # ... and the followers, no longer hearing heartbeats, elect one of themselves.
            # (The leader's id can arrive from a status stream before its row's term: wait for both.)
            new_leader = await until(pilot, lambda: (lambda s: s.leader if s.leader and s.leader.id != old.id
                                                     and s.leader.health == "up" and s.leader.term > old.term
                                                     else None)(screen(app).state),
                                     timeout=ELECTION_WITHIN, what="a new leader among the followers, newer term")
            assert new_leader.id in {f.id for f in followers}
            await until(pilot, lambda: row_of(app, old.label) and "partitioned" in row_of(app, old.label)[COL["health"]],
                        what="the old leader marked partitioned (it reaches no one both ways)")
            reach = links_screen.query_one("#link-reach").render().plain
            assert f"{old.label} reaches " in reach and "←" in reach, reach

            # The member itself refuses a stranger (raftnode tells its Fault service who its peers are).
            async with grpc.aio.insecure_channel(old.endpoint) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await fault_pb2_grpc.FaultStub(ch).Cut(
                        fault_pb2.CutRequest(peers=[0xDEAD], direction=fault_pb2.OUT), timeout=5)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "not a peer of member" in refused.value.details()

            await pilot.press("H")                                   # heal, from the matrix
            await until(pilot, lambda: not any(l.active for l in (matrix.link(a, b) for a in ids for b in ids
                                                                   if a != b) if l),
                        what="every link open again")
            await pilot.press("escape")
            await until(pilot, lambda: all("up" in r[COL["health"]] for r in cluster_rows(app))
                        and leader_row(app), timeout=ELECTION_WITHIN, what="a healthy cluster after heal")
    run(body(), timeout=90)


# ------------------------------------------------------------ revision scrubber

async def _puts(endpoint: str, items: list[tuple[str, str]]) -> list[int]:
    """Set-up writes outside the console, one at a time; their revisions."""
    from engine.proto import rpc_pb2, rpc_pb2_grpc

    out = []
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for key, value in items:
            if value is None:
                resp = await kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=key.encode()), timeout=10)
            else:
                resp = await kv.Put(rpc_pb2.PutRequest(key=key.encode(), value=value.encode()), timeout=10)
            out.append(resp.header.revision)
    return out


async def _compact(endpoint: str, revision: int) -> None:
    from engine.proto import rpc_pb2, rpc_pb2_grpc

    async with grpc.aio.insecure_channel(endpoint) as ch:
        await rpc_pb2_grpc.KVStub(ch).Compact(rpc_pb2.CompactionRequest(revision=revision), timeout=10)


def test_scrubber_steps_through_three_revisions_and_marks_compacted_ones(hosted, key):
    from raftui.screens.form import FormScreen
    from raftui.screens.scrub import ScrubScreen

    from .conftest import fill

    async def body():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            endpoint = screen(app).state.leader.endpoint
            other = f"{key}-other"                         # outside the prefix: revisions between its changes
            revs = await _puts(endpoint, [(f"{key}/a", "one"), (other, "x"), (f"{key}/a", "two"), (other, "y"),
                                          (other, "z"), (f"{key}/b", "bee"), (other, "w"), (f"{key}/a", None),
                                          (other, "v")])
            r1, r2, r3, r4, r5 = revs[0], revs[2], revs[5], revs[7], revs[8]
            await until(pilot, lambda: screen(app).state.revision >= r5, what="the revision known")
            await pilot.press("R")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the form")
            await _paste_fill(pilot, f"{key}/*", str(r3))
            scrub = await until(pilot, lambda: isinstance(app.screen, ScrubScreen) and app.screen,
                                what="the scrubber")

            def shown(revision):
                view = scrub.view
                return view if view is not None and view.revision == revision else None

            def rows():
                table = scrub.query_one("#scrub-keys")
                return [tuple(table.get_row_at(r)[c].plain for c in (0, 1)) for r in range(table.row_count)]

            await until(pilot, lambda: shown(r3), what=f"revision {r3}")
            assert rows() == [(f"{key}/a", "two"), (f"{key}/b", "bee")]
            assert scrub.changes_shown() == [("added", f"{key}/b", "bee", "")]
            await pilot.press("left_square_bracket")              # one revision back: the other key's
            await until(pilot, lambda: shown(r3 - 1), what=f"revision {r3 - 1}")
            assert rows() == [(f"{key}/a", "two")] and scrub.changes_shown() == []
            await pilot.press("left_curly_bracket")               # the previous change of the prefix
            await until(pilot, lambda: shown(r2), what=f"revision {r2}")
            assert rows() == [(f"{key}/a", "two")]
            assert scrub.changes_shown() == [("changed", f"{key}/a", "two", "one")]
            await pilot.press("right_curly_bracket")              # and the next one
            await until(pilot, lambda: shown(r3), what=f"revision {r3} again")
            await pilot.press("left_curly_bracket")
            await until(pilot, lambda: shown(r2), what=f"revision {r2} again")
            await pilot.press("left_curly_bracket")
            await until(pilot, lambda: shown(r1), what=f"revision {r1}")
            assert rows() == [(f"{key}/a", "one")]
            assert scrub.changes_shown() == [("added", f"{key}/a", "one", "")]
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the jump form")
            await fill(pilot, str(r5))
            await until(pilot, lambda: shown(r5), what=f"revision {r5}")
            assert rows() == [(f"{key}/b", "bee")] and scrub.changes_shown() == []
            await pilot.press("left_curly_bracket")               # the delete is a change too
            await until(pilot, lambda: shown(r4), what=f"revision {r4}, the delete")
            assert scrub.changes_shown() == [("deleted", f"{key}/a", "", "two")]

            await pilot.press("escape")                       # compact to r2 from the console: r1 is gone
            await until(pilot, lambda: not isinstance(app.screen, ScrubScreen), what="back to the dashboard")
            await pilot.press("c")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the compact form")
            await fill(pilot, str(r2))
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="compact's question")
            await pilot.press("y")
            await until(pilot, lambda: screen(app).state.compact_revision >= r2, what="the compaction known")
            await pilot.press("R")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the form again")
            await _paste_fill(pilot, f"{key}/*", str(r4))
            scrub = await until(pilot, lambda: isinstance(app.screen, ScrubScreen) and app.screen,
                                what="the scrubber again")
            await until(pilot, lambda: shown(r4), what=f"revision {r4}")
            await pilot.press("g")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the jump form")
            await fill(pilot, str(r1))
            await until(pilot, lambda: shown(r1) and shown(r1).compacted, what=f"revision {r1} compacted")
            status = scrub.query_one("#scrub-status").render().plain
            assert "compacted, its history is gone" in status and rows() == [], status
            assert scrub.query_one("#scrub-status").has_class("-compacted")
            await pilot.press("home")                         # the oldest revision left: no diff to show
            await until(pilot, lambda: shown(r2), what=f"revision {r2} after the compaction")
            assert rows() == [(f"{key}/a", "two")] and shown(r2).diff_compacted
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ScrubScreen), what="back to the dashboard")
    run(body(), timeout=60)


# ------------------------------------------------------------ why a txn failed

def test_txn_view_names_the_failing_compare_and_the_value_it_met(hosted, key):
    from raftui.screens.form import FormScreen
    from raftui.screens.txn import TxnScreen

    async def body():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            endpoint = screen(app).state.leader.endpoint
            (created,) = await _puts(endpoint, [(f"{key}/k", "one")])
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the txn form")
            await _paste_fill(pilot, f'value("{key}/k") = "one"; mod("{key}/k") > "{created}"; '
                                     f'version("{key}/none") = "0"', f"put {key}/k two", f"get {key}/k")
            txn = await until(pilot, lambda: isinstance(app.screen, TxnScreen) and app.screen, what="the txn view")
            rows = txn.rows()
            assert [r[1] for r in rows] == ["✓ held", "✗ FAILED", "✓ held"], rows
            assert rows[1][2] == f'mod("{key}/k") > "{created}"' and rows[1][3] == str(created)
            assert rows[0][3] == '"one"' and rows[2][3] == "no such key (0)"
            summary = txn.query_one("#txn-summary").render().plain
            assert summary.startswith(f"txn failed at revision {created}: compare 2 "), summary
            assert f"(mod was {created} at revision {created})" in summary
            assert txn.query_one("#txn-ran").render().plain == f'get {key}/k: {key}/k = "one"'
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, TxnScreen), what="closed")
            assert any(t.startswith("txn failed at revision") for t in
                       [e.text for e in screen(app).state.timeline])
            # The same txn, its compare now true: the then-branch writes, compares were read before it.
            await pilot.press("x")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the txn form again")
            await _paste_fill(pilot, f'mod("{key}/k") = "{created}"', f"put {key}/k two", "")
            txn = await until(pilot, lambda: isinstance(app.screen, TxnScreen) and app.screen, what="the txn view")
            assert txn.outcome.succeeded and txn.outcome.compared_at == txn.outcome.revision - 1
            assert txn.rows()[0][1] == "✓ held"
            await pilot.press("escape")
    run(body(), timeout=60)


# ------------------------------------------------------------ watchers with lag

@pytest.mark.soak     # ~5 s of writes; the default run checks the same path with stand-ins (test_watchers_lag)
def test_watchers_show_a_slow_watcher_behind_with_events_waiting_and_the_console_own_watch(hosted, key):
    from engine.proto import rpc_pb2, rpc_pb2_grpc
    from raftui.widgets.watchers_panel import WatchersPanel

    from .conftest import fill

    def rows(app):
        table = screen(app).query_one("#watchers-table")
        return [[table.get_row_at(r)[c].plain for c in range(5)] for r in range(table.row_count)]

    async def body():
        app = _app(hosted)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            endpoint = screen(app).state.leader.endpoint
            await pilot.press("W")
            await fill(pilot, f"{key}/live/*")
            panel = screen(app).query_one(WatchersPanel)
            await until(pilot, lambda: screen(app).state.watch and screen(app).state.watch.status == "watching",
                        what="the console's live watch open")
            # A client that opens a watch and never reads: its stream stops taking events.
            slow = grpc.aio.insecure_channel(endpoint, options=[("grpc.http2.bdp_probe", 0)])
            call = rpc_pb2_grpc.WatchStub(slow).Watch()
            try:
                prefix = f"{key}/slow/".encode()
                await call.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
                    key=prefix, range_end=prefix[:-1] + b"0")))
                async with grpc.aio.insecure_channel(endpoint) as ch:
                    kv = rpc_pb2_grpc.KVStub(ch)
                    value = b"x" * 1024
                    for i in range(0, 1300, 50):
                        await asyncio.gather(*(kv.Put(rpc_pb2.PutRequest(key=prefix + b"%04d" % j, value=value),
                                                      timeout=10) for j in range(i, i + 50)))
                    await kv.Put(rpc_pb2.PutRequest(key=f"{key}/live/a".encode(), value=b"1"), timeout=10)
                slow_row = await until(pilot, lambda: next((r for r in rows(app) if r[2] == prefix.decode()
                                                            and int(r[3]) > 0 and int(r[4]) > 0), None),
                                       timeout=20, what="the slow watcher behind, with events waiting")
                assert rows(app)[0] == slow_row                       # the most behind first
                mine = await until(pilot, lambda: next((r for r in rows(app) if r[0].endswith("· console")), None),
                                   what="the console's own watch among the member's watchers")
                assert mine[2] == f"{key}/live/" and mine[3] == "0"
                await until(pilot, lambda: "· 0 behind (at " in panel.query_one("#watch-title").render().plain,
                            what="the live watch's own lag in its title")
                assert "behind or with events waiting" in panel.query_one("#watchers-note").render().plain
            finally:
                call.cancel()
                await slow.close()
    run(body(), timeout=60)


# ------------------------------------------------------------ guided NOSPACE recovery

QUOTA = 16 * 1024 * 1024


def test_guided_nospace_recovery_on_a_16mib_quota_ends_with_writes_accepted_then_a_rolling_defrag(
        raftnode_binary, tmp_path):
    from engine.cli.launch import raftnode_command
    from engine.proto import rpc_pb2, rpc_pb2_grpc
    from raftui.host.process_host import ProcessHost
    from raftui.screens.recovery import RecoveryScreen

    from .conftest import fill

    host = ProcessHost(tmp_path / "cluster", 3, raftnode_command(), fault_injection=True, stop_together=True,
                       extra_args=["--quota-backend-bytes", str(QUOTA)])

    async def body():
        app = _app(host)
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(app, pilot)
            endpoint = screen(app).state.leader.endpoint
            async with grpc.aio.insecure_channel(endpoint) as ch:        # fill one key until NOSPACE
                kv = rpc_pb2_grpc.KVStub(ch)
                value = b"x" * (1024 * 1024)
                for _ in range(40):
                    try:
                        await kv.Put(rpc_pb2.PutRequest(key=b"big", value=value), timeout=10)
                    except grpc.aio.AioRpcError as exc:
                        assert "database space exceeded" in exc.details(), exc.details()
                        break
                else:
                    raise AssertionError("no NOSPACE after 40 MiB of writes")
            await until(pilot, lambda: any("NOSPACE" in m.alarms for m in screen(app).state.members),
                        what="the NOSPACE alarm on screen")
            await pilot.press("w")                                        # the console's own write is refused
            await fill(pilot, "after", "refused", "")
            await until(pilot, lambda: any("database space exceeded" in e.text for e in screen(app).state.timeline),
                        what="the refused write")

            await pilot.press("N")
            confirm = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen,
                                  what="the question")
            question = confirm.query_one("#confirm-question").render().plain
            assert question.startswith("Recover from NOSPACE?") and "(leader)" in question, question
            await pilot.press("y")
            guided = await until(pilot, lambda: isinstance(app.screen, RecoveryScreen) and app.screen,
                                 what="the recovery's progress")
            await until(pilot, lambda: guided.progress.finished, timeout=90, what="every step")
            assert guided.progress.ok, guided.progress.summary
            states = [s for s, _ in guided.shown_steps()]
            titles = [t for _, t in guided.shown_steps()]
            assert states == ["done"] * 7 and "(the leader, last)" in titles[4], guided.shown_steps()
            assert "recovery-check" in guided.progress.steps[-1].detail
            await pilot.press("escape")
            await until(pilot, lambda: not any(m.alarms for m in screen(app).state.members),
                        what="no alarm on screen")
            assert max(m.db_size for m in screen(app).state.members) < QUOTA
            await pilot.press("w")                                        # and the console writes again
            await fill(pilot, "after", "accepted", "")
            await until(pilot, lambda: any(e.text.startswith("put after at revision") for e in
                                           screen(app).state.timeline), what="the write accepted")

            await pilot.press("G")                                        # the rolling defrag, on the same cluster
            confirm = await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen,
                                  what="the rolling defrag's question")
            assert confirm.query_one("#confirm-question").render().plain.startswith("Defragment every member")
            await pilot.press("y")
            rolling = await until(pilot, lambda: isinstance(app.screen, RecoveryScreen) and app.screen,
                                  what="the rolling defrag's progress")
            await until(pilot, lambda: rolling.progress.finished, timeout=60, what="every member defragmented")
            assert rolling.progress.ok and [s for s, _ in rolling.shown_steps()] == ["done"] * 4, \
                rolling.progress.summary
            assert all("caught up" in step.detail or "≥ the leader's commit" in step.detail
                       for step in rolling.progress.steps[1:])
    with hosted_cluster(None, host=host):
        run(body(), timeout=150)
