"""A simulated network: every message sent is held here until the scheduler
decides to deliver, drop or duplicate it. Picking a random in-flight message
to deliver models arbitrary delay and reordering."""
from __future__ import annotations

import random

from engine.proto import raft_pb2 as pb


class SimNetwork:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.inflight: list[pb.Message] = []
        # Pairs (a, b) that cannot talk, in both directions.
        self._cut: set[tuple[int, int]] = set()
        self.sent = self.delivered = self.dropped = 0
        self.sent_by_type: dict[int, int] = {}

    def send(self, m: pb.Message) -> None:
        self.sent += 1
        self.sent_by_type[m.type] = self.sent_by_type.get(m.type, 0) + 1
        # Cuts are applied at delivery, so a lost snapshot is reported to
        # its sender like a real transport would.
        self.inflight.append(m)

    def is_cut(self, a: int, b: int) -> bool:
        return (a, b) in self._cut

    def partition(self, groups: list[set[int]]) -> None:
        """Only nodes of the same group can talk."""
        self._cut.clear()
        for i, g in enumerate(groups):
            for h in groups[i + 1 :]:
                for a in g:
                    for b in h:
                        self._cut.add((a, b))
                        self._cut.add((b, a))

    def isolate(self, node: int, others) -> None:
        for o in others:
            if o != node:
                self._cut.add((node, o))
                self._cut.add((o, node))

    def heal(self) -> None:
        self._cut.clear()

    def partitioned(self) -> bool:
        return bool(self._cut)

    def take(self, i: int | None = None) -> pb.Message | None:
        """Remove and return a message (a random one by default)."""
        if not self.inflight:
            return None
        if i is None:
            i = self.rng.randrange(len(self.inflight))
        q = self.inflight
        q[i], q[-1] = q[-1], q[i]
        return q.pop()

    def take_first(self) -> pb.Message | None:
        return self.inflight.pop(0) if self.inflight else None
