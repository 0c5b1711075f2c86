"""Simulation mode (raftui/sim): a seed's schedule recorded as frames, and the
console stepping through them. In-process and deterministic: ~1 s."""
from __future__ import annotations

import pytest

from raftui.sim import cli
from raftui.sim.recording import record
from raftui.sim.ui import SimApp

from .conftest import run


def test_a_seed_is_recorded_as_cluster_states_and_replays_the_same() -> None:
    a = record(3, 5, 600)
    assert a.failure is None and a.summary.startswith("passed: 600 steps")
    assert len(a.frames) > 50 and a.frames[0].note.startswith("seed 3: 5 voters")
    assert all(len(f.state.members) >= 5 for f in a.frames)
    led = [f for f in a.frames if f.state.leader_id]
    assert led, "an election in 600 steps"
    leader = led[0].state.leader
    assert leader.role == "leader" and leader.term == led[0].state.term
    assert any(line.kind == "leader" and "leader is now s" in line.text for f in a.frames for line in f.lines)
    end = a.frames[-1]
    assert end.logs and all(x.terms and x.terms[-1][0] == x.last and x.commit <= x.last for x in end.logs)
    b = record(3, 5, 600)
    assert [f.note for f in b.frames] == [f.note for f in a.frames]      # a seed is one schedule
    tl = a.timeline_at(len(a.frames) - 1)
    assert [x.at for x in tl] == sorted((x.at for x in tl), reverse=True)   # newest first
    k = a.next_change(0)
    assert k > 0 and (not a.frames[k].message or a.frames[k].lines)
    assert a.next_change(k, -1) < k


def test_a_failing_schedule_ends_on_the_failure_with_its_replay_command(monkeypatch) -> None:
    """The failure is made here (a read check that fails at its 120th look), so the test
    does not depend on which seeds the Raft work's mutations fail today."""
    from engine.sim import schedule

    calls = {"n": 0}
    real = schedule.Schedule._check_reads

    def failing(self):
        calls["n"] += 1
        if calls["n"] == 120:
            raise AssertionError("read answered below a committed index (made by the test)")
        return real(self)

    monkeypatch.setattr(schedule.Schedule, "_check_reads", failing)
    rec = record(7, 3, 1000)
    assert rec.failure and "made by the test" in rec.failure
    assert rec.replay.startswith("python -m engine.sim --seed 7 --nodes 3")
    last = rec.frames[-1]
    assert last.note.startswith("FAILED:") and last.lines[0].kind == "error"


def test_bad_arguments_exit_2(capsys) -> None:
    assert cli.main(["--nodes", "0"]) == 2
    assert cli.main(["--steps", "999999"]) == 2
    assert cli.main(["--mutate", "no-such-bug"]) == 2
    assert "unknown mutation" in capsys.readouterr().err
    assert cli.main(["--seed", "1", "--steps", "200", "--print"]) == 0
    assert "passed: 200 steps" in capsys.readouterr().out


def test_the_console_steps_through_the_schedule_with_keys() -> None:
    rec = record(3, 5, 600)

    async def body():
        app = SimApp(rec)
        async with app.run_test(size=(120, 36)) as pilot:
            seen = []
            await pilot.press("right", "right")
            seen.append(app.k)
            await pilot.press("left")
            seen.append(app.k)
            await pilot.press("n")
            seen.append(app.k)
            await pilot.press("end")
            seen.append(app.k)
            status = str(app.query_one("#sim-status").render())
            logs = str(app.query_one("#sim-logs").render())
            cluster = app.query_one("#sim-cluster").state
            await pilot.press("home")
            seen.append(app.k)
            await pilot.press("space")
            await pilot.pause(0.3)
            playing = app.playing and app.k > 0
            await pilot.press("space")
            return seen, status, cluster, playing, logs

    seen, status, cluster, playing, logs = run(body())
    assert logs.startswith("index") and f"commit {rec.frames[-1].logs[0].commit}" in logs
    assert seen[:2] == [2, 1] and seen[2] == rec.next_change(1) and seen[3] == len(rec.frames) - 1
    assert seen[4] == 0 and playing
    assert f"event {len(rec.frames)}/{len(rec.frames)}" in status and "passed" in status
    assert cluster is rec.frames[-1].state


