"""Network faults through raftnode's Fault service (engine/proto/fault.proto).

Faults are per member: Cut on member X stops X's traffic with the listed
peers in both directions (or one: a one-way cut), so cutting one side of a
partition is enough; the console still cuts both sides, so a partition
holds even if one member's rule is lost (that member restarted). Real etcd has no Fault service: every
call fails with UNIMPLEMENTED and the console says so in one line.
"""
from __future__ import annotations

import asyncio
import dataclasses

import grpc

from . import errors
from .connection import Stubs
from .model import ActionResult

FAULT_DEADLINE = 2.0
NO_FAULT_SERVICE = "network faults need raftnode's Fault service (attached to etcd?)"


OUT, IN = "out", "in"
EVERY = 0            # the peer key of an all-peers rule


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one member does to its traffic with one peer, one way."""
    cut: bool = False
    drop: float = 0.0                # 0..1
    delay_ms: int = 0

    @property
    def active(self) -> bool:
        return self.cut or bool(self.drop) or bool(self.delay_ms)


@dataclasses.dataclass(frozen=True)
class FaultView:
    """One member's faults, as polled. Rules are keyed (peer id, or EVERY for
    the rule of every peer without its own; OUT what it sends, IN what it
    receives), as the member's FaultFilter keeps them."""
    cuts: frozenset[tuple[int, str]] = frozenset()
    drops: tuple[tuple[tuple[int, str], float], ...] = ()
    delays: tuple[tuple[tuple[int, str], int], ...] = ()

    def rule(self, peer: int, direction: str) -> Rule:
        drops, delays = dict(self.drops), dict(self.delays)
        return Rule(
            cut=(peer, direction) in self.cuts or (EVERY, direction) in self.cuts,
            drop=drops.get((peer, direction), drops.get((EVERY, direction), 0.0)),
            delay_ms=delays.get((peer, direction), delays.get((EVERY, direction), 0)),
        )

    def cuts_every(self, direction: str) -> bool:
        return (EVERY, direction) in self.cuts

    @property
    def active(self) -> bool:
        return bool(self.cuts or self.drops or self.delays)

    @property
    def drop(self) -> float:
        """The heaviest drop rule, any peer, any way (the member's one-line summary)."""
        return max((r for _, r in self.drops), default=0.0)

    @property
    def delay_ms(self) -> int:
        return max((ms for _, ms in self.delays), default=0)


def _ways(direction: int) -> tuple[str, ...]:
    pb = _pb()
    return {pb.OUT: (OUT,), pb.IN: (IN,)}.get(direction, (OUT, IN))


def view_of(st) -> FaultView:
    """A FaultStatus answer as a FaultView (a member without directions sends BOTH-way fields only)."""
    cuts = set()
    for flag, ways in ((st.cut_all, (OUT, IN)), (getattr(st, "cut_all_out", False), (OUT,)),
                       (getattr(st, "cut_all_in", False), (IN,))):
        if flag:
            cuts.update((EVERY, w) for w in ways)
    for peers, ways in ((st.cut, (OUT, IN)), (getattr(st, "cut_out", ()), (OUT,)),
                        (getattr(st, "cut_in", ()), (IN,))):
        cuts.update((p, w) for p in peers for w in ways)
    drops = {((EVERY if r.all else r.peer), w): r.rate for r in st.drops for w in _ways(r.direction)}
    delays = {((EVERY if r.all else r.peer), w): r.ms for r in st.delays for w in _ways(r.direction)}
    return FaultView(frozenset(cuts), tuple(sorted(drops.items())), tuple(sorted(delays.items())))


def _pb():
    from engine.proto import fault_pb2
    return fault_pb2


def _unavailable(exc: BaseException) -> bool:
    return errors.is_unimplemented(exc)


async def status(stubs: Stubs, deadline: float) -> FaultView | None | bool:
    """FaultView, False when the member has no Fault service, None on failure."""
    if stubs.fault is None:
        return False
    try:
        st = await stubs.fault.Status(_pb().FaultStatusRequest(), timeout=deadline)
    except grpc.aio.AioRpcError as exc:
        return False if _unavailable(exc) else None
    return view_of(st)


async def _each(calls: list[tuple[str, object]]) -> ActionResult | None:
    """Run (label, awaitable) pairs concurrently; the first failure as an ActionResult."""
    results = await asyncio.gather(*(c for _, c in calls), return_exceptions=True)
    for (label, _), r in zip(calls, results):
        if isinstance(r, BaseException):
            if _unavailable(r):
                return ActionResult.fail(NO_FAULT_SERVICE)
            return ActionResult.fail(f"{label}: {errors.describe(r)}")
    return None


async def partition(side_a: list[tuple[Stubs, int]], side_b: list[tuple[Stubs, int]],
                    label: str) -> ActionResult:
    """Cut every member of side A from every member of side B (both sides told)."""
    if not side_a or any(s.fault is None for s, _ in side_a + side_b):
        return ActionResult.fail(NO_FAULT_SERVICE)
    pb = _pb()
    ids_a = [i for _, i in side_a]
    ids_b = [i for _, i in side_b]
    calls = [(f"cut {s.endpoint}", s.fault.Cut(pb.CutRequest(peers=ids_b), timeout=FAULT_DEADLINE))
             for s, _ in side_a]
    calls += [(f"cut {s.endpoint}", s.fault.Cut(pb.CutRequest(peers=ids_a), timeout=FAULT_DEADLINE))
              for s, _ in side_b]
    failed = await _each(calls)
    return failed or ActionResult(True, f"partitioned {label}")


