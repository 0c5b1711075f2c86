"""The live linearizability check (raftui/lincheck): the workload, the checks in
windows, the saved history and its replay.

The proof the issue asks for: on a healthy hosted raftnode cluster the live
check says linearizable; against a test double that answers a stale read it
flags the violation and shows a small counterexample. The double is an
in-process gRPC KV server (a dict), so that half costs no member processes.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal

import grpc
import pytest

from engine.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
from raftui.lincheck import checker, history, replay
from raftui.lincheck.live import LiveSession, check_events
from raftui.lincheck.workload import Config, Workload

from .conftest import run

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


class FakeKV(rpc_pb2_grpc.KVServicer):
    """A one-process register store. stale=True: every read answers the value
    before the latest write (what a member that serves reads without
    ReadIndex, behind the leader, would do)."""

    def __init__(self, stale: bool = False) -> None:
        self.values: dict[bytes, list[bytes]] = {}
        self.stale = stale

    def _get(self, key: bytes) -> bytes | None:
        vs = self.values.get(key, [])
        if self.stale and len(vs) >= 2:
            return vs[-2]
        return vs[-1] if vs else None

    def _kvs(self, key: bytes):
        v = self._get(key)
        return [] if v is None else [kv_pb2.KeyValue(key=key, value=v)]

    async def Range(self, request, context):
        return rpc_pb2.RangeResponse(kvs=self._kvs(request.key), count=1)

    async def Put(self, request, context):
        self.values.setdefault(request.key, []).append(request.value)
        return rpc_pb2.PutResponse()

    async def Txn(self, request, context):
        cmp = request.compare[0]
        vs = self.values.get(cmp.key, [])
        ok = bool(vs) and vs[-1] == cmp.value
        if ok:
            put = request.success[0].request_put
            self.values[put.key].append(put.value)
            return rpc_pb2.TxnResponse(succeeded=True)
        rr = rpc_pb2.RangeResponse(kvs=[] if not vs else [kv_pb2.KeyValue(key=cmp.key, value=vs[-1])])
        return rpc_pb2.TxnResponse(succeeded=False, responses=[rpc_pb2.ResponseOp(response_range=rr)])


async def _serve(kv: FakeKV) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(kv, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _until(cond, timeout: float, what: str):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def test_the_checker_moved_and_tests_still_import_it() -> None:
    from tests.support import linearizability as lin

    assert lin.check is checker.check and lin.Op is checker.Op and lin._prune is checker._prune


def test_live_check_flags_a_stale_read_and_the_replay_agrees(tmp_path) -> None:
    async def body():
        server, endpoint = await _serve(FakeKV(stale=True))
        try:
            session = LiveSession([endpoint], Config(clients=3, keys=1, rate=0, deadline=1.0, seed=7),
                                  save_dir=str(tmp_path), every=0.3, in_process=True)
            task = asyncio.create_task(session.run())
            await _until(lambda: task.done(), 20.0, "the live check to stop on a violation")
            return await task
        finally:
            await server.stop(None)

    status = run(body())
    v = status.verdict
    assert v is not None and v.valid is False, v
    assert 2 <= len(v.counterexample) <= 6, v.report     # minimised: a write and the stale read
    assert any("read" in line.text for line in v.counterexample)
    assert "NOT LINEARIZABLE" in v.report
    assert status.saved and os.path.exists(status.saved)
    meta, events = history.load(status.saved)
    assert meta["format"] == history.FORMAT and meta["clients"] == 3 and events
    assert replay.main([status.saved]) == 1


def test_live_check_passes_a_correct_store_and_counts(tmp_path, capsys) -> None:
    async def body():
        server, endpoint = await _serve(FakeKV())
        try:
            session = LiveSession([endpoint], Config(clients=4, keys=2, rate=400, seed=3),
                                  save_dir=str(tmp_path), every=0.2, in_process=True)
            task = asyncio.create_task(session.run())
            await _until(lambda: session.status().stats.ops >= 300 and session.status().verdict is not None,
                         20.0, "300 ops and a verdict")
            session.stop()
            return await task
        finally:
            await server.stop(None)

    status = run(body())
    assert status.verdict.valid is True and status.verdict.ops >= 300
    assert status.stats.ok >= 300 and status.stats.fail == status.stats.info == 0
    assert replay.main([status.saved]) == 0
    assert "linearizable ✓" in capsys.readouterr().out


def test_unreachable_member_reads_fail_and_writes_stay_open() -> None:
    """Nothing listens: reads are `fail`, writes `fail` too (never sent), and the check still holds."""
    async def body():
        wl = Workload(["127.0.0.1:9"], Config(clients=1, keys=1, rate=0, deadline=0.3, seed=1))
        task = asyncio.create_task(wl.run())
        await _until(lambda: wl.stats().ops >= 4, 20.0, "four failed ops")
        wl.stop()
        await task
        return wl

    wl = run(body())
    s = wl.stats()
    assert s.ok == 0 and s.fail + s.info == s.ops and s.errors
    assert check_events(wl.events).valid is True


@pytest.mark.parametrize("text, why", [
    ("not json\n", "not JSON"),
    ('{"type": "meta", "format": "other"}\n', "format"),
    ('{"id": 1, "type": "invoke"}\n', "needs id"),
    ('[1, 2]\n', "JSON object"),
])
def test_bad_history_files_exit_2(tmp_path, capsys, text, why) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text(text)
    assert replay.main([str(p)]) == 2
    assert why in capsys.readouterr().err


def test_history_whose_events_do_not_pair_exits_2(tmp_path, capsys) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text(json.dumps({"id": 1, "type": "ok", "f": "read", "key": "k", "time": 1}) + "\n")
    assert replay.main([str(p)]) == 2
    assert "completed before it was invoked" in capsys.readouterr().err


def test_bad_workload_configs_are_refused() -> None:
    for cfg in (Config(clients=0), Config(keys=99), Config(rate=-1), Config(deadline=0), Config(read=0, write=0, cas=0)):
        with pytest.raises(ValueError):
            Workload(["127.0.0.1:1"], cfg)


# ------------------------------------------------------------------ the console's panel


def _panel_app(status):
    """A bare app with the console's theme variables, showing one LincheckPanel."""
    import themes
    from textual.app import App

    from raftui.lincheck.ui import LincheckPanel

    class PanelApp(App):
        def get_theme_variable_defaults(self):
            return dict(themes.VARIABLE_DEFAULTS)

        def compose(self):
            yield LincheckPanel(id="lincheck")

        def on_mount(self):
            self.query_one(LincheckPanel).status = status

    return PanelApp()


