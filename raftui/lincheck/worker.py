"""The checker in its own process: `python -m raftui.lincheck.worker` reads a
history (JSON lines) on stdin and writes its live.Verdict as one JSON object on
stdout. live.py runs one per window, so the CPU-bound search never holds the
console's interpreter (its GIL) and a search that runs long can be killed."""
from __future__ import annotations

import dataclasses
import json
import sys


def main() -> int:
    from .live import check_events

    budget = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    events = [json.loads(line) for line in sys.stdin if line.strip()]
    verdict = check_events(events, budget)
    json.dump(dataclasses.asdict(verdict), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
