"""Known bugs the simulator must be able to find, put back on request.

A mutation check runs the simulator against a core with one fix removed and
requires a failure (tests/raft/test_mutations.py); a simulator that passes a
known bug proves nothing by passing the real core. Each mutation is named,
so a failure's replay command names it too (`--mutate NAME`).

`no-durable-self-ack` is a Config flag (Config.durable_self_ack=False);
the others patch the core, or the Ready steps the node and the simulator
share (engine/server/ready_steps.py), in this process only, for the
duration of a run.
"""
from __future__ import annotations

import contextlib

from engine.raft import quorum as _quorum
from engine.raft import raft as _raft
from engine.server import ready_steps as _ready_steps

CONFIG_MUTATIONS = ("no-durable-self-ack",)


def _strict_commit_load(self, hs) -> None:
    # Before the fix: a commit index below the snapshot is refused, so a
    # crash between the snapshot marker's fsync and the hard state's leaves
    # a member that cannot start (engine/sim/cluster.py CRASH_AFTER_SNAP).
    if hs.commit < self.log.committed or hs.commit > self.log.last_index():
        raise AssertionError(
            f"{self.id} state.commit {hs.commit} is out of range "
            f"[{self.log.committed}, {self.log.last_index()}]")
    self.log.committed = hs.commit
    self.term = hs.term
    self.vote = hs.vote


# Joint consensus without its point: a joint config decides by the
# majority of C_new alone (commit, votes, ReadIndex, check-quorum), as if
# the change had been made in one step. C_old's members that have not yet
# applied the change can then elect a leader of their own and commit over
# entries C_new committed.
def _new_config_committed_index(incoming, outgoing, match_of) -> int:
    return _quorum.committed_index(incoming, match_of)


def _new_config_vote_result(incoming, outgoing, votes):
    return _quorum.vote_result(incoming, votes)


# The node's and the simulator's shared Ready steps without the fsync of a
# Ready that installs a snapshot (etcd #10219): its hard state, which moves
# the commit index to the snapshot, is written but not synced when nothing
# else in the Ready needs it (MustSync false).
def _no_snapshot_sync(rd) -> bool:
    return rd.must_sync


# The Ready that commits a conf change no longer waits for the apply task to
# apply it before advancing: the core moves its applied index past the change
# (and may take the next change, or leave a joint config it has not entered)
# while its configuration still lags behind, as the node would with the
# wait removed from its shared steps.
_real_plan = _ready_steps.plan


def _no_conf_change_wait(rd, leader):
    return [s for s in _real_plan(rd, leader)
            if not (isinstance(s, _ready_steps.WaitApplied) and s.why == "conf-change")]


_PATCHES = {
    "no-snapshot-sync": [(_ready_steps, "persist_sync", _no_snapshot_sync)],
    "no-conf-change-wait": [(_ready_steps, "plan", _no_conf_change_wait)],
    "strict-commit-load": [(_raft.Raft, "_load_state", _strict_commit_load)],
    "no-joint-quorum": [(_quorum, "joint_committed_index", _new_config_committed_index),
                        (_quorum, "joint_vote_result", _new_config_vote_result)],
}

NAMES = CONFIG_MUTATIONS + tuple(sorted(_PATCHES))


@contextlib.contextmanager
def applied(names):
    """Patch the core with the named mutations while the block runs."""
    saved = []
    try:
        for name in names:
            if name in CONFIG_MUTATIONS:
                continue
            if name not in _PATCHES:
                raise ValueError(f"unknown mutation {name!r} (known: {', '.join(NAMES)})")
            for owner, attr, fn in _PATCHES[name]:
                saved.append((owner, attr, owner.__dict__[attr]))
                setattr(owner, attr, fn)
        yield
    finally:
        for owner, attr, orig in reversed(saved):
            setattr(owner, attr, orig)
