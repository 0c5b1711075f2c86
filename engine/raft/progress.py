"""The leader's view of each follower: how much of the log it holds (match),
what to send next (next), and how fast to send it (probe / replicate /
snapshot state with a bounded window of in-flight appends)."""
from __future__ import annotations

import collections
import enum


class ProgressState(enum.Enum):
    # One append at a time until we learn where the follower's log matches.
    PROBE = "probe"
    # Logs match: stream appends optimistically, up to the inflight window.
    REPLICATE = "replicate"
    # The follower needs entries we compacted: a snapshot is on its way.
    SNAPSHOT = "snapshot"


class Inflights:
    """Last indexes (and payload bytes) of the MsgApps sent and not yet
    acknowledged: flow control. Full at `size` messages or, when max_bytes
    is set, at max_bytes of entry payload in flight (etcd-io/raft
    tracker/inflights.go, MaxInflightBytes): a follower behind a slow link
    then holds at most that much of the leader's memory and bandwidth.

    Invariant: bytes == sum of the sizes queued."""

    __slots__ = ("size", "max_bytes", "bytes", "_q")

    def __init__(self, size: int, max_bytes: int = 0) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        self._q: collections.deque[tuple[int, int]] = collections.deque()

    def add(self, last_index: int, nbytes: int = 0) -> None:
        if self.full():
            raise AssertionError("cannot add into a full inflights")
        self._q.append((last_index, nbytes))
        self.bytes += nbytes

    def free_le(self, to: int) -> None:
        """Release every inflight append whose last index is <= to."""
        q = self._q
        while q and q[0][0] <= to:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.size or (self.max_bytes > 0 and self.bytes >= self.max_bytes)

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    # Invariant: match < next.
    __slots__ = ("match", "next", "state", "pending_snapshot", "recent_active",
                 "probe_sent", "inflights", "is_learner")

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False,
                 max_inflight_bytes: int = 0) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        # Heard from within the last election timeout (check-quorum).
        self.recent_active = False
        # In PROBE: one append is out, wait for its answer or a heartbeat reply.
        self.probe_sent = False
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state.value}, "
                f"inflight={self.inflights.count()}{', learner' if self.is_learner else ''})")

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The snapshot reached the follower (or failed): probe from after it.
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """An append up to n was acknowledged; False if it told us nothing new."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        self.next = max(self.next, n + 1)
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an append at index `rejected`; move next back
        to at most match_hint + 1. False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # an old append, from before we learned match
            # Logs diverged after match: probe again from just after it.
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # not an answer to the probe we are waiting for
        self.next = max(min(rejected, match_hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True
