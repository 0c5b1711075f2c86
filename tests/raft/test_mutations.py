"""Mutation checks: put a known bug back into the core and require the
simulator to find it, within the CI budget. A simulator that cannot find the
bug that bit etcd would pass whatever we do.

Each failure found is printed with its seed and the one command that replays
it; the test also replays it in-process to show it is deterministic.
"""
from __future__ import annotations

import time

import pytest

from engine.sim.schedule import ScheduleConfig, ScheduleFailure, run_schedule

BUDGET_S = 25.0        # wall clock per search, on a loaded 2-core CI machine
MAX_SEEDS = 5000


def _search(cfg: ScheduleConfig, first: int = 0, control: ScheduleConfig | None = None) -> ScheduleFailure:
    """The first seed from `first` on that fails under `cfg` (and, given a
    control, passes under it: a failure that is the mutation's own)."""
    t0 = time.monotonic()
    seed = first
    while seed < first + MAX_SEEDS and time.monotonic() - t0 < BUDGET_S:
        try:
            run_schedule(seed, cfg)
        except ScheduleFailure as f:
            if control is not None:
                try:
                    run_schedule(seed, control)
                except ScheduleFailure:
                    seed += 1
                    continue   # fails without the mutation too: not its doing
            print(f"mutation found by seed {seed} after {seed - first + 1} schedules "
                  f"({time.monotonic() - t0:.1f}s): {f.cause}\n  replay: {f.replay}")
            # Deterministic: the same seed fails the same way again.
            with pytest.raises(ScheduleFailure) as again:
                run_schedule(seed, cfg)
            assert str(again.value.cause) == str(f.cause) and again.value.step == f.step
            return f
        seed += 1
    pytest.fail(f"mutation survived {seed - first} schedules ({time.monotonic() - t0:.1f}s): "
                f"the simulator cannot see this bug", pytrace=False)


# The bug: a leader that counts its own vote and entries before they
# are durable, while its host sends before its fsync. One voter + one learner:
# the learner is told an entry is committed that a crash then erases.
MUTANT = ScheduleConfig(nodes=1, learners=1, steps=500, durable_self_ack=False)


def test_no_durable_self_ack_is_caught_by_the_commit_durability_check():
    f = _search(MUTANT)
    assert "commit quorum" in str(f.cause)


def test_no_durable_self_ack_shows_as_divergence_without_the_direct_check():
    # The same bug, caught only by what a user would see: a committed entry
    # replaced, logs that disagree, or replicas applying different entries.
    f = _search(ScheduleConfig(nodes=1, learners=1, steps=500, durable_self_ack=False,
                               check_commit_durability=False))
    assert any(k in str(f.cause) for k in (
        "leader completeness", "log matching", "state machine safety", "conflicts with committed"
    )), f.cause
    assert "--mutate no-durable-self-ack" in f.replay and "--no-durability-check" in f.replay


def test_with_the_deferral_the_same_schedules_pass():
    # The control: the seeds that find the mutant (and more) pass unmutated.
    for seed in range(300):
        run_schedule(seed, ScheduleConfig(nodes=1, learners=1, steps=500))


# A crash between the snapshot marker's fsync and the hard state's (the
# install of a leader's snapshot) once left a member that cannot start: its
# commit index was below the snapshot. The core now takes the snapshot's
# index; with the old strict load back, the simulator must find that member.
def test_strict_commit_load_leaves_a_member_that_cannot_restart():
    f = _search(ScheduleConfig(nodes=1, learners=1, steps=500, mutations=("strict-commit-load",)))
    assert "cannot start from its disk" in str(f.cause)
    assert "--mutate strict-commit-load" in f.replay


# The fsync of a Ready that installs a snapshot (etcd #10219), removed from
# the Ready steps the node and the simulator share (engine/server/ready_steps.py):
# that Ready's hard state -- the commit index the snapshot moved -- is then
# written without fsync when nothing else in it needs one, and a crash before
# the next fsync loses it, leaving the snapshot's marker (fsynced by itself)
# with an older commit index. Under etcd-io/raft's load rule (a commit index
# below the snapshot is refused: the strict-commit-load mutation) that is a
# member that cannot restart; the seed found must pass with the sync in
# place, so the failure is the missing sync's.
NO_SNAP_SYNC = ScheduleConfig(nodes=1, learners=1, steps=500,
                              mutations=("no-snapshot-sync", "strict-commit-load"))


def test_no_snapshot_install_sync_leaves_a_member_that_cannot_restart():
    import dataclasses
    f = _search(NO_SNAP_SYNC, control=dataclasses.replace(NO_SNAP_SYNC, mutations=("strict-commit-load",)))
    assert "cannot start from its disk" in str(f.cause)
    assert "--mutate no-snapshot-sync" in f.replay and "--mutate strict-commit-load" in f.replay


def test_no_snapshot_install_sync_alone_is_harmless_with_the_tolerant_load():
    # Our core loads commit = max(hard state's, snapshot's index): what the
    # lost hard state held (commit = the snapshot's index; a term or vote
    # change, or entries, make the Ready MustSync anyway) is restored from
    # the marker. No schedule can tell the mutant from the real steps; this
    # pins it, so that a change making the sync matter again is noticed.
    for seed in range(150):
        run_schedule(seed, ScheduleConfig(nodes=1, learners=1, steps=500, mutations=("no-snapshot-sync",)))


# The apply task lags behind the Ready loop (applied after the core advanced,
# engine/server/applying.py); only the Ready's wait keeps a conf change from
# being overtaken. Without it, the simulator -- which applies from a queue
# it drains at random points, as the node's apply task does -- must find a
# committed change some member cannot apply, or worse.
def test_no_conf_change_wait_is_caught():
    f = _search(ScheduleConfig(nodes=3, steps=500, profile="joint", mutations=("no-conf-change-wait",),
                               check_commit_durability=False))
    assert "cannot apply" in str(f.cause), f.cause
    assert "--mutate no-conf-change-wait" in f.replay


# Joint consensus reduced to its new config: C_new's majority alone commits
# and elects while C_old's members that have not applied the change still
# decide by C_old. The 'joint' profile makes membership change through
# joint configs and splits the network right when the leader applies one
# (itself and a majority of C_new | the rest of C_old).
JOINT = ScheduleConfig(nodes=3, steps=500, profile="joint", mutations=("no-joint-quorum",))


def test_new_config_quorum_alone_is_caught_by_the_quorum_checks():
    f = _search(JOINT)
    assert any(k in str(f.cause) for k in ("commit quorum", "election quorum")), f.cause


def test_new_config_quorum_alone_shows_as_two_leaders_or_a_lost_commit():
    import dataclasses
    f = _search(dataclasses.replace(JOINT, check_commit_durability=False))
    assert any(k in str(f.cause) for k in (
        "election safety", "leader completeness", "log matching", "state machine safety",
    )), f.cause
    assert "--mutate no-joint-quorum" in f.replay and "--profile joint" in f.replay


def test_with_joint_quorum_the_same_schedules_pass():
    for seed in range(100):
        run_schedule(seed, ScheduleConfig(nodes=3, steps=500, profile="joint"))
