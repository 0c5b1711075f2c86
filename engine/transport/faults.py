"""The fault filter: cut, drop and delay traffic with chosen peers.

One filter sits in a member's transport and judges every message twice:
when it is sent to a peer and when it arrives from one. Because of that a
cut told to only one member still stops traffic in both directions: its own
messages are not sent, and whatever the other side sends is thrown away on
arrival.

Rules, per peer, with "all peers" as the fallback for peers without a rule
of their own:

- cut: everything is dropped. `cut(None)` cuts every peer, `cut({2, 3})`
  adds those peers to the cut set.
- drop(rate): each message is dropped with probability `rate`.
- delay(ms, jitter_ms): each message is delivered `ms` plus a uniform draw
  from [0, jitter_ms] later. The transport's real stream is TCP, which never
  reorders, so delayed messages keep their order per peer and direction:
  a message is never released before one that was queued ahead of it.

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


class Direction(enum.Enum):
    OUT = "out"
    IN = "in"


@dataclasses.dataclass(frozen=True)
class LogEntry:
    unix_time: float
    what: str


@dataclasses.dataclass(frozen=True)
class FaultStatus:
    """The active faults. A key of None in `drop`/`delay` is the all-peers rule."""
    cut_all: bool
    cut: frozenset[int]
    drop: dict[int | None, float]
    delay: dict[int | None, tuple[int, int]]   # peer -> (ms, jitter_ms)
    log: tuple[LogEntry, ...]

    @property
    def active(self) -> bool:
        return self.cut_all or bool(self.cut or self.drop or self.delay)

    def describe(self) -> str:
        if not self.active:
            return "no faults"
        parts = []
        if self.cut_all:
            parts.append("cut all")
        if self.cut:
            parts.append(f"cut {sorted(self.cut)}")
        for peer, rate in sorted(self.drop.items(), key=_rule_order):
            parts.append(f"drop {rate:g} {_peer_text(peer)}")
        for peer, (ms, jitter) in sorted(self.delay.items(), key=_rule_order):
            parts.append(f"delay {ms}ms+{jitter}ms {_peer_text(peer)}")
        return ", ".join(parts)


def _rule_order(item: tuple[int | None, object]) -> int:
    return -1 if item[0] is None else item[0]


def _peer_text(peer: int | None) -> str:
    return "all" if peer is None else f"peer {peer}"


def _peers_text(peers: set[int] | None) -> str:
    return "peers=all" if peers is None else f"peers={sorted(peers)}"


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
        self._cut_all = False
        self._cut: set[int] = set()
        self._drop: dict[int | None, float] = {}
        self._delay: dict[int | None, tuple[int, int]] = {}
        self._log: collections.deque[LogEntry] = collections.deque(maxlen=LOG_LIMIT)
        self._lines: dict[tuple[int, Direction], _DelayLine] = {}
        # Counters for the console and for tests.
        self.dropped = 0
        self.delayed = 0

    # -- the operator's calls ---------------------------------------------------

    def cut(self, peers: set[int] | None = None) -> None:
        """Stop all traffic with `peers` (None: every peer), both directions."""
        if peers is None:
            self._cut_all = True
        else:
            self._cut.update(_check_peers(peers))
        self._record(f"cut {_peers_text(peers)}")

    def heal(self) -> None:
        """Remove every fault. Messages already held by a delay still arrive
        on time: they are in flight, and a real network would deliver them."""
        self._cut_all = False
        self._cut.clear()
        self._drop.clear()
        self._delay.clear()
        self._record("heal")

    def drop(self, rate: float, peers: set[int] | None = None) -> None:
        """Drop the fraction `rate` (0..1) of messages with `peers`; 0 removes."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"drop rate must be between 0 and 1, got {rate}")
        for key in _rule_keys(peers):
            if rate == 0.0:
                self._drop.pop(key, None)
            else:
                self._drop[key] = rate
        self._record(f"drop rate={rate:g} {_peers_text(peers)}")

    def delay(self, ms: int, jitter_ms: int = 0, peers: set[int] | None = None) -> None:
        """Deliver messages with `peers` `ms` (+ up to `jitter_ms`) late; 0 removes."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0 ms")
        for key in _rule_keys(peers):
            if ms == 0 and jitter_ms == 0:
                self._delay.pop(key, None)
            else:
                self._delay[key] = (ms, jitter_ms)
        self._record(f"delay ms={ms} jitter_ms={jitter_ms} {_peers_text(peers)}")

    def status(self) -> FaultStatus:
        return FaultStatus(
            cut_all=self._cut_all,
            cut=frozenset(self._cut),
            drop=dict(self._drop),
            delay=dict(self._delay),
            log=tuple(self._log),
        )

    @property
    def log(self) -> tuple[LogEntry, ...]:
        return tuple(self._log)

    # -- the transport's calls --------------------------------------------------

    def is_active(self) -> bool:
        return self._cut_all or bool(self._cut or self._drop or self._delay or self._lines)

    def judge(self, peer: int) -> float | None:
        """One message with `peer`: None to drop it, else the delay in seconds."""
        if self._cut_all or peer in self._cut:
            return None
        rate = self._drop.get(peer, self._drop.get(None, 0.0))
        if rate and self._rng.random() < rate:
            return None
        rule = self._delay.get(peer, self._delay.get(None))
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
            verdict = self.judge(peer)
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


def _check_peers(peers: Iterable[int]) -> set[int]:
    out = set(peers)
    if not out:
        raise ValueError("no peers given (use None for all peers)")
    if any(p <= 0 for p in out):
        raise ValueError("member ids are positive")
    return out


def _rule_keys(peers: set[int] | None) -> list[int | None]:
    return [None] if peers is None else sorted(_check_peers(peers))
