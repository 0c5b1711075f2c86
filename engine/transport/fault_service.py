"""The Fault gRPC service: the console's handle on a member's FaultFilter.

WARNING: fault injection must never be exposed on a production network.
Anyone who can reach this service can partition the member from its
cluster, drop or delay its traffic, and so make the cluster unavailable.
The node registers it only when started with --enable-fault-injection,
and it is meant for local clusters on loopback, such as the ones raftui
hosts. Faults are in memory only: Heal or a restart undoes them.
"""
from __future__ import annotations

from typing import Awaitable, Callable

import grpc
import grpc.aio

from engine.auth import errors as auth_errors
from engine.proto import fault_pb2, fault_pb2_grpc
from engine.transport.faults import FaultFilter

# Who may use the service: awaited first in every RPC with the call's
# context; raises an AuthError to refuse (with auth on: root only).
Admit = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


class FaultServicer(fault_pb2_grpc.FaultServicer):
    """Thin: validate, call the filter, answer with the resulting status."""

    def __init__(self, faults: FaultFilter, member_id: int, admit: Admit | None = None) -> None:
        self._faults = faults
        self._member_id = member_id
        self._admit = admit

    async def _admitted(self, context) -> None:
        if self._admit is not None:
            try:
                await self._admit(context)
            except auth_errors.AuthError as e:
                await context.abort(*auth_errors.status_of(e))

    async def _selected(self, request, context) -> set[int] | None:
        await self._admitted(context)
        if request.all:
            if request.peers:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "give either all or peers, not both")
            return None
        if not request.peers:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "no peers given (set all to affect every peer)")
        if any(p == 0 for p in request.peers):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "member ids are non-zero")
        return set(request.peers)

    async def Cut(self, request, context):
        self._faults.cut(await self._selected(request, context))
        return self._status()

    async def Heal(self, request, context):
        await self._admitted(context)
        self._faults.heal()
        return self._status()

    async def Drop(self, request, context):
        peers = await self._selected(request, context)
        if not 0.0 <= request.rate <= 1.0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"drop rate must be between 0 and 1, got {request.rate:g}")
        self._faults.drop(request.rate, peers)
        return self._status()

    async def Delay(self, request, context):
        peers = await self._selected(request, context)
        self._faults.delay(request.ms, request.jitter_ms, peers)
        return self._status()

    async def Status(self, request, context):
        await self._admitted(context)
        return self._status()

    def _status(self) -> fault_pb2.FaultStatus:
        return status_to_proto(self._faults, self._member_id)


def status_to_proto(faults: FaultFilter, member_id: int) -> fault_pb2.FaultStatus:
    st = faults.status()
    out = fault_pb2.FaultStatus(member_id=member_id, cut_all=st.cut_all, cut=sorted(st.cut))
    for peer, rate in st.drop.items():
        out.drops.add(all=peer is None, peer=peer or 0, rate=rate)
    for peer, (ms, jitter) in st.delay.items():
        out.delays.add(all=peer is None, peer=peer or 0, ms=ms, jitter_ms=jitter)
    for entry in st.log:
        out.log.add(unix_nanos=int(entry.unix_time * 1e9), what=entry.what)
    return out


def add_fault_service(server: grpc.aio.Server, faults: FaultFilter, member_id: int,
                      admit: Admit | None = None) -> None:
    """Register the Fault service. Only for --enable-fault-injection (see
    above); ``admit`` decides who may call it (see Admit)."""
    fault_pb2_grpc.add_FaultServicer_to_server(FaultServicer(faults, member_id, admit), server)
