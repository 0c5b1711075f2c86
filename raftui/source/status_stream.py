"""Inspect.WatchStatus on every member: raft state pushed, not polled.

A raftnode member sends its RaftStatus at once and then whenever role, term,
vote, leader, commit, applied or last index change (coalesced to one event
per 100 ms), each with the leader events recorded since the previous one
(the first carries the member's whole leader history). So elections and
term changes reach the console within ~0.1 s, short-lived states (a
candidate) are not missed, and a killed member is noticed the moment its
stream breaks -- with no fast polling.

Every stream call has a deadline (STREAM_DEADLINE) and is reopened at once
when it expires; a stream that fails is retried after RETRY seconds; a member
without the service (etcd: UNIMPLEMENTED) is not asked again. No UI here.
"""
from __future__ import annotations

import asyncio
import dataclasses
from typing import Callable, Iterable

import grpc

from . import errors, poll
from .connection import Connections

STREAM_DEADLINE = 30.0   # seconds; then the stream is reopened (the first event re-syncs)
RETRY = 0.5              # seconds before reopening a failed stream
MIN_INTERVAL_MS = 100

_KINDS = {1: "campaign", 2: "elected", 3: "lost", 4: "transfer"}


@dataclasses.dataclass(frozen=True)
class LeaderNote:
    """One LeaderEvent as one member saw it."""
    endpoint: str
    at: float            # the member's wall clock, seconds
    kind: str            # campaign / elected / lost / transfer
    term: int
    leader_id: int
    detail: str


class StatusStreams:
    def __init__(self, conns: Connections, on_change: Callable[[], None]) -> None:
        self._conns = conns
        self._on_change = on_change
        self._tasks: dict[str, asyncio.Task] = {}
        self.latest: dict[str, poll.InspectResult] = {}   # endpoint -> newest status (stream up)
        self.unsupported: set[str] = set()
        self._notes: list[LeaderNote] = []
        self._built: list[float] = []                     # members' clocks of the statuses since taken
        self._broken: dict[str, str] = {}                 # endpoint -> why its stream broke

    def ensure(self, endpoints: Iterable[str]) -> None:
        """Follow every endpoint given that is not followed yet (and may serve Inspect)."""
        for ep in endpoints:
            if ep not in self._tasks and ep not in self.unsupported:
                self._tasks[ep] = asyncio.get_running_loop().create_task(
                    self._follow(ep), name=f"raftui-watchstatus-{ep}")

    def live(self, endpoint: str) -> bool:
        return endpoint in self.latest

    def take_notes(self) -> list[LeaderNote]:
        notes, self._notes = self._notes, []
        return notes

    def take_built(self) -> list[float]:
        """When the statuses received since the last call were built, each by its
        member's clock (0 for a member that does not say)."""
        built, self._built = self._built, []
        return built

    def take_broken(self) -> dict[str, str]:
        broken, self._broken = self._broken, {}
        return broken

    async def close(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, endpoint: str) -> None:
        from engine.proto import inspect_pb2

        request = inspect_pb2.WatchStatusRequest(min_interval_ms=MIN_INTERVAL_MS)
        while True:
            call = self._conns.get(endpoint).inspect.WatchStatus(request, timeout=STREAM_DEADLINE)
            why = "status stream ended"
            try:
                async for event in call:
                    self.latest[endpoint] = view = poll.inspect_result(endpoint, event.status)
                    self._built.append(view.at)
                    self._notes.extend(
                        LeaderNote(endpoint, le.unix_nanos / 1e9, _KINDS.get(le.kind, "?"), le.term,
                                   le.leader_id, le.detail)
                        for le in event.leader_events)
                    self._on_change()
            except grpc.aio.AioRpcError as exc:
                if errors.no_inspect(exc):
                    self.unsupported.add(endpoint)
                    self.latest.pop(endpoint, None)
                    return
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue   # our own deadline: reopen at once
                why = errors.describe(exc)
            finally:
                call.cancel()
            # The member went away (killed, stopping) or refused: its last
            # status is no longer the truth.
            if self.latest.pop(endpoint, None) is not None:
                self._broken[endpoint] = why
                self._on_change()
            await asyncio.sleep(RETRY)  # reconnect pace; grpc's own backoff is capped at 1 s
