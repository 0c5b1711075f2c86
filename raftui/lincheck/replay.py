"""`raftui lincheck FILE`: check a saved history again (the console saves one per live check).

Exit status: 0 linearizable, 1 not (the report shows the smallest
counterexample found as a timeline and why no order of it works) or
undecided within the search budget, 2 the file cannot be read.
"""
from __future__ import annotations

import argparse
import sys

from . import checker, history


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="raftui lincheck",
                                description="Check a recorded history of read/write/cas operations for "
                                            "linearizability (Wing & Gong / Lowe's search, per key).")
    p.add_argument("file", help="a history saved by the console's live check (JSON lines)")
    p.add_argument("--budget", type=int, default=2_000_000,
                   help="search configurations per key before giving up (default 2,000,000)")
    args = p.parse_args(argv)
    try:
        meta, events = history.load(args.file)
        verdict = checker.check(events, meta.get("initial"), max_configurations=max(1, args.budget))
    except history.HistoryError as exc:
        print(f"raftui lincheck: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, KeyError) as exc:    # events that do not pair up, an unknown op
        print(f"raftui lincheck: {args.file}: not a usable history: {exc}", file=sys.stderr)
        return 2
    ops = sum(1 for e in events if e.get("type") == "invoke")
    if verdict.valid:
        print(f"linearizable ✓ ({ops:,} ops, {len(verdict.keys)} keys)")
        return 0
    print(verdict.report())
    print("NOT LINEARIZABLE ✗" if verdict.valid is False else "UNDECIDED (search budget exhausted)")
    return 1