def _static_text(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


def test_the_panel_draws_the_counterexample_as_a_timeline(tmp_path) -> None:
    async def body():
        server, endpoint = await _serve(FakeKV(stale=True))
        try:
            session = LiveSession([endpoint], Config(clients=2, keys=1, rate=0, seed=11),
                                  save_dir=str(tmp_path), every=0.2, in_process=True)
            status = await asyncio.wait_for(session.run(), 20)
        finally:
            await server.stop(None)
        app = _panel_app(status)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            return (_static_text(app, "#lincheck-verdict"), _static_text(app, "#lincheck-timeline"),
                    _static_text(app, "#lincheck-saved"), status)

    verdict, timeline, saved, status = run(body())
    assert "NOT linearizable ✗" in verdict and status.verdict.key in verdict
    rows = timeline.splitlines()
    assert len(rows) == len(status.verdict.counterexample) >= 2
    assert all("|" in r and r.endswith(" ms") for r in rows) and any("read ->" in r for r in rows)
    assert "raftui lincheck" in saved


def test_the_live_check_says_linearizable_on_a_healthy_hosted_cluster(shared_hosted, tmp_path) -> None:
    """The proof on real members: the console's own screen, the checker in its own process.
    The members: conftest's hosted cluster, shared with the console's other hosted modules
    (CI time); the live check's keys are its own."""
    from raftui.lincheck.ui import LincheckPanel, LincheckScreen, session_of

    from .conftest import until
    from .ui import make_app

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved or "") if p)
    host = shared_hosted

    async def body():
        app = make_app(host.endpoints, host=host)
        async with app.run_test(size=(150, 40)) as pilot:
            screen = LincheckScreen.open(app, app.source, Config(clients=4, keys=2, rate=120),
                                         save_dir=str(tmp_path / "histories"))
            assert not isinstance(screen, str), screen
            app.push_screen(screen)
            session = session_of(app)
            await until(pilot, lambda: session.status().stats.ok >= 150, 30.0, "150 ops answered")
            await pilot.press("s")
            await until(pilot, lambda: session.status().saved, 30.0, "the final check and the saved history")
            await pilot.pause(0.6)          # the panel's next look at the status
            return session.status(), _static_text(app, "#lincheck-verdict")

    try:
        status, verdict = run(body(), timeout=90)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    assert status.verdict.valid is True and status.stats.ok >= 150 and not status.error
    assert f"linearizable ✓ ({status.verdict.ops:,} ops)" in verdict
    assert replay.main([status.saved]) == 0


class _FixedSession:
    """What the screen reads from a run (status()), fixed: a snapshot needs no workload."""

    def __init__(self, status) -> None:
        self._status = status
        self.workload = type("W", (), {"stats": lambda _self: status.stats})()

    def status(self):
        return self._status


