"""What an idle member costs: CPU and context switches per second, raftnode
vs real etcd, a fresh 3-member cluster of each in turn (bench/cluster.py).

    python bench/bench_idle.py [SECONDS] [--raftnode-only]

Each cluster is started, left alone for 3 s (elections, first heartbeats,
the members' start-up work), then measured for SECONDS (default 10):
utime + stime of each member from /proc (bench/procstat.py) and its
voluntary + involuntary context switches over all its threads. A member
nobody talks to still ticks, heartbeats and probes its peers; this is that
floor, paid by every cluster on the machine all day.
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import start_cluster  # noqa: E402
from bench.procstat import context_switches, cpu_seconds  # noqa: E402

SETTLE_SECONDS = 3.0


def measure(kind: str, seconds: float) -> list[tuple[float, float]]:
    """(CPU ms/s, context switches/s) per member of an idle `kind` cluster."""
    with tempfile.TemporaryDirectory() as d:
        c = start_cluster(kind, d)
        try:
            pids = [p.pid for p in c.procs]
            time.sleep(SETTLE_SECONDS)  # let start-up work finish: not what we measure
            cpu0 = [cpu_seconds(p) for p in pids]
            cs0 = [context_switches(p) for p in pids]
            t0 = time.monotonic()
            time.sleep(seconds)   # the measurement is of doing nothing
            el = time.monotonic() - t0
            return [((cpu_seconds(p) - c0) / el * 1000, (context_switches(p) - s0) / el)
                    for p, c0, s0 in zip(pids, cpu0, cs0)]
        finally:
            c.stop()


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    seconds = float(args[0]) if args else 10.0
    kinds = ("raftnode",) if "--raftnode-only" in sys.argv else ("etcd", "raftnode")
    print(f"{'system':10} {'CPU ms/s per member':>28} {'context switches/s':>28}")
    for kind in kinds:
        rows = measure(kind, seconds)
        cpu = " / ".join(f"{r[0]:.1f}" for r in rows)
        cs = " / ".join(f"{r[1]:.0f}" for r in rows)
        print(f"{kind:10} {cpu:>28} {cs:>28}", flush=True)


if __name__ == "__main__":
    main()