async def heal(members: list[Stubs]) -> ActionResult:
    if any(s.fault is None for s in members):
        return ActionResult.fail(NO_FAULT_SERVICE)
    pb = _pb()
    failed = await _each([(f"heal {s.endpoint}", s.fault.Heal(pb.HealRequest(), timeout=FAULT_DEADLINE))
                          for s in members])
    return failed or ActionResult(True, f"healed {len(members)} member(s)")


async def drop_delay(stubs: Stubs, name: str, drop_percent: int, delay_ms: int) -> ActionResult:
    if stubs.fault is None:
        return ActionResult.fail(NO_FAULT_SERVICE)
    pb = _pb()
    failed = await _each([
        (f"drop on {name}", stubs.fault.Drop(pb.DropRequest(all=True, rate=drop_percent / 100.0),
                                             timeout=FAULT_DEADLINE)),
        (f"delay on {name}", stubs.fault.Delay(pb.DelayRequest(all=True, ms=delay_ms),
                                               timeout=FAULT_DEADLINE)),
    ])
    return failed or ActionResult(True, f"{name}: dropping {drop_percent}% and delaying {delay_ms} ms "
                                        "of its peer messages")


# ------------------------------------------------------------- one directed link
# The link a->b is a's OUT to b and b's IN from a. A cut is told to both ends
# (each one's fault status shows it, and it holds if one end restarts); a
# drop or delay is set where the message leaves (a's OUT) and b's IN rule for
# a cleared, so the link carries exactly the value asked for, not two compounded.

@dataclasses.dataclass(frozen=True)
class End:
    stubs: Stubs
    id: int
    view: FaultView | None           # as last polled (None: not known)


async def _call(label: str, coro) -> ActionResult | None:
    return await _each([(label, coro)])


async def _uncut_one(end: End, peer: int, direction: str, members: list[int]) -> ActionResult | None:
    """Take back `end`'s cut with `peer` one way. An all-peers cut that way is
    rewritten first as one cut per other member (of `members`), so only this link opens."""
    pb = _pb()
    way = pb.OUT if direction == OUT else pb.IN
    fault = end.stubs.fault
    if end.view is not None and end.view.cuts_every(direction):
        failed = await _call(f"uncut on {end.stubs.endpoint}",
                             fault.Uncut(pb.CutRequest(all=True, direction=way), timeout=FAULT_DEADLINE))
        if failed:
            return failed
        keep = [o for o in members if o not in (peer, end.id)]
        if keep:
            failed = await _call(f"cut on {end.stubs.endpoint}",
                                 fault.Cut(pb.CutRequest(peers=keep, direction=way), timeout=FAULT_DEADLINE))
            if failed:
                return failed
    return await _call(f"uncut on {end.stubs.endpoint}",
                       fault.Uncut(pb.CutRequest(peers=[peer], direction=way), timeout=FAULT_DEADLINE))


async def link_cut(src: End, dst: End, cut: bool, label: str, others: list[int]) -> ActionResult:
    """Cut (or open) the directed link src->dst, told to both ends.
    `others`: every member id but the two (to rewrite an all-peers cut)."""
    if src.stubs.fault is None or dst.stubs.fault is None:
        return ActionResult.fail(NO_FAULT_SERVICE)
    pb = _pb()
    if cut:
        failed = await _each([
            (f"cut on {src.stubs.endpoint}", src.stubs.fault.Cut(
                pb.CutRequest(peers=[dst.id], direction=pb.OUT), timeout=FAULT_DEADLINE)),
            (f"cut on {dst.stubs.endpoint}", dst.stubs.fault.Cut(
                pb.CutRequest(peers=[src.id], direction=pb.IN), timeout=FAULT_DEADLINE)),
        ])
        return failed or ActionResult(True, f"cut {label} (one way)")
    results = await asyncio.gather(_uncut_one(src, dst.id, OUT, others + [src.id, dst.id]),
                                   _uncut_one(dst, src.id, IN, others + [src.id, dst.id]))
    failed = next((r for r in results if r is not None), None)
    return failed or ActionResult(True, f"opened {label}")


async def link_drop_delay(src: End, dst: End, label: str, drop_percent: int | None = None,
                          delay_ms: int | None = None) -> ActionResult:
    """Set the drop rate or the delay of the directed link src->dst (at src, OUT)."""
    if src.stubs.fault is None or dst.stubs.fault is None:
        return ActionResult.fail(NO_FAULT_SERVICE)
    pb = _pb()
    calls = []
    if drop_percent is not None:
        calls += [(f"drop on {src.stubs.endpoint}", src.stubs.fault.Drop(
                       pb.DropRequest(peers=[dst.id], direction=pb.OUT, rate=drop_percent / 100.0),
                       timeout=FAULT_DEADLINE)),
                  (f"drop on {dst.stubs.endpoint}", dst.stubs.fault.Drop(
                       pb.DropRequest(peers=[src.id], direction=pb.IN, rate=0.0), timeout=FAULT_DEADLINE))]
        what = f"dropping {drop_percent}%"
    if delay_ms is not None:
        calls += [(f"delay on {src.stubs.endpoint}", src.stubs.fault.Delay(
                       pb.DelayRequest(peers=[dst.id], direction=pb.OUT, ms=delay_ms), timeout=FAULT_DEADLINE)),
                  (f"delay on {dst.stubs.endpoint}", dst.stubs.fault.Delay(
                       pb.DelayRequest(peers=[src.id], direction=pb.IN, ms=0), timeout=FAULT_DEADLINE))]
        what = f"delaying {delay_ms} ms"
    failed = await _each(calls)
    return failed or ActionResult(True, f"{label}: {what} of its messages")
