"""Futures the loop resolves: one per proposal (by request id), and readers
waiting for the applied index to reach a point."""
from __future__ import annotations

import asyncio
import heapq
import itertools


class Waiters:
    def __init__(self) -> None:
        self._by_id: dict[int, asyncio.Future] = {}
        self._applied: list[tuple[int, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def register(self, req_id: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._by_id[req_id] = fut
        return fut

    def waiting(self, req_id: int) -> bool:
        """True while someone still waits for req_id's result."""
        fut = self._by_id.get(req_id)
        return fut is not None and not fut.done()

    def forget(self, req_id: int) -> None:
        self._by_id.pop(req_id, None)

    def trigger(self, req_id: int, result) -> None:
        fut = self._by_id.pop(req_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def wait_applied(self, index: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied, (index, next(self._seq), fut))
        return fut

    def applied_to(self, index: int) -> None:
        q = self._applied
        while q and q[0][0] <= index:
            _, _, fut = heapq.heappop(q)
            if not fut.done():
                fut.set_result(index)

    def fail_all(self, exc: Exception) -> None:
        for fut in self._by_id.values():
            if not fut.done():
                fut.set_exception(exc)
        self._by_id.clear()
        for _, _, fut in self._applied:
            if not fut.done():
                fut.set_exception(exc)
        self._applied.clear()
