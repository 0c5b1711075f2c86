"""A linearizability checker for a set of independent registers (one per key).

The histories come from the console's live workload (raftui/lincheck/workload.py)
and from the Jepsen-style tests (tests/jepsen, which import it through
tests/support/linearizability.py): concurrent clients record, for every operation, an ``invoke`` event before sending the
request and one completion event after the answer (optionally naming, as ``node``,
the server that answered):

* ``ok``   -- the operation happened, with the value it returned;
* ``fail`` -- the operation definitely did NOT happen (the request was never
  sent, or the server refused it before proposing it);
* ``info`` -- indeterminate: it may or may not have happened (a timeout or
  "unavailable" after the request left the client). An ``info`` operation
  may take effect at any moment after its invocation -- even after the end
  of the history -- or never, so it stays open until the end.

Operations (``f``) on a register named by ``key``:

* ``read``             -- returns the value (``None`` = key absent);
* ``write v``          -- sets the value to v;
* ``cas [old, new]``   -- compare-and-set (an etcd Txn comparing the value):
  on ``ok`` the completion says ``swapped`` (True: the value was old and is
  now new) or not (the value was not old; ``current`` may carry the value
  the Txn's failure branch read).

Event records are plain dicts (JSON-serialisable, so a history can be saved
and checked again later)::

    {"id": 7, "type": "invoke", "process": 2, "f": "cas", "key": "k1",
     "value": ["a", "b"], "time": 123456789}
    {"id": 7, "type": "ok", "process": 2, "f": "cas", "key": "k1",
     "value": ["a", "b"], "swapped": False, "current": "c", "time": 123999999}

``time`` is the recording client's monotonic clock (any unit, one clock for
the whole history). Events whose ``type`` is ``nemesis`` are ignored by the
checker and shown in timelines.

The algorithm
-------------
Registers for different keys are independent, so a history is linearizable
iff each key's sub-history is (linearizability is compositional,
Herlihy & Wing), and each key is checked on its own.

For one key, the search is the one of Wing & Gong (1993) as improved by
Lowe ("Testing for linearizability", 2017) -- the algorithm behind
porcupine and, in spirit, Knossos:

1. Every operation gives two *entries*, its call (at invoke time) and its
   return (at completion time; +infinity for ``info``), in one doubly linked
   list sorted by time.
2. Walk the list from the front. At a *call* entry, try to linearize that
   operation now: if the sequential register model accepts it in the
   current state, push (operation, old state) on a stack, remove ("lift")
   its call and return entries from the list, and start again from the
   front. At a *return* entry -- an operation that completed but was not
   linearized by then, so nothing later can come before it -- undo the last
   choice: pop, put its entries back ("unlift") and try the next call entry
   after it.
3. Success when every ``ok`` operation is linearized (the ``info`` ones
   still open simply never happened); failure when a return entry is hit
   with an empty stack.
4. Memoisation (Lowe's key improvement): a configuration is the pair
   (set of linearized operations as a bit set, register state). Reaching a
   configuration already explored cannot lead anywhere new, so it is
   skipped. This bounds the search by the number of distinct
   configurations instead of the number of interleavings.

Before searching, operations that cannot matter are dropped, which keeps the
number of open ``info`` operations -- the expensive part -- small:

* ``fail`` operations, and reads that did not complete ``ok`` (a read never
  changes the state);
* ``info`` writes / cas whose new value no operation ever observes. Sound
  because values are (meant to be) unique: in any linearization, the
  operations between such a write and the next state change would have to
  observe its value, so there are none that matter, and dropping the write
  leaves a valid linearization; conversely an ``info`` operation may always
  not have happened. (Disabled when a history has ``ok`` cas results without
  the observed current value: "the value was not old" is satisfied by any
  value, so every write could matter.)

On failure, the counterexample is made as small as soundly possible: the
shortest prefix of the history that is already not linearizable (binary
search; any prefix of a linearizable history is linearizable, with the
operations still running at the cut treated as indeterminate), then
greedily removing operations whose removal cannot make a linearizable
history non-linearizable -- reads, cas that did not swap, and writes whose
value nobody in the remaining history observes -- as long as what is left
is still not linearizable. What is left is a history that is not
linearizable on its own, and whose non-linearizability implies the full
history's.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import time as _time
from typing import Any, Iterable, Sequence

INF = math.inf
READ, WRITE, CAS = "read", "write", "cas"
OK, FAIL, INFO = "ok", "fail", "info"
_ABSENT = object()   # "no current value recorded" for a cas that did not swap


@dataclasses.dataclass
class Op:
    """One operation with both of its events merged."""
    id: int
    process: Any
    f: str                 # read | write | cas
    key: Any
    value: Any             # read: the value returned (ok); write: v; cas: (old, new)
    status: str            # ok | fail | info
    invoke: float
    complete: float        # INF for info
    swapped: bool | None = None   # cas ok: whether it swapped
    current: Any = _ABSENT        # cas ok, not swapped: the value seen instead, if recorded
    error: str | None = None
    node: Any = None              # which server answered (or was asked), if the client recorded it

    def written(self) -> Any:
        """The value this op stores if it takes effect (writes and cas), else _ABSENT."""
        if self.f == WRITE:
            return self.value
        if self.f == CAS and (self.status == INFO or self.swapped):
            return self.value[1]
        return _ABSENT

    def mutates(self) -> bool:
        return self.written() is not _ABSENT

    def describe(self) -> str:
        if self.f == READ:
            body = f"read -> {self.value!r}" if self.status == OK else "read"
        elif self.f == WRITE:
            body = f"write {self.value!r}"
        else:
            old, new = self.value
            body = f"cas {old!r} -> {new!r}"
            if self.status == OK:
                if self.swapped:
                    body += " (swapped)"
                elif self.current is not _ABSENT:
                    body += f" (not swapped: value was {self.current!r})"
                else:
                    body += " (not swapped)"
        tail = "" if self.status == OK else f" [{self.status}{': ' + self.error if self.error else ''}]"
        via = f" @{self.node}" if self.node is not None else ""
        return f"#{self.id} p{self.process}{via} {body}{tail}"


# ---------------------------------------------------------------- events -> ops


def ops_from_history(events: Iterable[dict]) -> list[Op]:
    """Pair invoke/completion events by ``id``. An invocation without a
    completion is indeterminate (``info``): the client never learnt."""
    invokes: dict[Any, dict] = {}
    done: dict[Any, dict] = {}
    for e in events:
        t = e.get("type")
        if t == "nemesis":
            continue
        if t == "invoke":
            if e["id"] in invokes:
                raise ValueError(f"op {e['id']} invoked twice")
            invokes[e["id"]] = e
        elif t in (OK, FAIL, INFO):
            if e["id"] not in invokes:
                raise ValueError(f"op {e['id']} completed before it was invoked")
            if e["id"] in done:
                raise ValueError(f"op {e['id']} completed twice")
            done[e["id"]] = e
        else:
            raise ValueError(f"unknown event type {t!r}")
    ops = []
    for oid, inv in invokes.items():
        c = done.get(oid)
        f = inv["f"]
        if f not in (READ, WRITE, CAS):
            raise ValueError(f"unknown op {f!r}")
        status = c["type"] if c is not None else INFO
        value = inv.get("value")
        if f == READ:
            value = c.get("value") if status == OK else None
        elif f == CAS:
            value = tuple(value)
        if status == OK and c["time"] < inv["time"]:
            raise ValueError(f"op {oid} completes before its invocation")
        op = Op(id=oid, process=inv.get("process"), f=f, key=inv["key"], value=value, status=status,
                invoke=inv["time"], complete=c["time"] if status == OK else INF,
                error=(c or {}).get("error"), node=(c or inv).get("node"))
        if status == FAIL:
            op.complete = c["time"]
        if f == CAS and status == OK:
            if "swapped" not in c:
                raise ValueError(f"cas {oid} completed ok without 'swapped'")
            op.swapped = bool(c["swapped"])
            if not op.swapped and "current" in c:
                op.current = c["current"]
        ops.append(op)
    ops.sort(key=lambda o: (o.invoke, str(o.id)))
    return ops


# ---------------------------------------------------------------- the register model


def step(state: Any, op: Op) -> tuple[bool, Any]:
    """The sequential specification: (is op legal in state, state after)."""
    if op.f == READ:
        return state == op.value, state
    if op.f == WRITE:
        return True, op.value
    old, new = op.value
    if op.status == INFO or op.swapped:
        # An indeterminate cas is only ever linearized as "it swapped": the
        # other outcome changes nothing, which is the same as never happening.
        return state == old, new
    if state == old:
        return False, state
    if op.current is not _ABSENT and state != op.current:
        return False, state
    return True, state


# ---------------------------------------------------------------- pruning


_ANY = object()   # "observes any value": see _observes


def _observes(o: Op) -> tuple | object:
    """The values whose presence in the register o's legality depends on:
    a read its result; a cas that swapped (or may have) its old value; a cas
    that did not swap the current value it saw -- or, if none was recorded,
    _ANY ("the value was not old" holds for every other value)."""
    if o.f == READ:
        return (o.value,) if o.status == OK else ()
    if o.f == CAS:
        if o.status == OK and not o.swapped:
            return _ANY if o.current is _ABSENT else (o.current,)
        return (o.value[0],)
    return ()


def _observed(ops: Sequence[Op]) -> set | None:
    """Values some op in ops observes; None means "any value may be"."""
    seen: set = set()
    for o in ops:
        obs = _observes(o)
        if obs is _ANY:
            return None
        seen.update(obs)
    return seen


def _prune(ops: Sequence[Op]) -> list[Op]:
    """Drop operations that cannot change the verdict (module docstring)."""
    kept = [o for o in ops if o.status != FAIL and not (o.f == READ and o.status != OK)]
    while True:
        seen = _observed(kept)
        if seen is None:
            return kept
        nxt = [o for o in kept if not (o.status == INFO and o.mutates() and o.written() not in seen)]
        if len(nxt) == len(kept):
            return kept
        kept = nxt


# ---------------------------------------------------------------- the search


@dataclasses.dataclass
class SearchResult:
    valid: bool | None          # None: gave up (configuration budget exhausted)
    linearization: list[Op]     # valid: a witness order; else the longest partial one found
    stuck: Op | None = None     # not valid: the op that could not be placed after that partial order
    stuck_state: Any = None     # the register value at that point
    configurations: int = 0


class BudgetExceeded(Exception):
    pass


def search(ops: Sequence[Op], initial: Any = None, max_configurations: int = 2_000_000) -> SearchResult:
    """WGL/Lowe search over one register's ops (already pruned)."""
    m = len(ops)
    required = [o.status == OK for o in ops]
    required_left = sum(required)
    if required_left == 0:
        return SearchResult(True, [])
    # Entry e in [0, 2m): op e // 2, call if e is even, return if odd.
    # List node = entry + 1; node 0 is the head sentinel; END terminates.
    END = -1

    def entry_key(e: int):
        o = ops[e // 2]
        if e % 2 == 0:
            return (o.invoke, 0, e)
        # Calls sort before returns at equal times: equal timestamps count
        # as overlapping, never as "one finished before the other started".
        return (o.complete, 1, e)

    order = sorted(range(2 * m), key=entry_key)
    nxt = [END] * (2 * m + 1)
    prv = [0] * (2 * m + 1)
    p = 0
    for e in order:
        nxt[p] = e + 1
        prv[e + 1] = p
        p = e + 1

    def lift(i: int) -> None:
        for node in (2 * i + 1, 2 * i + 2):         # call node, then return node
            a, b = prv[node], nxt[node]
            nxt[a] = b
            if b != END:
                prv[b] = a

    def unlift(i: int) -> None:
        for node in (2 * i + 2, 2 * i + 1):         # reverse order of lift
            a, b = prv[node], nxt[node]
            nxt[a] = node
            if b != END:
                prv[b] = node

    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []               # (op index, state before it)
    state = initial
    linearized = 0                                  # bit i set = ops[i] linearized
    best: tuple[int, list[int], int | None, Any] = (-1, [], None, None)
    node = nxt[0]
    while True:
        if required_left == 0:
            return SearchResult(True, [ops[i] for i, _ in stack], configurations=len(seen))
        if node == END:   # cannot happen (an unlinearized ok op's return comes first); be safe
            raise AssertionError("ran off the entry list with required ops left")
        e = node - 1
        i = e // 2
        if e % 2 == 0:
            # A call: try to linearize ops[i] here.
            legal, new_state = step(state, ops[i])
            if legal:
                cfg = (linearized | (1 << i), new_state)
                if cfg not in seen:
                    seen.add(cfg)
                    if len(seen) > max_configurations:
                        return SearchResult(None, [ops[j] for j in best[1]], configurations=len(seen))
                    stack.append((i, state))
                    linearized, state = cfg
                    required_left -= required[i]
                    lift(i)
                    node = nxt[0]
                    continue
            node = nxt[node]
        else:
            # A return of an op not linearized yet: this branch is dead.
            if len(stack) > best[0]:
                best = (len(stack), [j for j, _ in stack], i, state)
            if not stack:
                break
            j, state = stack.pop()
            linearized &= ~(1 << j)
            required_left += required[j]
            unlift(j)
            node = nxt[2 * j + 1]
    _, order_ids, stuck, stuck_state = best
    return SearchResult(False, [ops[j] for j in order_ids],
                        stuck=ops[stuck] if stuck is not None else None, stuck_state=stuck_state,
                        configurations=len(seen))


# ---------------------------------------------------------------- counterexamples


def _prefix(ops: Sequence[Op], t: float) -> list[Op]:
    """The history as it stood at time t: ops invoked after t vanish, ops
    still running at t become indeterminate (reads among them are dropped)."""
    out = []
    for o in ops:
        if o.invoke > t:
            continue
        if o.complete > t and o.status == OK:
            if o.f == READ:
                continue
            o = dataclasses.replace(o, status=INFO, complete=INF, swapped=None, current=_ABSENT)
        out.append(o)
    return out


def _sound_removal(ops: Sequence[Op], candidates: Sequence[Op]) -> list[Op]:
    """ops minus as many of candidates as can be removed soundly, i.e. such
    that removing them cannot turn a linearizable history into a
    non-linearizable one: every op that changes no state (reads, cas that did
    not swap), then, repeatedly, every op whose written value no remaining op
    observes (module docstring)."""
    counts: collections.Counter = collections.Counter()
    any_observers = 0
    for o in ops:
        obs = _observes(o)
        if obs is _ANY:
            any_observers += 1
        else:
            counts.update(obs)
    gone: set[int] = set()

    def drop(o: Op) -> None:
        nonlocal any_observers
        gone.add(id(o))
        obs = _observes(o)
        if obs is _ANY:
            any_observers -= 1
        else:
            counts.subtract(obs)

    for o in candidates:
        if not o.mutates():
            drop(o)
    changed = True
    while changed:
        changed = False
        for o in candidates:
            if id(o) in gone or any_observers:
                continue
            own = _observes(o)
            w = o.written()
            if counts[w] - (own.count(w) if own is not _ANY else 0) == 0:
                drop(o)
                changed = True
    return [o for o in ops if id(o) not in gone]


def _holds(ops: Sequence[Op], initial: Any, budget: int) -> bool | None:
    return search(_prune(ops), initial, budget).valid


def minimize(ops: Sequence[Op], initial: Any = None, *, budget: int = 200_000,
             deadline_s: float = 10.0) -> list[Op]:
    """A small sub-history that is still not linearizable (see module docstring).

    ``ops`` must be non-linearizable. Every step keeps that property and is
    sound, so the result's violation implies the original's. Best effort
    within ``deadline_s``: what is returned is always a valid witness.
    """
    t_end = _time.monotonic() + deadline_s
    cur = _prune(ops)
    # 1. Shortest non-linearizable prefix, by binary search over completion times.
    times = sorted({o.complete for o in cur if o.status == OK})
    lo, hi = 0, len(times) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _holds(_prefix(cur, times[mid]), initial, budget) is False:
            hi = mid
        else:
            lo = mid + 1
    if times:
        cand = _prune(_prefix(cur, times[lo]))
        if _holds(cand, initial, budget) is False:
            cur = cand
    # 2. Delta debugging (ddmin, complements only): try to remove chunks of
    #    the history, oldest first, halving the chunk size when none can go.
    chunks = 2
    while _time.monotonic() < t_end and len(cur) > 1:
        order = sorted(cur, key=lambda x: (x.invoke, str(x.id)))
        size = max(1, -(-len(order) // chunks))
        progress = False
        for k in range(0, len(order), size):
            if _time.monotonic() >= t_end:
                break
            cand = _prune(_sound_removal(cur, order[k:k + size]))
            if len(cand) < len(cur) and _holds(cand, initial, budget) is False:
                cur = cand
                chunks = max(chunks - 1, 2)
                progress = True
                break
        if not progress:
            if size == 1:
                break
            chunks = min(len(cur), chunks * 2)
    return cur


def timeline(ops: Sequence[Op], nemesis: Sequence[dict] = (), *, t0: float | None = None,
             width: int = 40, scale: float = 1e6, unit: str = "ms") -> str:
    """Ops as bars on a time axis, one line each, oldest invocation first.

    ``scale`` converts history time units to ``unit`` (default: ns -> ms).
    Indeterminate ops run to the right edge (``~~~>``).
    """
    if not ops:
        return "(no operations)"
    start = min(o.invoke for o in ops) if t0 is None else t0
    finite = [o.complete for o in ops if o.complete != INF] + [o.invoke for o in ops]
    end = max(finite)
    span = max(end - start, 1e-9)

    def col(t: float) -> int:
        return min(width - 1, max(0, int((t - start) / span * (width - 1))))

    lines = []
    for o in sorted(ops, key=lambda x: (x.invoke, str(x.id))):
        a = col(o.invoke)
        if o.complete == INF:
            bar = " " * a + "|" + "~" * max(0, width - a - 2) + ">"
            when = f"{(o.invoke - start) / scale:9.1f} .. (open)"
        else:
            b = max(col(o.complete), a)
            bar = " " * a + "|" + "-" * max(0, b - a - 1) + ("|" if b > a else "") + " " * (width - b - 1)
            when = f"{(o.invoke - start) / scale:9.1f} .. {(o.complete - start) / scale:.1f}"
        lines.append(f"{bar[:width]:<{width}}  {when} {unit}  {o.describe()}")
    for n in nemesis:
        if start <= n["time"] <= end:
            lines.append(f"{' ' * col(n['time'])}*{' ' * (width - col(n['time']) - 1)}  "
                         f"{(n['time'] - start) / scale:9.1f} {unit}          nemesis: {n.get('what', '')}")
    return "\n".join(lines)


def explain(ops: Sequence[Op], initial: Any = None, budget: int = 200_000) -> str:
    """Why ops cannot be linearized: the longest order found, then the op
    that cannot follow it."""
    res = search(_prune(ops), initial, budget)
    if res.valid:
        return "linearizable"
    if res.valid is None:
        return f"undecided: gave up after {res.configurations} configurations"
    out = ["longest linearizable order found:"]
    state = initial
    for o in res.linearization:
        _, state = step(state, o)
        out.append(f"    {o.describe():<60} => register {state!r}")
    if res.stuck is not None:
        o = res.stuck
        out.append(f"then {o.describe()} (completed at that point) cannot be placed: the register "
                   f"holds {res.stuck_state!r}, and no other order of the operations that may "
                   f"precede it makes it legal")
    return "\n".join(out)


# ---------------------------------------------------------------- the top level


@dataclasses.dataclass
class KeyVerdict:
    key: Any
    valid: bool | None
    ops: int                   # ops of this key after pruning
    configurations: int
    counterexample: list[Op] = dataclasses.field(default_factory=list)
    report: str = ""


@dataclasses.dataclass
class Verdict:
    valid: bool | None         # False if any key is not linearizable; None if some key was undecided
    keys: dict[Any, KeyVerdict]

    def failures(self) -> list[KeyVerdict]:
        return [k for k in self.keys.values() if k.valid is not True]

    def report(self) -> str:
        if self.valid:
            return "linearizable: " + ", ".join(f"{k!r} ({v.ops} ops, {v.configurations} configurations)"
                                                for k, v in self.keys.items())
        return "\n\n".join(k.report for k in self.failures())


def check(history: Iterable[dict] | Sequence[Op], initial: Any = None, *,
          max_configurations: int = 2_000_000, minimize_counterexample: bool = True,
          nemesis: Sequence[dict] | None = None) -> Verdict:
    """Check a history (events or Ops) of independent registers, all starting at ``initial``."""
    items = list(history)
    if items and isinstance(items[0], Op):
        ops: list[Op] = items  # type: ignore[assignment]
        nem = list(nemesis or [])
    else:
        ops = ops_from_history(items)  # type: ignore[arg-type]
        nem = list(nemesis) if nemesis is not None else [e for e in items if e.get("type") == "nemesis"]
    by_key: dict[Any, list[Op]] = {}
    for o in ops:
        by_key.setdefault(o.key, []).append(o)
    keys: dict[Any, KeyVerdict] = {}
    for key in sorted(by_key, key=repr):
        kops = _prune(by_key[key])
        res = search(kops, initial, max_configurations)
        kv = KeyVerdict(key, res.valid, len(kops), res.configurations)
        if res.valid is None:
            kv.report = (f"key {key!r}: UNDECIDED -- the search gave up after {res.configurations} "
                         f"configurations ({len(kops)} ops); not a proof of either")
        elif res.valid is False:
            small = minimize(kops, initial) if minimize_counterexample else kops
            kv.counterexample = small
            t0 = min(o.invoke for o in small)
            kv.report = "\n".join([
                f"key {key!r}: NOT LINEARIZABLE ({len(kops)} ops; counterexample of {len(small)} ops, "
                f"itself not linearizable, initial value {initial!r})",
                timeline(small, nem, t0=t0),
                explain(small, initial),
            ])
        keys[key] = kv
    valid: bool | None = True
    if any(k.valid is False for k in keys.values()):
        valid = False
    elif any(k.valid is None for k in keys.values()):
        valid = None
    return Verdict(valid, keys)


def dump_history(events: Iterable[dict], path) -> None:
    """One JSON event per line (what ``load_history`` reads back)."""
    with open(path, "w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e, sort_keys=True, default=repr) + "\n")


def load_history(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
