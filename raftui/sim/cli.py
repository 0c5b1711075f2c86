"""`raftui sim --seed S --nodes N`: one schedule of the deterministic simulator, in the console.

    raftui sim --seed 42 --nodes 5                   step through seed 42's schedule
    raftui sim --seed 66 --nodes 1 --learners 1 --steps 500 \\
        --mutate no-snapshot-sync --mutate strict-commit-load     a failing seed, replayed
    raftui sim --seed 42 --print                     the events as text, no console

Exit status: 0 when the schedule passes, 1 when the simulator finds a
violation (the console ends on it; --print prints it and the replay
command), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="raftui sim", description="Watch one schedule of the deterministic "
                                "Raft simulator (engine/sim) event by event in the console's panels.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, default=3, help="founding voters (1-9, default 3)")
    p.add_argument("--learners", type=int, default=0, help="founding learners")
    p.add_argument("--steps", type=int, default=1000, help="simulator steps (default 1000, at most 20000)")
    p.add_argument("--mutate", action="append", default=[], help="put back a known bug (engine/sim/mutations.py)")
    p.add_argument("--profile", default="", help="the simulator's weather (calm, lossy, crashy, partitions, "
                                                "asymmetric, stalls, churn, joint, storm; default: drawn from the seed)")
    p.add_argument("--print", action="store_true", help="print the events instead of opening the console")
    p.add_argument("--theme", default=None)
    args = p.parse_args(argv)
    from .recording import record

    try:
        rec = record(args.seed, args.nodes, args.steps, learners=args.learners, mutate=tuple(args.mutate),
                     profile=args.profile)
    except ValueError as exc:
        print(f"raftui sim: {exc}", file=sys.stderr)
        return 2
    if args.print:
        try:
            for f in rec.frames:
                print(f"{f.tick:6d}  {f.note}")
            print(f"FAILED: {rec.failure}\nreplay: {rec.replay}" if rec.failure else rec.summary)
            sys.stdout.flush()
        except BrokenPipeError:   # `raftui sim --print | head`: the reader has enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1 if rec.failure else 0
    import themes

    from .ui import SimApp

    theme = args.theme if args.theme in themes.THEMES else themes.DEFAULT_THEME
    SimApp(rec, theme=theme).run()
    return 1 if rec.failure else 0
