"""`etcdctl check perf` against fresh 3-member raftnode clusters, N runs, with
the servers' CPU per put: the A/B tool behind issue 11's check perf figures.

    python bench/check_perf_runs.py m 3                          # this checkout
    CHECKOUT=/tmp/perf/old python bench/check_perf_runs.py m 1   # another build (e.g. a git worktree)
    KIND=etcd python bench/check_perf_runs.py m 1                # the real etcd

Per run: the check's four verdict lines, the members' utime+stime over the
run divided by (writes/s x 60), etcdctl's own CPU and the load average.
Alternate builds run by run (old, new, old, new): the machine's noise is
larger than most single changes.
"""
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

root = os.environ.get("CHECKOUT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, root)

from bench.cluster import etcdctl_binary, start_cluster  # noqa: E402
from bench.procstat import cpu_seconds  # noqa: E402
from engine.cli import launch  # noqa: E402


def main() -> None:
    load = sys.argv[1] if len(sys.argv) > 1 else "m"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    kind = os.environ.get("KIND", "raftnode")
    for i in range(runs):
        with tempfile.TemporaryDirectory() as d:
            c = start_cluster(kind, d)
            try:
                pids = [p.pid for p in c.procs]
                before = [cpu_seconds(p) for p in pids]
                t0, ru0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run([etcdctl_binary(), f"--endpoints={','.join(c.endpoints)}", "check", "perf",
                                    f"--load={load}"], capture_output=True, text=True,
                                   env=launch.clean_env({"ETCDCTL_API": "3"}))
                elapsed, ru1 = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
                after = [cpu_seconds(p) for p in pids]
                out = r.stdout + r.stderr
                # The first verdict can share a line with the progress bar: split on PASS/FAIL too.
                verdicts = re.findall(r"((?:PASS|FAIL)(?:: [^\r\n]*?)?)(?=PASS|FAIL|[\r\n]|$)", out)
                m = re.search(r"(\d+) writes/s", out)
                puts = int(m.group(1)) * 60 if m else 0
                cpu = sum(a - b for a, b in zip(after, before))
                ctl = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
                print(f"[{kind} {os.path.basename(root.rstrip('/'))}] check perf {load} run {i}: "
                      f"{' / '.join(v.strip() for v in verdicts[-4:])} | server CPU {cpu:.1f} s, "
                      f"{cpu / puts * 1e6 if puts else 0:.0f} µs/put | etcdctl CPU {ctl:.1f} s | "
                      f"{elapsed:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
            finally:
                c.stop()


if __name__ == "__main__":
    main()
