"""Run or replay simulated schedules.

    python -m engine.sim --seed 42 --nodes 5 -v      replay one seed, printing every message
    python -m engine.sim --soak 20000 --nodes 3,5,7  many seeds (a long local soak)
    python -m engine.sim --soak 500 --nodes 1 --learners 1 --mutate no-durable-self-ack
                                                     look for the bug a mutation puts back
    python -m engine.sim --soak 500 --nodes 3 --profile joint --mutate no-joint-quorum
                                                     joint configs decided by C_new alone
    python -m engine.sim --soak 500 --nodes 1 --learners 1 --mutate no-snapshot-sync \
        --mutate strict-commit-load                  a snapshot's Ready unsynced, under
                                                     etcd-io/raft's strict load of the commit
"""
from __future__ import annotations

import argparse
import sys
import time

from engine.sim import mutations
from engine.sim.schedule import ScheduleConfig, ScheduleFailure, run_schedule


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.sim")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--soak", type=int, default=1, help="how many consecutive seeds to run")
    ap.add_argument("--nodes", default="3", help="cluster sizes to cycle through, e.g. 3,5,7")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--learners", type=int, default=0, help="founding learners")
    ap.add_argument("--profile", default="", help="weather profile (default: drawn from the seed)")
    ap.add_argument("--mutate", choices=mutations.NAMES, action="append", default=[],
                    help="put back a known bug (the simulator must find it)")
    ap.add_argument("--no-durability-check", action="store_true",
                    help="catch bugs only by their visible consequences (diverging logs or states)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every message and event")
    a = ap.parse_args(argv)
    sizes = [int(x) for x in a.nodes.split(",")]
    t0 = time.monotonic()
    total = 0
    for k in range(a.soak):
        seed = a.seed + k
        n = sizes[k % len(sizes)]
        try:
            cfg = ScheduleConfig(nodes=n, learners=a.learners, steps=a.steps, profile=a.profile,
                                 durable_self_ack="no-durable-self-ack" not in a.mutate,
                                 mutations=tuple(m for m in a.mutate
                                                 if m not in mutations.CONFIG_MUTATIONS),
                                 check_commit_durability=not a.no_durability_check)
            res = run_schedule(seed, cfg, verbose=print if a.verbose else None)
        except ScheduleFailure as f:
            print(f, file=sys.stderr)
            return 1
        total += 1
        if a.soak == 1 or a.verbose:
            print(res)
    print(f"{total} schedules passed in {time.monotonic() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
