"""What a server process costs, read from /proc (Linux): CPU, resident memory, disk.

Shared by bench_vs_etcd.py and bench_cpu_per_request.py so both count the
same thing. Both systems run one process per member (raftnode spawns no
children: its launcher exec's in place), so one PID is the whole member.
"""
from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` so far, in seconds (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces and ')': split after its last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5)


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of `pid` so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return total


def rss_bytes(pid: int) -> int:
    """VmRSS of `pid`: the resident memory the kernel charges to it now."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    raise ValueError(f"no VmRSS for {pid} (a zombie?)")


def disk_bytes(path: os.PathLike | str) -> int:
    """Space allocated on disk under `path`, like `du`: etcd preallocates its
    64 MiB WAL segments, and that space is really taken, so blocks not sizes."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:  # a file rotated away while we walk
                pass
    return total
