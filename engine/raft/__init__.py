"""The pure Raft core, after etcd-io/raft: no I/O, no clock, seeded randomness.

Time enters as tick(), messages as step(msg), client intent as propose(),
read_index(), propose_conf_change(), transfer_leader(); what the core wants
done comes out of RawNode as a Ready (entries and hard state to persist,
messages to send, committed entries to apply), acknowledged with advance().
engine/server drives it; docs/ARCHITECTURE.md shows where it sits.
"""
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
