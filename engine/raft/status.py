"""Read-only status of a Raft node, for the console and the Inspect service."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PeerStatus:
    """The leader's view of one member."""
    match: int
    next: int
    state: str          # probe / replicate / snapshot
    inflight: int
    recent_active: bool
    is_learner: bool


@dataclasses.dataclass(frozen=True)
class Status:
    id: int
    state: str          # follower / pre-candidate / candidate / leader
    term: int
    vote: int
    lead: int
    commit: int
    applied: int
    last_index: int
    first_index: int
    snapshot_index: int
    # The configuration as etcd's ConfState: `voters` is C_new (the only
    # set outside a joint config), `voters_outgoing` C_old while joint.
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    lead_transferee: int
    is_learner: bool
    progress: dict[int, PeerStatus]  # filled on the leader only
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()  # demoted voters of C_old, learners after the leave
    auto_leave: bool = False

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)
