"""Guided maintenance: NOSPACE recovery and a safe rolling defrag, as steps
with progress.

NOSPACE recovery is etcd's documented procedure (op-guide/maintenance.md,
"Space quota") in one go:

    0. check that every member answers (nothing is changed otherwise)
    1. compact the history up to the current revision
    2. defragment every member, one at a time, the leader last, waiting after
       each for it to answer again and catch up with the leader
    3. disarm the alarms
    4. check that a write goes through (a probe key put, then deleted)

A rolling defrag is steps 0 and 2.
Both stop at the first step that fails and say why; nothing after it runs.
The leader goes last so the cluster changes leader at most once, at the end,
and the members defragmented first are there to take over if it must.

Each call has its own deadline (the ClusterSource's), the waits theirs
(CATCH_UP_WITHIN). No UI here: `run()` yields a new Progress after every change.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import AsyncIterator, Awaitable, Callable

from .model import ActionResult, ClusterState, Member

CATCH_UP_WITHIN = 30.0       # seconds for a defragmented member to answer and catch up
LOOK_EVERY = 0.2             # between two looks at a member catching up
PROBE_KEY = "raftui/recovery-check"


@dataclasses.dataclass(frozen=True)
class Step:
    title: str
    state: str = "pending"           # pending / running / done / failed / skipped
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Progress:
    name: str
    steps: tuple[Step, ...]
    finished: bool = False
    ok: bool | None = None           # None while running
    summary: str = ""

    @property
    def running(self) -> Step | None:
        return next((s for s in self.steps if s.state == "running"), None)


class StepFailed(Exception):
    pass


def defrag_order(state: ClusterState) -> list[Member]:
    """Every member the console knows, followers and learners first, the leader last."""
    members = [m for m in state.members if m.id > 0]
    return sorted(members, key=lambda m: (m.id == state.leader_id, m.label))


def plan_nospace(state: ClusterState) -> list[str]:
    return (["check that every member is up", "compact the history to the current revision"]
            + [f"defragment {m.label}{' (the leader, last)' if m.id == state.leader_id else ''}, "
               "then wait until it answers and has caught up" for m in defrag_order(state)]
            + ["disarm the alarms", "check that a write goes through"])


def plan_rolling(state: ClusterState) -> list[str]:
    return (["check that every member is up"]
            + [f"defragment {m.label}{' (the leader, last)' if m.id == state.leader_id else ''}, "
               "then wait until it answers and has caught up" for m in defrag_order(state)])


class Runner:
    """Runs one plan against a ClusterSource and tells its progress."""

    def __init__(self, source, name: str, titles: list[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.progress = Progress(name, tuple(Step(t) for t in titles))
        self._clock = clock

    def _set(self, index: int, **changes) -> Progress:
        steps = list(self.progress.steps)
        steps[index] = dataclasses.replace(steps[index], **changes)
        self.progress = dataclasses.replace(self.progress, steps=tuple(steps))
        return self.progress

    async def run(self, actions: list[Callable[[], Awaitable[str]]]) -> AsyncIterator[Progress]:
        """Each action does one step and returns its detail, or raises StepFailed."""
        for i, action in enumerate(actions):
            yield self._set(i, state="running")
            try:
                detail = await action()
            except StepFailed as exc:
                yield self._set(i, state="failed", detail=str(exc))
                for j in range(i + 1, len(actions)):
                    self._set(j, state="skipped")
                self.progress = dataclasses.replace(
                    self.progress, finished=True, ok=False,
                    summary=f"{self.progress.name} stopped at step {i + 1} ({self.progress.steps[i].title}): {exc}")
                yield self.progress
                return
            yield self._set(i, state="done", detail=detail)
        self.progress = dataclasses.replace(self.progress, finished=True, ok=True,
                                            summary=f"{self.progress.name}: every step done")
        yield self.progress


def _ok(result: ActionResult) -> str:
    if not result.ok:
        raise StepFailed(result.text)
    return result.text


async def _catch_up(source, member: Member, clock: Callable[[], float]) -> str:
    """Wait until `member` answers Status again and has applied what the leader
    had committed when it came back (the leader's own commit index if it is the leader)."""
    deadline = clock() + CATCH_UP_WITHIN
    target = None
    while True:
        mine = await source.status_of(member.id)
        if mine is not None and mine.ok:
            if target is None:
                leader_id = mine.leader_id
                if not leader_id:
                    target = None
                elif leader_id == member.id:
                    target = mine.commit_index
                else:
                    lead = await source.status_of(leader_id)
                    target = lead.commit_index if lead is not None and lead.ok else None
            if target is not None and mine.applied_index >= target:
                return f"answers, applied {mine.applied_index} ≥ the leader's commit {target}"
        if clock() >= deadline:
            why = (mine.error if mine is not None and not mine.ok else
                   "no leader" if target is None else f"applied {mine.applied_index} of {target}")
            raise StepFailed(f"{member.label} did not catch up within {CATCH_UP_WITHIN:g}s ({why})")
        await asyncio.sleep(LOOK_EVERY)      # between two looks at a member catching up


def _defrag_then_wait(source, member: Member, clock) -> Callable[[], Awaitable[str]]:
    async def step() -> str:
        done = _ok(await source.defrag(member.id))
        caught = await _catch_up(source, member, clock)
        return f"{done}; {caught}"
    return step


def nospace_recovery(source, state: ClusterState, clock: Callable[[], float] = time.monotonic
                     ) -> AsyncIterator[Progress]:
    """NOSPACE recovery on the cluster `state` shows (see the module's docstring)."""
    runner = Runner(source, "NOSPACE recovery", plan_nospace(state), clock)

    async def compact() -> str:
        head = await source.current_revision()
        if head is None:
            raise StepFailed("no member answered with the current revision")
        if head <= state.compact_revision:
            return f"already compacted to {state.compact_revision} (current {head})"
        result = await source.compact(head)
        if not result.ok and "required revision has been compacted" in result.text:
            return f"already compacted to {head}"
        return _ok(result)

    async def disarm() -> str:
        return _ok(await source.alarm_disarm())

    async def probe() -> str:
        stamp = f"{time.time():.3f}"
        put = await source.put(PROBE_KEY, stamp)
        if not put.ok:
            raise StepFailed(f"a write is still refused: {put.text}")
        await source.delete(PROBE_KEY)
        return f"wrote and deleted {PROBE_KEY} (revision {put.data})"

    members = defrag_order(state)
    actions = ([_all_up(source, members), compact] + [_defrag_then_wait(source, m, clock) for m in members]
               + [disarm, probe])
    return runner.run(actions)


def rolling_defrag(source, state: ClusterState, clock: Callable[[], float] = time.monotonic
                   ) -> AsyncIterator[Progress]:
    runner = Runner(source, "rolling defrag", plan_rolling(state), clock)
    members = defrag_order(state)
    actions = [_all_up(source, members)] + [_defrag_then_wait(source, m, clock) for m in members]
    return runner.run(actions)


def _all_up(source, members: list[Member]) -> Callable[[], Awaitable[str]]:
    """Every member answers and one is the leader: checked before anything is changed
    (a member that cannot be defragmented would stop the run halfway)."""
    async def step() -> str:
        answers = await asyncio.gather(*(source.status_of(m.id) for m in members))
        down = [m.label for m, st in zip(members, answers) if st is None or not st.ok]
        if down:
            raise StepFailed(f"{', '.join(down)} not answering: every member must be up")
        if not any(st.leader_id for st in answers):
            raise StepFailed("no leader")
        return f"{len(members)} members answer"
    return step
