"""Errors the Raft core and its storage report to their callers."""


class RaftError(Exception):
    """Base of every error raised by engine.raft."""


class CompactedError(RaftError):
    """The requested index is older than the storage's first index: it was
    compacted into a snapshot. The leader answers by sending that snapshot."""


class UnavailableError(RaftError):
    """The requested index is past the storage's last index."""


class SnapshotOutOfDateError(RaftError):
    """A snapshot older than the one already held was offered."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """The storage cannot produce a snapshot right now; the leader retries later."""


class ProposalDroppedError(RaftError):
    """A proposal was dropped: no leader is known, this node was removed, a
    leadership transfer is in progress, or the proposal came to a candidate.
    The client may retry."""
