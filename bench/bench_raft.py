"""How fast does the Raft core alone commit entries? Three cores in one
process, FIFO delivery, no disk, no network, 1 KiB entries, proposals batched
B at a time. The host loop is the node's (engine/server/node.py): a leader
sends, then "persists" (appends to its MemoryStorage), then applies, then
advance(); the others persist before they send.

    python bench/bench_raft.py [--seconds 3] [--batch 1,16,64,256] [--voters 3] [--repeat 3]

Prints entries per CPU-second (time.process_time: the machine is shared, and
wall time would measure the neighbours), the best of --repeat runs,
committed and applied on all members. This is an upper
bound the real node can never beat; if the node is far below it, the core is
not the bottleneck. The loop uses only RawNode's public API, so the same
script measures an older core too (PYTHONPATH=<old tree>), which is how the
cost of a core change is shown (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import random
import time

from engine.proto import raft_pb2 as pb
from engine.raft import Config, MemoryStorage, RawNode, StateType


class Member:
    def __init__(self, nid: int, ids: list[int]) -> None:
        self.storage = MemoryStorage()
        self.rn = RawNode(Config(id=nid, storage=self.storage, rng=random.Random(nid)))
        self.rn.bootstrap([(i, b"") for i in ids])
        self.applied = 0


def handle(m: Member, outbox: list) -> None:
    """The node's _handle_ready, minus the disk."""
    rn = m.rn
    while rn.has_ready():
        rd = rn.ready()
        early = rn.raft.state is StateType.LEADER and rd.snapshot is None
        if early:
            outbox.extend(rd.messages)
        if rd.snapshot is not None:
            m.storage.apply_snapshot(rd.snapshot)
        m.storage.append(rd.entries)
        if rd.hard_state is not None:
            m.storage.set_hard_state(rd.hard_state)
        if not early:
            outbox.extend(rd.messages)
        for e in rd.committed_entries:
            if e.type == pb.EntryConfChange:
                cc = pb.ConfChange()
                cc.ParseFromString(e.data)
                rn.apply_conf_change(cc)
        if rd.committed_entries:
            m.applied = rd.committed_entries[-1].index
        rn.advance(rd)


def run(batch: int, seconds: float, voters: int = 3, size: int = 1024) -> float:
    ids = list(range(1, voters + 1))
    ms = {i: Member(i, ids) for i in ids}
    net: list = []

    def pump() -> None:
        for m in ms.values():
            handle(m, net)
        while net:
            msg = net.pop(0)
            ms[msg.to].rn.step(msg)
            handle(ms[msg.to], net)

    pump()  # apply the bootstrap conf changes: no campaign before that
    lead = ms[1]
    lead.rn.campaign()
    pump()
    assert lead.rn.raft.state is StateType.LEADER
    payload = b"x" * size
    start = min(m.applied for m in ms.values())
    t0 = time.process_time()
    deadline = t0 + seconds
    while time.process_time() < deadline:
        for _ in range(10):
            lead.rn.propose_many([payload] * batch)
            pump()
        for m in ms.values():  # keep the in-memory logs bounded, like a real node
            s = m.storage
            if m.applied - s.first_index() > 20_000:
                s.create_snapshot(m.applied, m.rn.raft.conf_state(), b"")
                s.compact(m.applied - 1000)
    elapsed = time.process_time() - t0
    done = min(m.applied for m in ms.values()) - start
    return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", default="1,16,64,256")
    ap.add_argument("--voters", default="3", help="cluster sizes, e.g. 1,3")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    a = ap.parse_args()
    for v in (int(x) for x in a.voters.split(",")):
        print(f"Raft core alone: {v} member(s) in one process, 1 KiB entries")
        print(f"{'batch':>6} {'entries/s':>12} {'MiB/s':>8}")
        for b in (int(x) for x in a.batch.split(",")):
            eps = max(run(b, a.seconds, v) for _ in range(a.repeat))
            print(f"{b:>6} {eps:>12,.0f} {eps / 1024:>8.1f}")


if __name__ == "__main__":
    main()
