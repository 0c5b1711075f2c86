"""Auto-compaction (etcd's --auto-compaction-mode/--auto-compaction-retention).

Decided on the leader only and carried out by proposing a CompactionRequest
through the log, so every member compacts at the same revision. Time is
passed in, so the policy is tested without a clock.

periodic, retention P: sample the revision every P/10; every min(P, 1 h)
    compact to the newest sample taken at least P ago (keep P of history).
revision, retention R: every 5 minutes compact to current - R, if that is
    ahead of the last compaction.
"""
from __future__ import annotations

import collections

REVISION_MODE_INTERVAL = 300.0


class Compactor:
    def __init__(self, period_seconds: float = 0.0, revisions: int = 0) -> None:
        self.period = period_seconds
        self.revisions = revisions
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._next_sample = 0.0
        self._next_compact = 0.0
        self._last_target = 0

    @property
    def enabled(self) -> bool:
        return self.period > 0 or self.revisions > 0

    def reset(self) -> None:
        """Leadership changed: start observing afresh (as etcd's compactor
        resumes only on the leader)."""
        self._samples.clear()
        self._next_sample = self._next_compact = 0.0

    def due(self, now: float, revision: int, compact_revision: int) -> int | None:
        """The revision to compact to now, or None."""
        if self.period > 0:
            return self._periodic(now, revision, compact_revision)
        if self.revisions > 0:
            return self._by_revision(now, revision, compact_revision)
        return None

    def _periodic(self, now: float, revision: int, compact_revision: int) -> int | None:
        if not self._next_compact:
            self._next_compact = now + min(self.period, 3600.0)
        if now >= self._next_sample:
            self._samples.append((now, revision))
            self._next_sample = now + self.period / 10
        if now < self._next_compact:
            return None
        self._next_compact = now + min(self.period, 3600.0)
        target = None
        while self._samples and now - self._samples[0][0] >= self.period:
            target = self._samples.popleft()[1]
        if target is None or target <= max(compact_revision, self._last_target):
            return None
        self._last_target = target
        return target

    def _by_revision(self, now: float, revision: int, compact_revision: int) -> int | None:
        if not self._next_compact:
            self._next_compact = now + REVISION_MODE_INTERVAL
            return None
        if now < self._next_compact:
            return None
        self._next_compact = now + REVISION_MODE_INTERVAL
        target = revision - self.revisions
        if target <= max(compact_revision, self._last_target, 0):
            return None
        self._last_target = target
        return target
