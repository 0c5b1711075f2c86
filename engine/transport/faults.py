"""The fault filter: cut, drop and delay traffic with chosen peers.

One filter sits in a member's transport and judges every message twice:
when it is sent to a peer and when it arrives from one. Because of that a
cut told to only one member still stops traffic in both directions: its own
messages are not sent, and whatever the other side sends is thrown away on
arrival.

Rules, per peer and direction (OUT: what this member sends to the peer, IN:
what it receives from it), with "all peers" as the fallback for peers without
a rule of their own. Every call takes `direction=None` (both ways, the
default and what older callers mean) or one Direction: a one-way rule is how
asymmetric partitions are made (the leader's heartbeats lost, its followers'
answers still arriving). The link a->b can be cut at a (OUT to b) or at b
(IN from a); the console tells both, so either record shows it.

- cut: everything is dropped. `cut(None)` cuts every peer, `cut({2, 3})`
  adds those peers to the cut set; `uncut(...)` takes cuts back, one
  direction or both, without touching drops and delays.
- drop(rate): each message is dropped with probability `rate`.
- delay(ms, jitter_ms): each message is delivered `ms` plus a uniform draw
  from [0, jitter_ms] later. The transport's real stream is TCP, which never
  reorders, so delayed messages keep their order per peer and direction:
  a message is never released before one that was queued ahead of it.

Peer lists are bounded (MAX_PEERS ids per call): a request naming a
million ids is refused before anything is stored.

Everything is in memory; `heal()` or a process restart undoes it all.
Delays are timers on the event loop (`loop.call_later`), never sleeps, so a
delay slows the affected peer and nothing else.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import random
import time
from typing import Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

# How many fault calls the log keeps; the console shows the recent ones and
# a long-running member must not grow without bound.
LOG_LIMIT = 1000
# Peers one call may name: far more than any cluster has (etcd suggests 3 to
# 7 members), few enough that rules and log lines stay small.
MAX_PEERS = 256
LOG_PEERS_SHOWN = 16      # ids written out in one log line; the rest counted


class Direction(enum.Enum):
    OUT = "out"
    IN = "in"


BOTH = (Direction.OUT, Direction.IN)
Key = tuple[int | None, Direction]       # (peer, or None for every peer; direction)


def _directions(direction: Direction | None) -> tuple[Direction, ...]:
    return BOTH if direction is None else (direction,)


@dataclasses.dataclass(frozen=True)
class LogEntry:
    unix_time: float
    what: str


@dataclasses.dataclass(frozen=True)
class FaultStatus:
    """The active faults. A key of None in `drop`/`delay` is the all-peers rule.

    `cut_all`, `cut`, `drop` and `delay` are the rules that hold both ways
    (what a caller that knows no directions set, read as before); a rule in
    force one way only, or with different values each way, is in the
    `*_out` / `*_in` fields instead, never in both."""
    cut_all: bool
    cut: frozenset[int]
    drop: dict[int | None, float]
    delay: dict[int | None, tuple[int, int]]   # peer -> (ms, jitter_ms)
    log: tuple[LogEntry, ...]
    cut_all_out: bool = False
    cut_all_in: bool = False
    cut_out: frozenset[int] = frozenset()
    cut_in: frozenset[int] = frozenset()
    drop_out: dict[int | None, float] = dataclasses.field(default_factory=dict)
    drop_in: dict[int | None, float] = dataclasses.field(default_factory=dict)
    delay_out: dict[int | None, tuple[int, int]] = dataclasses.field(default_factory=dict)
    delay_in: dict[int | None, tuple[int, int]] = dataclasses.field(default_factory=dict)

    @property
    def active(self) -> bool:
        return (self.cut_all or self.cut_all_out or self.cut_all_in
                or bool(self.cut or self.drop or self.delay or self.cut_out or self.cut_in
                        or self.drop_out or self.drop_in or self.delay_out or self.delay_in))

    def cuts(self, peer: int, direction: Direction) -> bool:
        """Is the link with `peer` cut in `direction` (by its own rule or the all-peers one)?"""
        one_way = self.cut_out if direction is Direction.OUT else self.cut_in
        every = self.cut_all_out if direction is Direction.OUT else self.cut_all_in
        return self.cut_all or every or peer in self.cut or peer in one_way

    def describe(self) -> str:
        if not self.active:
            return "no faults"
        parts = []
        for flag, way in ((self.cut_all, ""), (self.cut_all_out, " out"), (self.cut_all_in, " in")):
            if flag:
                parts.append(f"cut all{way}")
        for peers, way in ((self.cut, ""), (self.cut_out, " out"), (self.cut_in, " in")):
            if peers:
                parts.append(f"cut{way} {sorted(peers)}")
        for rules, way in ((self.drop, ""), (self.drop_out, " out"), (self.drop_in, " in")):
            for peer, rate in sorted(rules.items(), key=_rule_order):
                parts.append(f"drop{way} {rate:g} {_peer_text(peer)}")
        for rules, way in ((self.delay, ""), (self.delay_out, " out"), (self.delay_in, " in")):
            for peer, (ms, jitter) in sorted(rules.items(), key=_rule_order):
                parts.append(f"delay{way} {ms}ms+{jitter}ms {_peer_text(peer)}")
        return ", ".join(parts)


def _rule_order(item: tuple[int | None, object]) -> int:
    return -1 if item[0] is None else item[0]


def _split(rules: dict[Key, T]) -> tuple[dict[int | None, T], dict[int | None, T], dict[int | None, T]]:
    """Per-direction rules -> (the same both ways, out only, in only)."""
    both: dict[int | None, T] = {}
    out: dict[int | None, T] = {}
    inn: dict[int | None, T] = {}
    for (peer, direction), value in rules.items():
        other = rules.get((peer, Direction.IN if direction is Direction.OUT else Direction.OUT))
        if other == value:
            both[peer] = value
        elif direction is Direction.OUT:
            out[peer] = value
        else:
            inn[peer] = value
    return both, out, inn


def _peer_text(peer: int | None) -> str:
    return "all" if peer is None else f"peer {peer}"


def _peers_text(peers: set[int] | None, direction: Direction | None = None) -> str:
    way = "" if direction is None else f" direction={direction.value}"
    if peers is None:
        return "peers=all" + way
    ids = sorted(peers)
    if len(ids) > LOG_PEERS_SHOWN:
        shown = ", ".join(map(str, ids[:LOG_PEERS_SHOWN]))
        return f"peers=[{shown}, ... {len(ids)} peers]" + way
    return f"peers={ids}" + way


class _DelayLine:
    """Messages held back for one (peer, direction), released in order.

    One timer at a time, armed for the head of the line: a burst of
    delayed heartbeats costs one timer, not one per message.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: collections.deque[tuple[float, object, Callable[[list], None]]] = (
            collections.deque())
        self._timer: asyncio.TimerHandle | None = None
        # Invariant: due times in _items never decrease (TCP order).
        self._last_due = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, due: float, item: object, deliver: Callable[[list], None]) -> None:
        due = max(due, self._last_due)
        self._last_due = due
        self._items.append((due, item, deliver))
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self._items[0][0], self._release)

    def _release(self) -> None:
        self._timer = None
        now = self._loop.time()
        # Group consecutive items for the same receiver into one call so the
        # host sees batches, as it would without the delay.
        batch: list = []
        deliver: Callable[[list], None] | None = None
        while self._items and self._items[0][0] <= now:
            _, item, fn = self._items.popleft()
            if deliver is not None and fn is not deliver:
                deliver(batch)
                batch = []
            deliver = fn
            batch.append(item)
        if self._items:
            self._arm()
        if deliver is not None:
            deliver(batch)

    def cancel(self) -> list:
        """Forget the held items; returns them."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items = [item for _, item, _ in self._items]
        self._items.clear()
        return items


class FaultFilter:
    """Judges each message exchanged with a peer: pass, drop or delay.

    `rng` makes drops and jitter reproducible in tests; by default the
    system's random source is used. `clock` stamps the call log.
    """

    def __init__(self, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._rng = rng if rng is not None else random.SystemRandom()
        self._clock = clock
        # Keyed (peer or None for every peer, direction): a both-ways call
        # writes both directions' keys, so status() can tell them apart.
        self._cut: set[Key] = set()
        self._drop: dict[Key, float] = {}
        self._delay: dict[Key, tuple[int, int]] = {}
        self._log: collections.deque[LogEntry] = collections.deque(maxlen=LOG_LIMIT)
        self._lines: dict[tuple[int, Direction], _DelayLine] = {}
        # Counters for the console and for tests.
        self.dropped = 0
        self.delayed = 0

    # -- the operator's calls ---------------------------------------------------

    def cut(self, peers: set[int] | None = None, direction: Direction | None = None) -> None:
        """Stop all traffic with `peers` (None: every peer), both directions
        or one (OUT: what this member sends them; IN: what they send it)."""
        keys = _rule_keys(peers, direction)
        self._cut.update(keys)
        self._record(f"cut {_peers_text(peers, direction)}")

    def uncut(self, peers: set[int] | None = None, direction: Direction | None = None) -> None:
        """Take back cuts with `peers` in `direction` (None: both). `peers=None`
        takes back every cut that way, the all-peers one and each peer's; a
        peer's own cut taken back leaves an all-peers cut in force. Drops and
        delays stay."""
        if peers is None:
            ways = _directions(direction)
            self._cut = {k for k in self._cut if k[1] not in ways}
        else:
            self._cut.difference_update(_rule_keys(peers, direction))
        self._record(f"uncut {_peers_text(peers, direction)}")

    def heal(self) -> None:
        """Remove every fault. Messages already held by a delay still arrive
        on time: they are in flight, and a real network would deliver them."""
        self._cut.clear()
        self._drop.clear()
        self._delay.clear()
        self._record("heal")

    def drop(self, rate: float, peers: set[int] | None = None, direction: Direction | None = None) -> None:
        """Drop the fraction `rate` (0..1) of messages with `peers`; 0 removes."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"drop rate must be between 0 and 1, got {rate}")
        for key in _rule_keys(peers, direction):
            if rate == 0.0:
                self._drop.pop(key, None)
            else:
                self._drop[key] = rate
        self._record(f"drop rate={rate:g} {_peers_text(peers, direction)}")

    def delay(self, ms: int, jitter_ms: int = 0, peers: set[int] | None = None,
              direction: Direction | None = None) -> None:
        """Deliver messages with `peers` `ms` (+ up to `jitter_ms`) late; 0 removes."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0 ms")
        for key in _rule_keys(peers, direction):
            if ms == 0 and jitter_ms == 0:
                self._delay.pop(key, None)
            else:
                self._delay[key] = (ms, jitter_ms)
        self._record(f"delay ms={ms} jitter_ms={jitter_ms} {_peers_text(peers, direction)}")

    def status(self) -> FaultStatus:
        cut_both = {p for p, d in self._cut if d is Direction.OUT and (p, Direction.IN) in self._cut}
        one_way = {k for k in self._cut if k[0] not in cut_both}
        drop, drop_out, drop_in = _split(self._drop)
        delay, delay_out, delay_in = _split(self._delay)
        return FaultStatus(
            cut_all=None in cut_both,
            cut=frozenset(p for p in cut_both if p is not None),
            drop=drop,
            delay=delay,
            log=tuple(self._log),
            cut_all_out=(None, Direction.OUT) in one_way,
            cut_all_in=(None, Direction.IN) in one_way,
            cut_out=frozenset(p for p, d in one_way if p is not None and d is Direction.OUT),
            cut_in=frozenset(p for p, d in one_way if p is not None and d is Direction.IN),
            drop_out=drop_out, drop_in=drop_in, delay_out=delay_out, delay_in=delay_in,
        )

    @property
    def log(self) -> tuple[LogEntry, ...]:
        return tuple(self._log)

    # -- the transport's calls --------------------------------------------------

    def is_active(self) -> bool:
        return bool(self._cut or self._drop or self._delay or self._lines)

    def judge(self, peer: int, direction: Direction = Direction.OUT) -> float | None:
        """One message with `peer` going `direction`: None to drop it, else the delay in seconds."""
        cut = self._cut
        if cut and ((peer, direction) in cut or (None, direction) in cut):
            return None
        key = (peer, direction)
        rate = self._drop.get(key, self._drop.get((None, direction), 0.0))
        if rate and self._rng.random() < rate:
            return None
        rule = self._delay.get(key, self._delay.get((None, direction)))
        if rule is None:
            return 0.0
        ms, jitter = rule
        extra = self._rng.uniform(0, jitter) if jitter else 0.0
        return (ms + extra) / 1000.0

    def filter(self, peer: int, direction: Direction, items: Sequence[T],
               deliver: Callable[[list[T]], None],
               on_drop: Callable[[T], None] | None = None) -> None:
        """Pass `items` (messages with `peer`) through the faults to `deliver`.

        What passes at once is delivered in one call, before this returns;
        delayed items come later from the event loop, in order; dropped items
        go to `on_drop` (a snapshot sender must be told its send failed).
        """
        if not self.is_active():
            if items:
                deliver(list(items))
            return
        key = (peer, direction)
        line = self._lines.get(key)
        now_batch: list[T] = []
        loop = None
        for item in items:
            verdict = self.judge(peer, direction)
            if verdict is None:
                self.dropped += 1
                if on_drop is not None:
                    on_drop(item)
                continue
            if verdict == 0.0 and (line is None or not line):
                now_batch.append(item)
                continue
            # Delayed, or queued behind something delayed (TCP keeps order).
            if loop is None:
                loop = asyncio.get_running_loop()
            if line is None:
                line = self._lines[key] = _DelayLine(loop)
            if now_batch:
                # Items that passed before the first delayed one go first.
                deliver(now_batch)
                now_batch = []
            self.delayed += 1
            line.push(loop.time() + verdict, item, deliver)
        if now_batch:
            deliver(now_batch)
        self._forget_empty_lines()

    def cancel_pending(self) -> list:
        """Forget every delayed message (the transport is closing); returns
        them, so the caller can release what they hold (snapshot files)."""
        dropped: list = []
        for line in self._lines.values():
            dropped.extend(line.cancel())
        self._lines.clear()
        return dropped

    def _forget_empty_lines(self) -> None:
        # Empty lines are dropped so an idle filter goes back to the fast path.
        if self._lines:
            for key in [k for k, line in self._lines.items() if not line]:
                del self._lines[key]

    def _record(self, what: str) -> None:
        self._log.append(LogEntry(self._clock(), what))


def check_peers(peers: Iterable[int]) -> set[int]:
    """The ids a call names, checked: some, at most MAX_PEERS, all positive."""
    if isinstance(peers, (set, frozenset, list, tuple)) and len(peers) > MAX_PEERS:
        raise ValueError(f"at most {MAX_PEERS} peers per call, got {len(peers)}")
    out = set(peers)
    if not out:
        raise ValueError("no peers given (use None for all peers)")
    if len(out) > MAX_PEERS:
        raise ValueError(f"at most {MAX_PEERS} peers per call, got {len(out)}")
    if any(p <= 0 for p in out):
        raise ValueError("member ids are positive")
    return out


def _rule_keys(peers: set[int] | None, direction: Direction | None = None) -> list[Key]:
    ids = [None] if peers is None else sorted(check_peers(peers))
    return [(p, d) for p in ids for d in _directions(direction)]
