"""Thousands of random schedules through the simulator (engine/sim): every
safety property checked after every step, liveness after the storm.
Half the crashes strike inside a Ready (engine/sim/cluster.py CRASH_*) and
lose what was not yet fsynced; a leader sends before it persists, as the node.

A failure prints its seed and the one command that replays it. A long soak:
    python -m pytest tests/raft/test_random_schedules.py -m soak
or  python -m engine.sim --soak 20000 --nodes 3,5,7
"""
from __future__ import annotations

import multiprocessing
import os

import pytest

from engine.sim.schedule import ScheduleConfig, ScheduleFailure, run_schedule

SIZES = (3, 5, 7)
# One and two voters, with and without learners: (voters, learners).
SMALL = ((1, 0), (1, 1), (2, 0), (2, 1), (1, 2), (4, 0))


def _config(seed: int, steps: int, small: bool) -> ScheduleConfig:
    if small:
        nodes, learners = SMALL[seed % len(SMALL)]
        return ScheduleConfig(nodes=nodes, learners=learners, steps=steps)
    return ScheduleConfig(nodes=SIZES[seed % 3], steps=steps)


def _run_range(args: tuple[int, int, int, bool]) -> tuple[int, str | None, dict]:
    first, count, steps, small = args
    totals = {"committed": 0, "snapshots_sent": 0, "conf_changes": 0, "leaders": 0, "reads": 0,
              "crashes_in_ready": 0, "joint_entered": 0}
    for seed in range(first, first + count):
        try:
            res = run_schedule(seed, _config(seed, steps, small))
        except ScheduleFailure as f:
            return seed, str(f), totals
        for k in totals:
            totals[k] += getattr(res, k)
    return count, None, totals


def run_many(first: int, count: int, steps: int, small: bool = False) -> dict:
    procs = max(1, min(os.cpu_count() or 1, 4))
    chunk = max(1, count // (procs * 8))
    jobs = [(s, min(chunk, first + count - s), steps, small)
            for s in range(first, first + count, chunk)]
    ctx = multiprocessing.get_context("fork")
    totals: dict = {}
    ran = 0
    with ctx.Pool(procs) as pool:
        for n, failure, t in pool.imap_unordered(_run_range, jobs):
            if failure:
                pool.terminate()
                pytest.fail(failure, pytrace=False)
            ran += n
            for k, v in t.items():
                totals[k] = totals.get(k, 0) + v
    totals["schedules"] = ran
    return totals


def test_random_schedules_3_5_7_nodes():
    totals = run_many(first=0, count=3000, steps=500)
    assert totals["schedules"] == 3000
    # The storm must actually exercise what it claims to.
    assert totals["snapshots_sent"] > 50, totals
    assert totals["conf_changes"] > 300, totals
    assert totals["leaders"] > 3000, totals
    assert totals["reads"] > 1000, totals
    assert totals["crashes_in_ready"] > 1000, totals
    # Membership also grows and shrinks through joint configs.
    assert totals["joint_entered"] > 300, totals


def test_random_schedules_1_2_4_voters_with_learners():
    # The sizes where a leader's own durability decides everything: one
    # voter (with learners that apply what it says is committed), two, four.
    totals = run_many(first=50_000, count=1200, steps=500, small=True)
    assert totals["schedules"] == 1200
    assert totals["snapshots_sent"] > 20, totals
    assert totals["conf_changes"] > 100, totals
    assert totals["leaders"] > 1200, totals
    assert totals["crashes_in_ready"] > 500, totals
    assert totals["joint_entered"] > 100, totals


@pytest.mark.soak
@pytest.mark.timeout(0)  # a soak runs as long as it is asked to
def test_random_schedules_soak():
    run_many(first=100_000, count=int(os.environ.get("RAFTUI_SOAK", "20000")), steps=2000)
