"""The checker in its own process: `python -m raftui.lincheck.worker` reads one
job on stdin (a JSON object: a whole history, or each key's segment since its
last cut) and writes {"verdict": live.Verdict, "cuts": [...]} on stdout. live.py runs one per window, so the CPU-bound search never holds the
console's interpreter (its GIL) and a search that runs long can be killed."""
from __future__ import annotations

import json
import sys


def main() -> int:
    from .live import run_job

    budget = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    json.dump(run_job(json.load(sys.stdin), budget), sys.stdout, default=repr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
