"""A simulated network: every message sent is held here until the scheduler
decides to deliver, drop or duplicate it. Picking a random in-flight message
to deliver models arbitrary delay and reordering.

Links can also fail one way only (a -> b cut, b -> a fine: a NIC or firewall
rule, the case where a node hears its leader but cannot answer it), and be
slow: a message on a link with a delay of k ticks is held back until the
cluster's clock (SimCluster.tick_all) has advanced k ticks, so a leader's
heartbeats can arrive after a follower's election timeout."""
from __future__ import annotations

import random

from engine.proto import raft_pb2 as pb


class SimNetwork:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # Deliverable now (the scheduler picks among these).
        self.inflight: list[pb.Message] = []
        # Held back by a slow link: (due tick, send order, message).
        self.delayed: list[tuple[int, int, pb.Message]] = []
        self.now = 0  # the network's clock, in ticks
        self._seq = 0
        # Directed pairs (a, b): a's messages to b are lost.
        self._cut: set[tuple[int, int]] = set()
        # Directed pairs (a, b) -> ticks every message a -> b is held back.
        self._delay: dict[tuple[int, int], int] = {}
        # Paused (stopped) processes: what arrives for them waits here, in
        # their socket buffers, until they run again.
        self.held: dict[int, list[pb.Message]] = {}
        self.sent = self.delivered = self.dropped = 0
        self.sent_by_type: dict[int, int] = {}

    def send(self, m: pb.Message) -> None:
        self.sent += 1
        self.sent_by_type[m.type] = self.sent_by_type.get(m.type, 0) + 1
        # Cuts are applied at delivery, so a lost snapshot is reported to
        # its sender like a real transport would.
        d = self._delay.get((m.from_, m.to), 0)
        if d:
            self._seq += 1
            self.delayed.append((self.now + d, self._seq, m))
        else:
            self._arrive(m)

    def _arrive(self, m: pb.Message) -> None:
        held = self.held.get(m.to)
        if held is not None:
            held.append(m)
        else:
            self.inflight.append(m)

    def pause(self, nid: int) -> None:
        """nid's process is stopped: hold what is sent to it."""
        if nid in self.held:
            return
        self.held[nid] = [m for m in self.inflight if m.to == nid]
        self.inflight = [m for m in self.inflight if m.to != nid]

    def resume(self, nid: int) -> None:
        self.inflight.extend(self.held.pop(nid, []))

    def tick(self) -> None:
        """One tick passes: slow-link messages that are due become deliverable."""
        self.now += 1
        if not self.delayed:
            return
        due = sorted(x for x in self.delayed if x[0] <= self.now)
        if due:
            self.delayed = [x for x in self.delayed if x[0] > self.now]
            for _, _, m in due:
                self._arrive(m)

    def cut_one_way(self, a: int, b: int) -> None:
        """a's messages to b are lost; b's to a still arrive."""
        self._cut.add((a, b))

    def slow(self, a: int, b: int, ticks: int) -> None:
        """Every message a -> b takes `ticks` ticks (on top of any reordering)."""
        self._delay[(a, b)] = ticks

    def drop_to(self, nid: int) -> list[pb.Message]:
        """Remove every message on its way to nid (it crashed); returns them."""
        lost = [m for m in self.inflight if m.to == nid]
        lost += [m for _, _, m in self.delayed if m.to == nid]
        lost += self.held.pop(nid, [])
        self.inflight = [m for m in self.inflight if m.to != nid]
        self.delayed = [x for x in self.delayed if x[2].to != nid]
        return lost

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
        """Every link works again, at full speed (held messages still come
        when due)."""
        self._cut.clear()
        self._delay.clear()

    def partitioned(self) -> bool:
        return bool(self._cut) or bool(self._delay)

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
