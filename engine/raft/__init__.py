"""The pure Raft core: no I/O, no clock, seeded randomness (see DESIGN.md)."""
from engine.raft.confchange import ConfChangeError
from engine.raft.errors import (
    CompactedError,
    ProposalDroppedError,
    RaftError,
    SnapshotOutOfDateError,
    UnavailableError,
)
from engine.raft.raft import NONE, Config, Raft, StateType
from engine.raft.rawnode import RawNode, Ready, SoftState
from engine.raft.read_only import ReadState
from engine.raft.status import PeerStatus, Status
from engine.raft.storage import MemoryStorage

__all__ = [
    "NONE", "Config", "Raft", "StateType", "RawNode", "Ready", "SoftState", "ReadState",
    "Status", "PeerStatus", "MemoryStorage", "RaftError", "CompactedError",
    "UnavailableError", "SnapshotOutOfDateError", "ProposalDroppedError", "ConfChangeError",
]
