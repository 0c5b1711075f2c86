"""The cluster summary line: quorum stated plainly, alarms by member name with
their meaning, leader changes, db size against the quota, loop lag."""
from __future__ import annotations

import dataclasses

from raftui.app import RaftuiApp
from raftui.host import raftnode_host
from raftui.source.model import ClusterState, Member, TimelineLine
from raftui.source.summary import fit, summary

from .conftest import run, until
from .fake_state import STATE, T0, FakeSource
from .ui import COL, make_app, ready, row_of, screen


def _text(state: ClusterState, now: float = T0 + 40) -> str:
    return " · ".join(p.text for p in summary(state, now))


def _voters(n_up: int, n: int) -> ClusterState:
    members = tuple(Member(f"n{i}", i, f"h:{i}", role="follower", health="up" if i <= n_up else "killed",
                           term=3, leader_id=0) for i in range(1, n + 1))
    return ClusterState(members=members, term=3)


def test_quorum_is_counted_over_voters_only():
    assert _text(_voters(3, 5)).startswith("3/5 voters up ✓ quorum")
    no = _text(_voters(2, 5))
    assert no.startswith("2/5 voters up ✗ no quorum (needs 3): writes will fail") and "no leader" in no
    learner = dataclasses.replace(_voters(2, 3).members[2], is_learner=True)
    assert _text(ClusterState(members=(*_voters(2, 3).members[:2], learner))).startswith("2/2 voters up ✓")


def test_alarms_by_member_name_with_their_meaning_and_leader_changes():
    members = tuple(dataclasses.replace(m, alarms=("NOSPACE",)) if m.name == "n2" else m for m in STATE.members)
    elections = tuple(TimelineLine(T0 - age, "leader", f"leader is now n1 (term {t})", key=(1, t))
                      for t, age in ((5, 700), (6, 300), (7, 10)))
    state = dataclasses.replace(STATE, members=members, timeline=elections + STATE.timeline)
    text = _text(state, now=T0)
    assert "NOSPACE on n2: cluster is read-only" in text
    assert "2 leader changes in 10 min" in text                 # the one 700 s ago is older than 10 min
    assert "loop lag 140 ms (n2)" in text and "db 2.5 MB of 2.1 GB" in text
    kept = " · ".join(p.text for p in fit(summary(state, T0), 80))
    assert len(kept) <= 80 and kept.startswith("2/3 voters up ✓ quorum") and "NOSPACE on n2" in kept


def test_summary_line_shows_at_80x24_and_server_names_stay_text():
    members = tuple(dataclasses.replace(m, alarms=("NOSPACE",), name="[red]n2") if m.name == "n2" else m
                    for m in STATE.members)
    state = dataclasses.replace(STATE, members=members)

    async def body():
        app = RaftuiApp(lambda: FakeSource(state), live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            bar = screen(app).query_one("#summary-bar")
            assert bar.region.height == 1 and bar.region.y < 3           # under the title, always there
            assert bar.plain.startswith("2/3 voters up ✓ quorum")
            assert "NOSPACE on [red]n2: cluster is read-only" in bar.plain
            assert "NOSPACE on [red]n2" in str(bar.render())        # drawn as text, not markup
    run(body())


def test_three_of_five_killed_says_no_quorum(raftnode_binary, tmp_path):
    host = raftnode_host(tmp_path / "cluster", 5)
    try:
        host.start()
        host.wait_listening(30.0)

        async def body():
            app = make_app(host.endpoints, host=host)
            async with app.run_test(size=(120, 36)) as pilot:
                await ready(app, pilot, members=5, timeout=30)
                bar = screen(app).query_one("#summary-bar")
                assert bar.plain.startswith("5/5 voters up ✓ quorum")
                for number in "345":
                    await pilot.press(number, "k", "y")
                await until(pilot, lambda: all("killed" in row_of(app, n)[COL["health"]] for n in ("n3", "n4", "n5")),
                            what="three members killed")
                await until(pilot, lambda: bar.plain.startswith("2/5 voters up ✗ no quorum (needs 3): writes will fail"),
                            what="no quorum stated")
        run(body(), timeout=60)
    finally:
        host.stop_all()


def test_a_joint_configuration_is_shown_and_needs_both_majorities():
    from engine.proto import inspect_pb2
    from raftui.source.model import RaftConfig
    from raftui.source.poll import inspect_result

    resp = inspect_pb2.RaftStatusResponse(voters=[1, 2, 4], voters_outgoing=[1, 2, 3], learners_next=[3],
                                          auto_leave=True)
    cfg = inspect_result("h:1", resp).config
    assert cfg == RaftConfig((1, 2, 4), (1, 2, 3), (3,), True) and cfg.joint
    assert not inspect_result("h:1", inspect_pb2.RaftStatusResponse(voters=[1, 2, 3])).config.joint

    def state(*up: int) -> ClusterState:
        members = tuple(Member(f"n{i}", i, f"h:{i}", role="leader" if i == 1 else "follower",
                               health="up" if i in up else "killed", term=4, leader_id=1,
                               config=cfg if i == 1 else None) for i in range(1, 5))
        return ClusterState(members=members, leader_id=1, term=4)

    text = _text(state(1, 2))
    assert "joint config: voters (n1 n2 n4) && (n1 n2 n3) learners_next (n3) autoleave" in text
    assert text.startswith("2/4 voters up ✓ quorum")               # 2 of 3 in C_new and 2 of 3 in C_old
    assert "✗ no quorum (needs a majority of C_old and of C_new)" in _text(state(1, 4))   # C_old: n1 only
