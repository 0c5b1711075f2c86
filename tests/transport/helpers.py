"""Members with a real grpc.aio peer server on 127.0.0.1, for transport tests.

pytest-asyncio is not installed: each test is a plain function that calls
`run(coro)`. Waiting is always for a condition, with a deadline.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from engine.proto import raft_pb2 as raftpb
from engine.transport import PeerTransport, add_peer_service, make_server
from engine.transport.faults import FaultFilter
from engine.transport.transport import peer_port

T = TypeVar("T")
CLUSTER = 0x1C1
HOST = "127.0.0.1"


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition", poll: Callable[[], None] | None = None) -> None:
    """Wait until cond() holds; `poll` runs every round (e.g. a heartbeat)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        if poll is not None:
            poll()
        await asyncio.sleep(0.01)


def msg(to: int, frm: int, index: int = 0, type_=raftpb.MsgApp, term: int = 1,
        **kw) -> raftpb.Message:
    return raftpb.Message(type=type_, to=to, from_=frm, term=term, index=index, **kw)


class Member:
    """One member's transport and peer server, recording every callback."""

    def __init__(self, member_id: int, cluster_id: int = CLUSTER, *,
                 faults: FaultFilter | None = None, peer_port: bool = True) -> None:
        # peer_port: the port as raftnode serves it (plain-TCP raft streams,
        # gRPC behind it); False: the gRPC server alone (a member that only
        # speaks Peer.Stream, which dialers fall back to).
        self.id = member_id
        self.use_peer_port = peer_port
        self.front = None
        self.cluster_id = cluster_id
        self.faults = faults
        self.batches: list[list[raftpb.Message]] = []
        self.unreachable: list[int] = []
        self.snap_status: list[tuple[int, bool]] = []
        self.transport: PeerTransport | None = None
        self.server = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def received(self) -> list[raftpb.Message]:
        return [m for b in self.batches for m in b]

    def indexes_from(self, frm: int) -> list[int]:
        return [m.index for m in self.received if m.from_ == frm]

    async def start(self, port: int = 0) -> "Member":
        if self.transport is None:
            self.transport = PeerTransport(
                self.id, self.cluster_id, self.batches.append, self.unreachable.append,
                lambda peer, ok: self.snap_status.append((peer, ok)), faults=self.faults)
        await self.start_server(port or self.port)
        return self

    async def start_server(self, port: int = 0) -> None:
        self.server = make_server()
        add_peer_service(self.server, self.transport)
        if not self.use_peer_port:
            self.port = self.server.add_insecure_port(f"{HOST}:{port}")
            assert self.port, "could not bind"
            await self.server.start()
            return
        internal = self.server.add_insecure_port(f"{HOST}:0")
        assert internal, "could not bind"
        await self.server.start()
        self.front = peer_port(self.transport, internal)
        self.port = await self.front.listen(HOST, port)

    async def stop_server(self) -> None:
        if self.front is not None:
            await self.front.close()
            self.front = None
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        await self.stop_server()


async def cluster(n: int, faults: dict[int, FaultFilter] | None = None) -> list[Member]:
    """n members (ids 1..n), each knowing all others; `faults` by member id."""
    faults = faults or {}
    members = [await Member(i, faults=faults.get(i)).start() for i in range(1, n + 1)]
    for a in members:
        for b in members:
            if a is not b:
                a.transport.add_peer(b.id, [b.url])
    return members


async def close_all(members: list[Member]) -> None:
    for m in members:
        await m.close()
