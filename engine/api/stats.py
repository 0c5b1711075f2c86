"""Request counters the servicers bump, and their rates for Inspect.Rates.

Counting is a dict increment on the request path; rates are computed only
when asked, against the oldest sample kept from the last WINDOW seconds.
"""
from __future__ import annotations

import collections
import time

WINDOW = 10.0


class Counters:
    def __init__(self) -> None:
        self.totals: collections.Counter[str] = collections.Counter()
        self._samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque()
        self._started = time.monotonic()

    def bump(self, name: str, n: int = 1) -> None:
        self.totals[name] += n

    def rates(self, totals: dict[str, int]) -> tuple[float, dict[str, float]]:
        """(window seconds, per-second rate by name) for the given totals
        (the caller merges ours with the node's), sampling now."""
        now = time.monotonic()
        samples = self._samples
        while len(samples) > 1 and now - samples[1][0] >= WINDOW:
            samples.popleft()
        if samples and now - samples[0][0] >= 0.5:
            then, old = samples[0]
        else:
            then, old = self._started, {}
        samples.append((now, dict(totals)))
        window = max(now - then, 1e-3)
        return window, {k: max(0, v - old.get(k, 0)) / window for k, v in totals.items()}
