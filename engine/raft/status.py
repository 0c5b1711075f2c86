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
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    lead_transferee: int
    is_learner: bool
    progress: dict[int, PeerStatus]  # filled on the leader only
