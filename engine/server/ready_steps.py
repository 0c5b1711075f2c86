"""The order in which a member handles one Ready, as data: what to send,
persist, hand to the applier and wait for, in which order, and whether a
write must be fsynced. Pure (no I/O, no asyncio): the node's Ready loop
(engine/server/ready_loop.py) runs these steps with its WAL, transport and
apply task; the simulator (engine/sim/cluster.py) runs the very same steps
with a simulated disk, network and apply queue, and can crash between any
two of them. A change of order made here is a change the simulator checks.

For one Ready, in order (`plan`):

  Send          a leader's messages, before it persists (thesis §10.2.1,
                etcd's raft.go): its appends travel while its own fsync
                runs. Safe because nothing it sends promises its own
                durability: its self-acknowledgements are stepped back in
                only by advance() (engine/raft/rawnode.py). Never with a
                snapshot to install (a leader does not install one).
  WaitApplied   before a snapshot is installed: everything committed before
                it is applied first (the store is then replaced by it).
  InstallSnapshot  the leader's snapshot: store, snap file, WAL marker.
  Persist       new entries and the hard state, one write; fsynced unless
                only the commit index moved (raft's MustSync) -- and always
                fsynced in a Ready that installs a snapshot (etcd #10219):
                its hard state holds the commit index the snapshot moved.
  Send          anyone else's messages (votes, append acknowledgements):
                only once what they promise is durable.
  Apply         the committed entries, handed to the apply task, which
                applies them in order later, concurrently with the next
                Readies (etcd's apply goroutine).
  WaitApplied   when those hold a conf change: it is applied before the
                next Ready, so votes, quorums and peers follow the new
                configuration (etcd waits likewise).
  AnswerReads   the ReadIndex answers of this Ready.
  Advance       RawNode.advance(rd): only now does the core count its own
                durable vote and entries, and take the next Ready.

The host takes note of the soft state (leader, role) before the steps.
"""
from __future__ import annotations

import dataclasses

from engine.proto import raft_pb2 as pb
from engine.raft import Ready
from engine.raft.confchange import is_conf_change
from engine.raft.read_only import ReadState


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    messages: list[pb.Message]
    early: bool            # a leader's, before it persists


@dataclasses.dataclass(frozen=True, slots=True)
class WaitApplied:
    """Wait until the apply task has applied everything handed to it."""
    why: str               # "snapshot" | "conf-change"


@dataclasses.dataclass(frozen=True, slots=True)
class InstallSnapshot:
    snapshot: pb.Snapshot


@dataclasses.dataclass(frozen=True, slots=True)
class Persist:
    hard_state: pb.HardState | None
    entries: list[pb.Entry]
    sync: bool             # False: written, not fsynced (only the commit moved)


@dataclasses.dataclass(frozen=True, slots=True)
class Apply:
    entries: list[pb.Entry]


@dataclasses.dataclass(frozen=True, slots=True)
class AnswerReads:
    read_states: list[ReadState]


@dataclasses.dataclass(frozen=True, slots=True)
class Advance:
    pass


Step = Send | WaitApplied | InstallSnapshot | Persist | Apply | AnswerReads | Advance

_ADVANCE = Advance()


def sends_early(rd: Ready, leader: bool) -> bool:
    """A leader sends before it persists, unless the Ready installs a
    snapshot (then it is not acting as a leader of that log)."""
    return leader and rd.snapshot is None


def persist_sync(rd: Ready) -> bool:
    """Whether the Ready's write must be fsynced before anything after it:
    new entries or a changed term or vote (MustSync), or a snapshot being
    installed (etcd #10219). A commit-only hard state may be lost in a
    crash and relearned from the leader."""
    return rd.must_sync or rd.snapshot is not None


def plan(rd: Ready, leader: bool) -> list[Step]:
    """The steps of one Ready, in the order they must happen. `leader`: the
    member is the leader as it takes the Ready."""
    steps: list[Step] = []
    early = sends_early(rd, leader)
    if early and rd.messages:
        steps.append(Send(rd.messages, early=True))
    if rd.snapshot is not None:
        steps.append(WaitApplied("snapshot"))
        steps.append(InstallSnapshot(rd.snapshot))
    if rd.entries or rd.hard_state is not None:
        steps.append(Persist(rd.hard_state, rd.entries, persist_sync(rd)))
    if not early and rd.messages:
        steps.append(Send(rd.messages, early=False))
    if rd.committed_entries:
        steps.append(Apply(rd.committed_entries))
        if any(is_conf_change(e) for e in rd.committed_entries):
            steps.append(WaitApplied("conf-change"))
    if rd.read_states:
        steps.append(AnswerReads(rd.read_states))
    steps.append(_ADVANCE)
    return steps
