"""Linearizable reads by ReadIndex (thesis §6.4).

The leader records its commit index for a read request, confirms it is still
leader by a heartbeat round whose replies carry the request's context, and
once a majority has answered releases the read: the state machine may answer
when its applied index reaches the recorded index.
"""
from __future__ import annotations

import dataclasses

from engine.proto import raft_pb2 as pb


@dataclasses.dataclass
class ReadState:
    """A read the host may answer once applied >= index."""
    index: int
    request_ctx: bytes


@dataclasses.dataclass
class _Pending:
    req: pb.Message
    index: int
    acks: set[int]


class ReadOnly:
    def __init__(self) -> None:
        self._pending: dict[bytes, _Pending] = {}
        self._queue: list[bytes] = []

    def add_request(self, index: int, m: pb.Message) -> None:
        ctx = m.entries[0].data
        if ctx in self._pending:
            return
        self._pending[ctx] = _Pending(m, index, set())
        self._queue.append(ctx)

    def recv_ack(self, node: int, ctx: bytes) -> set[int] | None:
        p = self._pending.get(ctx)
        if p is None:
            return None
        p.acks.add(node)
        return p.acks

    def advance(self, ctx: bytes) -> list[_Pending]:
        """Release every request queued up to and including ctx: a heartbeat
        round that confirms a later request confirms the earlier ones too."""
        if ctx not in self._pending:
            return []
        i = self._queue.index(ctx)
        released = self._queue[: i + 1]
        del self._queue[: i + 1]
        return [self._pending.pop(c) for c in released]

    def last_pending_request_ctx(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def pending_count(self) -> int:
        return len(self._queue)
