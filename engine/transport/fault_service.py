"""The Fault gRPC service: the console's handle on a member's FaultFilter.

WARNING: fault injection must never be exposed on a production network.
Anyone who can reach this service can partition the member from its
cluster, drop or delay its traffic, and so make the cluster unavailable.
The node registers it only when started with --enable-fault-injection,
and it is meant for local clusters on loopback, such as the ones raftui
hosts. Faults are in memory only: Heal or a restart undoes them.
"""
from __future__ import annotations

from typing import Awaitable, Callable, Iterable

import grpc
import grpc.aio

from engine.auth import errors as auth_errors
from engine.proto import fault_pb2, fault_pb2_grpc
from engine.transport.faults import MAX_PEERS, Direction, FaultFilter

# Who may use the service: awaited first in every RPC with the call's
# context; raises an AuthError to refuse (with auth on: root only).
Admit = Callable[[grpc.aio.ServicerContext], Awaitable[None]]
# The member ids this member knows as its peers now (the transport's); a
# request naming any other id is refused. None: not checked.
KnownPeers = Callable[[], Iterable[int]]

_DIRECTION = {fault_pb2.BOTH: None, fault_pb2.OUT: Direction.OUT, fault_pb2.IN: Direction.IN}


class FaultServicer(fault_pb2_grpc.FaultServicer):
    """Thin: validate, call the filter, answer with the resulting status."""

    def __init__(self, faults: FaultFilter, member_id: int, admit: Admit | None = None,
                 known_peers: KnownPeers | None = None) -> None:
        self._faults = faults
        self._member_id = member_id
        self._admit = admit
        self._known_peers = known_peers

    async def _admitted(self, context) -> None:
        if self._admit is not None:
            try:
                await self._admit(context)
            except auth_errors.AuthError as e:
                await context.abort(*auth_errors.status_of(e))

    async def _selected(self, request, context) -> tuple[set[int] | None, Direction | None]:
        """The peers and direction a request names, or the call aborted with
        INVALID_ARGUMENT (checked before anything is stored)."""
        await self._admitted(context)
        if request.direction not in _DIRECTION:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"unknown direction {request.direction} (BOTH, OUT or IN)")
        direction = _DIRECTION[request.direction]
        if request.all:
            if request.peers:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "give either all or peers, not both")
            return None, direction
        if not request.peers:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "no peers given (set all to affect every peer)")
        if len(request.peers) > MAX_PEERS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"at most {MAX_PEERS} peers per request, got {len(request.peers)}")
        peers = set(request.peers)
        if 0 in peers:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "member ids are non-zero")
        if self._member_id in peers:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"member {self._member_id:x} has no link to itself")
        if self._known_peers is not None:
            strangers = peers - set(self._known_peers())
            if strangers:
                shown = ", ".join(f"{p:x}" for p in sorted(strangers)[:8])
                more = f" and {len(strangers) - 8} more" if len(strangers) > 8 else ""
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"not a peer of member {self._member_id:x}: {shown}{more}")
        return peers, direction

    async def Cut(self, request, context):
        peers, direction = await self._selected(request, context)
        self._faults.cut(peers, direction)
        return self._status()

    async def Uncut(self, request, context):
        peers, direction = await self._selected(request, context)
        self._faults.uncut(peers, direction)
        return self._status()

    async def Heal(self, request, context):
        await self._admitted(context)
        self._faults.heal()
        return self._status()

    async def Drop(self, request, context):
        peers, direction = await self._selected(request, context)
        if not 0.0 <= request.rate <= 1.0:     # NaN fails this too
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"drop rate must be between 0 and 1, got {request.rate:g}")
        self._faults.drop(request.rate, peers, direction)
        return self._status()

    async def Delay(self, request, context):
        peers, direction = await self._selected(request, context)
        self._faults.delay(request.ms, request.jitter_ms, peers, direction)
        return self._status()

    async def Status(self, request, context):
        await self._admitted(context)
        return self._status()

    def _status(self) -> fault_pb2.FaultStatus:
        return status_to_proto(self._faults, self._member_id)


def status_to_proto(faults: FaultFilter, member_id: int) -> fault_pb2.FaultStatus:
    st = faults.status()
    out = fault_pb2.FaultStatus(member_id=member_id, cut_all=st.cut_all, cut=sorted(st.cut),
                                cut_all_out=st.cut_all_out, cut_all_in=st.cut_all_in,
                                cut_out=sorted(st.cut_out), cut_in=sorted(st.cut_in))
    for rules, way in ((st.drop, fault_pb2.BOTH), (st.drop_out, fault_pb2.OUT), (st.drop_in, fault_pb2.IN)):
        for peer, rate in rules.items():
            out.drops.add(all=peer is None, peer=peer or 0, rate=rate, direction=way)
    for rules, way in ((st.delay, fault_pb2.BOTH), (st.delay_out, fault_pb2.OUT),
                       (st.delay_in, fault_pb2.IN)):
        for peer, (ms, jitter) in rules.items():
            out.delays.add(all=peer is None, peer=peer or 0, ms=ms, jitter_ms=jitter, direction=way)
    for entry in st.log:
        out.log.add(unix_nanos=int(entry.unix_time * 1e9), what=entry.what)
    return out


def add_fault_service(server: grpc.aio.Server, faults: FaultFilter, member_id: int,
                      admit: Admit | None = None, known_peers: KnownPeers | None = None) -> None:
    """Register the Fault service. Only for --enable-fault-injection (see
    above); ``admit`` decides who may call it (see Admit); ``known_peers``,
    when given, refuses requests naming ids that are not this member's peers."""
    fault_pb2_grpc.add_FaultServicer_to_server(FaultServicer(faults, member_id, admit, known_peers),
                                               server)
