"""Network faults through raftnode's Fault service (engine/proto/fault.proto).

Faults are per member: Cut on member X stops X's traffic with the listed
peers in both directions, so cutting one side of a partition is enough; the
console still cuts both sides, so a partition holds even if one member's
rule is lost (that member restarted). Real etcd has no Fault service: every
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


@dataclasses.dataclass(frozen=True)
class FaultView:
    """One member's faults, as polled: cut from whom, dropping, delaying."""
    cut_all: bool = False
    cut: tuple[int, ...] = ()
    drop: float = 0.0
    delay_ms: int = 0

    @property
    def partitioned(self) -> bool:
        return self.cut_all or bool(self.cut)


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
    drop = max((r.rate for r in st.drops), default=0.0)
    delay = max((r.ms for r in st.delays), default=0)
    return FaultView(st.cut_all, tuple(st.cut), drop, delay)


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
