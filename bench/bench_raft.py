"""How fast does the Raft core alone commit entries? Three cores in one
process (engine/sim, FIFO delivery, no disk, no network), 1 KiB entries,
proposals batched B at a time; the leader's Ready loop is the host's.

    python bench/bench_raft.py [--seconds 3] [--batch 1,16,64,256]

Prints entries/s committed and applied on all three members. This is an
upper bound the real node can never beat; if the node is far below it,
the core is not the bottleneck.
"""
from __future__ import annotations

import argparse
import time

from engine.sim.checker import SafetyChecker
from engine.sim.cluster import SimCluster


class NoChecks(SafetyChecker):
    """The benchmark measures the core, not the simulator's checks."""

    def on_commit(self, *a): pass
    def on_leader_commit(self, *a): pass
    def on_apply(self, *a): pass
    def on_restore(self, *a): pass
    def on_elected(self, *a): pass


def run(batch: int, seconds: float, size: int = 1024) -> float:
    c = SimCluster([1, 2, 3], seed=1, checker=NoChecks())
    lead = c.nodes[1]
    lead.rn.campaign()
    c.process(lead)
    c.deliver_all()
    payload = b"x" * size
    start_applied = min(n.sm.applied for n in c.live())
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(10):
            lead.rn.propose_many([payload] * batch)
            c.process(lead)
            c.deliver_all()
        for n in c.live():  # keep the in-memory logs bounded, like a real node
            if n.sm.applied - n.storage.first_index() > 20_000:
                c.compact(n.id, keep=1000)
    elapsed = time.perf_counter() - t0
    done = min(n.sm.applied for n in c.live()) - start_applied
    return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", default="1,16,64,256")
    a = ap.parse_args()
    print("Raft core alone: 3 members in one process, 1 KiB entries")
    print(f"{'batch':>6} {'entries/s':>12} {'MiB/s':>8}")
    for b in (int(x) for x in a.batch.split(",")):
        eps = run(b, a.seconds)
        print(f"{b:>6} {eps:>12,.0f} {eps / 1024:>8.1f}")


if __name__ == "__main__":
    main()