def test_lincheck_screen_snapshot(snap_compare, fixed_clock_and_tz, monkeypatch) -> None:
    """README's picture: a violation's counterexample as the panel draws it (fixed data)."""
    from raftui.app import RaftuiApp
    from raftui.lincheck import ui
    from raftui.lincheck.live import LiveStatus, OpLine, Verdict
    from raftui.lincheck.workload import Stats

    from .fake_state import STATE, FakeSource

    cex = (OpLine("p2", 0.0, 1.2, "#5 p2 @m1 write 'c2-2'"), OpLine("p1", 0.4, 1.4, "#6 p1 @m1 write 'c1-2'"),
           OpLine("p1", 1.4, 1.9, "#9 p1 @m1 read -> 'c2-2'"), OpLine("p0", 1.4, 2.5, "#10 p0 @m1 read -> 'c1-2'"))
    status = LiveStatus(Stats(395, 380, 9, 6, 41.5, (("DEADLINE_EXCEEDED: Deadline Exceeded", 15),), False, False),
                        Verdict(False, 395, 0.04, "lincheck/33fcddf9/k0", cex, ""), 0.0, True,
                        "/home/op/.local/share/raftui/lincheck/lincheck-33fcddf9.jsonl")

    async def show(pilot):
        monkeypatch.setitem(ui._SESSIONS, pilot.app, _FixedSession(status))
        pilot.app.push_screen(ui.LincheckScreen(pilot.app.source))
        await pilot.pause(0.3)
        await pilot.pause()

    app = RaftuiApp(lambda: FakeSource(STATE), theme="dark", mode_label="hosting 3 members", live=False)
    assert snap_compare(app, terminal_size=(120, 32), run_before=show)


# ------------------------------------------------------------------ windows from cuts (incremental.py)


def _register_history(rng, key: str, procs: int = 4, per_proc: int = 10, p_info: float = 0.15,
                      t0: float = 0.0) -> list[dict]:
    """A true atomic register's history as the workload records it: every op takes effect at
    one instant in its interval (ok), or anywhere after its invocation or never (info)."""
    ops = []
    written: list[str] = []
    for p in range(procs):
        t = t0 + rng.random() * 3
        for n in range(per_proc):
            start = t + rng.random()
            end = start + rng.random() * 3
            f = rng.choice(["read", "read", "write", "cas"])
            status = "ok"
            if f != "read" and rng.random() < p_info:
                status = "info"
                point = None if rng.random() < 0.4 else start + rng.random() * 8
            else:
                point = start + rng.random() * (end - start)
            value = None
            if f == "write":
                value = f"{key}-{p}-{n}"
                written.append(value)
            elif f == "cas":
                new = f"{key}-{p}-{n}"
                old = rng.choice(written) if written else None
                value = [old, new]
                written.append(new)
            ops.append(dict(id=f"{key}{p}.{n}", p=p, f=f, value=value, start=start, end=end, point=point,
                            status=status))
            t = end + rng.random() * 0.5
    state = None
    for o in sorted((o for o in ops if o["point"] is not None), key=lambda o: o["point"]):
        if o["f"] == "read":
            o["got"] = state
        elif o["f"] == "write":
            state = o["value"]
        else:
            o["swapped"] = state == o["value"][0]
            if o["swapped"]:
                state = o["value"][1]
            else:
                o["current"] = state
    events = []
    for o in ops:
        base = dict(id=o["id"], process=o["p"], f=o["f"], key=key)
        events.append(dict(base, type="invoke", value=o["value"], time=o["start"]))
        done = dict(base, type=o["status"], value=o.get("got") if o["f"] == "read" else o["value"], time=o["end"])
        if o["f"] == "cas" and o["status"] == "ok":
            done["swapped"] = o["swapped"]
            if not o["swapped"]:
                done["current"] = o["current"]
        events.append(done)
    return events


def _windowed(events: list[dict], every: int) -> bool | None:
    """What the live session's windows conclude, window after window over the growing history."""
    from raftui.lincheck.incremental import Incremental
    from raftui.lincheck.live import check_segments

    inc = Incremental()
    verdict = None
    for n in list(range(every, len(events), every)) + [len(events)]:
        v, cuts = check_segments(inc.segments(events[:n]))
        if v.valid is False:
            return False
        verdict = v.valid
        for key, cut in cuts:
            inc.advance(key, cut)
    return verdict


def test_windows_from_cuts_agree_with_checking_the_whole_history() -> None:
    """Random register histories (two keys, indeterminate ops that took effect late or never,
    ops still running at each window), half of them with one read's answer changed: the
    windowed verdict equals the whole check's every time, and cuts are really made."""
    import random

    rng = random.Random(20261206)
    cuts_made = violations = 0
    for round_ in range(250):
        events = sorted(_register_history(rng, "a") + _register_history(rng, "b", procs=3),
                        key=lambda e: e["time"])
        if round_ % 2:
            reads = [e for e in events if e["f"] == "read" and e["type"] == "ok"]
            victim = rng.choice(reads)
            victim["value"] = rng.choice([None, "a-0-0", "b-1-1", victim["value"]])
        whole = check_events(events).valid
        assert whole is not None
        violations += whole is False
        windowed = _windowed(events, every=rng.choice((3, 7, 15)))
        assert windowed == whole, (round_, whole, windowed)
        from raftui.lincheck.incremental import Incremental
        from raftui.lincheck.live import check_segments

        inc = Incremental()
        for n in range(10, len(events), 10):
            v, cuts = check_segments(inc.segments(events[:n]))
            for key, cut in cuts:
                inc.advance(key, cut)
        cuts_made += sum(c.cuts for c in inc.cursors.values())
    assert violations > 40 and cuts_made > 100, (violations, cuts_made)
