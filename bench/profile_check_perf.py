"""Where a raftnode member's CPU goes under `etcdctl check perf --load=<l>`.

    python bench/profile_check_perf.py                 # load m, 25 s of samples
    python bench/profile_check_perf.py --load l --seconds 30 --gil --top 40

Starts a fresh 3-member raftnode cluster (bench/cluster.py), runs the real
`etcdctl check perf` against all three endpoints, and while it runs (after a
warm-up) samples every member with py-spy (`--format raw`; `--gil` samples
only the thread holding the GIL, i.e. Python CPU rather than waits). It
prints, per member (leader first): utime+stime per put over the sampled
window, CPU per thread, the share of samples by layer (the innermost frame
in one of our packages or a known library), and the top functions by self
samples. The raw stacks stay in --out for a flame graph.

py-spy is a measuring tool, not a dependency: `pip install py-spy`.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import etcdctl_binary, start_cluster  # noqa: E402
from bench.procstat import cpu_seconds  # noqa: E402
from engine.cli import launch  # noqa: E402

# Layer of a frame, by file path: the first rule that matches wins, tried
# from the innermost frame outwards.
LAYERS = (
    ("raft core", re.compile(r"engine/raft/")),
    ("WAL", re.compile(r"engine/wal/")),
    ("mvcc/apply", re.compile(r"engine/mvcc/|engine/server/apply")),
    ("peer transport", re.compile(r"engine/transport/")),
    ("ready loop / node", re.compile(r"engine/server/")),
    ("client API handlers", re.compile(r"engine/api/|engine/auth/")),
    ("metrics / http", re.compile(r"engine/http/|prometheus_client")),
    ("protobuf", re.compile(r"google/protobuf")),
    ("grpc aio plumbing", re.compile(r"grpc/")),
    ("asyncio", re.compile(r"asyncio/")),
    ("threads / queues", re.compile(r"threading\.py|concurrent/futures|queue\.py")),
)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed)."""
    out: dict[str, float] = collections.Counter()
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = re.sub(r"[-_]?\d+$", "", name) or name
        out[name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def frame_file(frame: str) -> str:
    m = re.search(r"\(([^)]*)\)\s*$", frame)
    return m.group(1) if m else ""


def layer_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        path = frame_file(frame)
        for name, rule in LAYERS:
            if rule.search(path):
                return name
    return "other (C, no Python frame)"


def summarise(raw: pathlib.Path, top: int) -> str:
    layers: collections.Counter = collections.Counter()
    selfs: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        stack = stack_text.split(";")
        # py-spy puts the thread (and process) first; the innermost frame is last.
        frames = [f for f in stack if "(" in f]
        total += n
        layers[layer_of(frames)] += n
        inner = frames[-1] if frames else stack[-1]
        selfs[re.sub(r":\d+\)", ")", inner)] += n
    if not total:
        return "    (no samples)\n"
    lines = [f"    {total} samples"]
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in layers.most_common()]
    lines.append("    top self:")
    lines += [f"    {100 * n / total:5.1f} %  {name}" for name, n in selfs.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--load", default="m", choices=["s", "m", "l", "xl"])
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of load before sampling")
    ap.add_argument("--seconds", type=int, default=25, help="seconds of samples")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default="/tmp/raftui-profile", help="where the raw stacks go")
    args = ap.parse_args()
    if not etcdctl_binary():
        sys.exit("etcdctl not found")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        c = start_cluster("raftnode", d)
        try:
            pids = [p.pid for p in c.procs]
            li = c.endpoints.index(c.leader_endpoint())
            order = [li] + [i for i in range(len(pids)) if i != li]
            check = subprocess.Popen(
                [etcdctl_binary(), f"--endpoints={','.join(c.endpoints)}", "check", "perf",
                 f"--load={args.load}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env=launch.clean_env({"ETCDCTL_API": "3"}))
            verdict: list[str] = []
            reader = threading.Thread(target=lambda: verdict.extend(check.stdout), daemon=True)
            reader.start()
            time.sleep(args.warmup)  # the check's own warm-up; the window starts after it
            before = [cpu_seconds(p) for p in pids]
            threads_before = [thread_cpu(p) for p in pids]
            t0 = time.monotonic()
            spies = []
            for i in order:
                role = "leader" if i == li else f"follower-{c.names[i]}"
                raw = out / f"check-perf-{args.load}-{role}.txt"
                spies.append((role, raw, subprocess.Popen(
                    ["py-spy", "record", "-p", str(pids[i]), "-o", str(raw), "--format", "raw",
                     "-r", str(args.rate), "-d", str(args.seconds), "--nonblocking",
                     *(["--gil"] if args.gil else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
            for _, _, s in spies:
                s.wait(args.seconds + 60)
            elapsed = time.monotonic() - t0
            after = [cpu_seconds(p) for p in pids]
            threads_after = [thread_cpu(p) for p in pids]
            check.wait(180)
            reader.join(5)
            print("".join(verdict).strip().splitlines()[-4:] if verdict else "(no verdict)")
            print(f"window {elapsed:.1f} s; CPU per member (share of one core):")
            for (role, raw, _), i in zip(spies, order):
                used = after[i] - before[i]
                print(f"  {role}: {100 * used / elapsed:.0f} % of a core")
                per_thread = {k: threads_after[i].get(k, 0) - threads_before[i].get(k, 0)
                              for k in threads_after[i]}
                for name, v in sorted(per_thread.items(), key=lambda kv: -kv[1])[:6]:
                    if v > 0:
                        print(f"      thread {name}: {100 * v / elapsed:.1f} %")
                print(summarise(raw, args.top) if raw.exists() else "    (py-spy wrote nothing)")
        finally:
            c.stop()


if __name__ == "__main__":
    main()
