"""Checking a growing history without re-reading it all: cuts at isolated reads.

A window's check need not start from the beginning of a key's history. Say
R is an `ok` read of key k such that

1. every op of k invoked before R started was over before R started: `ok`
   ops completed before R's invocation, and nothing is still running -- with
   one exception, below;
2. no op of k was invoked while R ran (between its invocation and its
   completion, ends included).

Then in every linearization all ops before R come first, then R, then all
ops after R, and the register holds R's value at R. So the history is
linearizable iff (everything up to R) is, and (everything after R, from R's
value) is. The first half is what this window checks anyway; later windows
check only the second half, from R's value.

The exception is an indeterminate (`info`) write or cas W invoked before R:
it may take effect at any time, even after R. If some `ok` op that completed
before R started observed W's value, W took effect before that op, so before
R: it is settled. If not, W is *carried*: it goes into the later half too,
still free to take effect any time or never. That is sound and complete.
Values are unique, so an unobserved W that took effect before R was
overwritten before anyone saw it, and dropping it from the first half
changes nothing. (A cas that did not swap and recorded no current value
observes any value; no cut is made past one.)

The live session checks each window's segments this way, and the whole
history once more at the end, so a bug here could only delay a verdict,
never change the final one. tests/console/test_lincheck.py compares
windowed and whole checks on random histories, with and without injected
violations.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from . import checker
from .checker import FAIL, INFO, OK, READ

MAX_CANDIDATES = 64             # isolated-read candidates tried per key and window (latest first)


@dataclasses.dataclass
class Cursor:
    """Where a key's unchecked history starts."""
    start: int = 0                                   # events[start:] (global index) not behind a cut
    base: Any = None                                 # the register's value at the cut
    carried: list[dict] = dataclasses.field(default_factory=list)   # events of carried info ops
    skip: set = dataclasses.field(default_factory=set)              # op ids behind the cut whose last
    #                                                                 event came after it
    cuts: int = 0


class Incremental:
    def __init__(self) -> None:
        self.cursors: dict[Any, Cursor] = {}

    def segments(self, events: list[dict]) -> list[tuple[Any, Any, list[tuple[int, dict]]]]:
        """(key, initial value, [(global index, event), ...]) for every key: the carried ops'
        events (index -1) and the key's events past its cut. Scans from the earliest cut only;
        a key first seen there is scanned again from the start."""
        start = min((c.start for c in self.cursors.values()), default=0)
        out: dict[Any, list[tuple[int, dict]]] = {}
        fresh: set = set()
        for i in range(start, len(events)):
            e = events[i]
            if e.get("type") == "nemesis":
                continue
            key = e["key"]
            c = self.cursors.get(key)
            if c is None:
                c = self.cursors[key] = Cursor()
                fresh.add(key)
            if i < c.start or e.get("id") in c.skip:
                continue
            out.setdefault(key, []).append((i, e))
        if fresh and start > 0:         # new keys' earlier events
            early = [(i, events[i]) for i in range(start)
                     if events[i].get("type") != "nemesis" and events[i]["key"] in fresh]
            for key in fresh:
                out[key] = [x for x in early if x[1]["key"] == key] + out.get(key, [])
        result = []
        for key, c in self.cursors.items():
            items = [(-1, e) for e in c.carried] + out.get(key, [])
            result.append((key, c.base, items))
        return result

    def advance(self, key: Any, cut: dict | None) -> None:
        """Move a key's cursor past the cut find_cut() found in its segment (None: stay)."""
        if cut is None:
            return
        c = self.cursors[key]
        c.start = cut["start"]
        c.base = cut["base"]
        c.carried = cut["carried"]
        c.skip = set(cut["skip"]) | {e["id"] for e in cut["carried"]}
        c.cuts += 1


def find_cut(items: list[tuple[int, dict]]) -> dict | None:
    """The latest isolated read of a segment that checked linearizable (module docstring), as
    {start, base, carried, skip}; None if there is none. Runs where the check runs (plain data)."""
    events = [e for _, e in items]
    index_of_last: dict[Any, int] = {}
    completed: set = set()
    for i, e in items:
        if e["type"] in (OK, FAIL, INFO):
            completed.add(e["id"])
        index_of_last[e["id"]] = max(index_of_last.get(e["id"], -1), i)
    try:
        ops = checker.ops_from_history(events)
    except ValueError:
        return None
    by_invoke = sorted(ops, key=lambda o: (o.invoke, str(o.id)))
    reads = [o for o in by_invoke if o.f == READ and o.status == OK and o.id in completed]
    for r in reversed(reads[-MAX_CANDIDATES:]):
        cut = _cut_at(r, by_invoke, completed, index_of_last, items)
        if cut is not None:
            return cut
    return None


def _cut_at(r, ops, completed, index_of_last, items) -> dict | None:
    before = []
    for o in ops:
        if o is r:
            continue
        if o.invoke < r.invoke:
            if o.id not in completed:
                return None                      # still running: it may overlap R
            if o.status == OK and not o.complete < r.invoke:
                return None                      # overlaps R
            before.append(o)
        elif o.invoke <= r.complete:
            return None                          # invoked while R ran
    # Values observed by ok ops that completed before R started: their writers are settled.
    seen: set = set()
    for o in before:
        if o.status == OK and o.complete < r.invoke:
            obs = checker._observes(o)
            if obs is checker._ANY:
                return None                      # "not the old value": any writer may be needed
            seen.update(obs)
    carried_ids = {o.id for o in before if o.status == INFO and o.mutates() and o.written() not in seen}
    r_last = index_of_last[r.id]
    skip = [o.id for o in before if o.id not in carried_ids and index_of_last.get(o.id, -1) > r_last]
    carried = [e for i, e in items if e.get("id") in carried_ids]
    return {"start": r_last + 1, "base": r.value, "carried": carried, "skip": skip}