def _election_story():
    """A hand-made recording (engine/sim changes under the Raft work; a picture must not): s1 led
    term 2 and took an entry it could not commit, was cut off, and s3 won term 3."""
    from raftui.sim.recording import Frame, NodeLog, Recording
    from raftui.source.model import ClusterState, Member, TimelineLine

    def state(roles, terms, health=("up", "up", "up"), leader=0):
        members = tuple(Member(name=f"s{i}", id=i, endpoint=f"sim:{i}", role=r, health=h, term=t,
                               commit_index=6, applied_index=6, last_index=7 if i == 1 else 6 + (r == "leader"),
                               leader_id=leader)
                        for i, (r, t, h) in enumerate(zip(roles, terms, health), 1))
        return ClusterState(members=members, leader_id=leader, term=max(terms))

    logs_before = (NodeLog(1, 7, 6, tuple((i, 1 if i < 5 else 2) for i in range(1, 8))),
                   NodeLog(2, 6, 6, tuple((i, 1 if i < 5 else 2) for i in range(1, 7))),
                   NodeLog(3, 6, 6, tuple((i, 1 if i < 5 else 2) for i in range(1, 7))))
    logs_after = logs_before[:2] + (NodeLog(3, 7, 6, tuple((i, 1 if i < 5 else 2 if i < 7 else 3)
                                                              for i in range(1, 8))),)
    cut = ("partitioned", "up", "up")
    frames = [
        Frame(0, 40, "propose 1", False, state(("leader", "follower", "follower"), (2, 2, 2), leader=1),
              (TimelineLine(4.0, "action", "propose 1"),), logs_before),
        Frame(1, 41, "partition [1] | [2, 3]", False,
              state(("leader", "follower", "follower"), (2, 2, 2), cut, leader=1),
              (TimelineLine(4.1, "partition", "partition [1] | [2, 3]"),), logs_before),
        Frame(2, 52, "3->2 MsgPreVote Term:3 Log:2/6", True,
              state(("leader", "follower", "candidate"), (2, 2, 2), cut), (), logs_before),
        Frame(3, 53, "3->2 MsgVote Term:3 Log:2/6", True,
              state(("leader", "follower", "candidate"), (2, 2, 3), cut), (), logs_before),
        Frame(4, 53, "2->3 MsgVoteResp Term:3", True,
              state(("leader", "follower", "leader"), (2, 3, 3), cut, leader=3),
              (TimelineLine(5.3, "leader", "leader is now s3 (term 3)"),), logs_after),
        Frame(5, 54, "3->2 MsgApp Term:3 Log:2/6 Commit:6 Entries:[3/7]", True,
              state(("leader", "follower", "leader"), (2, 3, 3), cut, leader=3), (), logs_after),
    ]
    return Recording(8, 3, 600, frames, summary="(a hand-made story for the picture)", profile="partitions")


def test_sim_screen_snapshot(snap_compare, fixed_clock_and_tz) -> None:
    """README's picture: a deposed leader's uncommitted entry beside the new leader's (Figure 8's
    starting point), on a hand-made recording."""
    rec = _election_story()

    async def show(pilot):
        pilot.app.k = 5
        pilot.app.show()
        await pilot.pause()

    assert snap_compare(SimApp(rec), terminal_size=(120, 36), run_before=show)


def test_a_profile_can_be_chosen_and_a_bad_one_is_refused(capsys) -> None:
    assert record(4, 3, 200, profile="storm").profile == "storm"
    assert record(4, 3, 200).profile                      # drawn from the seed, and shown
    assert cli.main(["--profile", "nosuch", "--print"]) == 2
    assert "unknown profile" in capsys.readouterr().err
