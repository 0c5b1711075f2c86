"""Server CPU per request, per member, raftnode vs real etcd, same client.

    python bench/bench_cpu_per_request.py [OPS] [--profile] [--raftnode-only]

A fresh 3-member cluster of each system in turn (bench/cluster.py); OPS puts
of 256 bytes, then OPS serializable single-key ranges, 64 in flight over the
three endpoints (bench_vs_etcd's grpc.aio client). For each member, utime +
stime from /proc before and after, divided by OPS: microseconds of server
CPU per request ("leader", the others, and the total over the three). With
--profile, raftnode only, and py-spy (a measuring tool, not a dependency:
`pip install py-spy`) records each member during the puts into
/tmp/raftui-profile/<put|range-s>-<member>.txt (raw format: one stack and
its count a line). --raftnode-only skips etcd (for A/B runs of raftnode builds).
"""
import asyncio
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_vs_etcd as b  # noqa: E402
from bench.cluster import start_cluster  # noqa: E402
from bench.procstat import cpu_seconds as cpu  # noqa: E402  (the same count as bench_vs_etcd's)

PROFILE_DIR = pathlib.Path("/tmp/raftui-profile")

# e.g. RAFTUI_PYSPY="--gil": sample only the thread holding the GIL (CPU in Python, not waits)
PYSPY_EXTRA = os.environ.get("RAFTUI_PYSPY", "").split()

def measure(kind, ops, profile):
    with tempfile.TemporaryDirectory() as d:
        c = start_cluster(kind, d)
        try:
            pids = [p.pid for p in c.procs]
            leader = c.leader_endpoint()
            li = c.endpoints.index(leader)
            asyncio.run(b.bench_put(c.endpoints, 64, 500, b"v" * 256))  # warm-up
            out = {}
            for name, work in (("put", lambda: b.bench_put(c.endpoints, 64, ops, b"v" * 256)),
                               ("range-s", lambda: b.bench_range(c.endpoints, 64, ops, 100, True))):
                spies = []
                if profile and kind == "raftnode":
                    PROFILE_DIR.mkdir(exist_ok=True)
                    for i, pid in enumerate(pids):
                        o = str(PROFILE_DIR / f"{name}-{'leader' if i == li else 'follower%d' % i}.txt")
                        spies.append(subprocess.Popen(["py-spy", "record", "-p", str(pid), "-o", o, "--format", "raw", "-r", "200", "-d", "60", "--nonblocking", *PYSPY_EXTRA],
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                    time.sleep(1)  # py-spy attaches
                before = [cpu(p) for p in pids]
                t0 = time.time()
                asyncio.run(work())
                el = time.time() - t0
                after = [cpu(p) for p in pids]
                for s in spies:
                    s.send_signal(2)
                for s in spies:
                    s.wait(30)
                per = [(a - bb) / ops * 1e6 for a, bb in zip(after, before)]
                out[name] = dict(rate=ops / el, leader_us=per[li], others_us=[round(x) for i, x in enumerate(per) if i != li], total_us=sum(per))
            return out
        finally:
            c.stop()

def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    ops = int(args[0]) if args else 5000
    profile = "--profile" in sys.argv
    only = "--raftnode-only" in sys.argv
    for kind in (("raftnode",) if profile or only else ("etcd", "raftnode")):
        print(kind, measure(kind, ops, profile), flush=True)


if __name__ == "__main__":
    main()
