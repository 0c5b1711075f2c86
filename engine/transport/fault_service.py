"""The Fault gRPC service: the console's handle on a member's FaultFilter.

WARNING: fault injection must never be exposed on a production network.
Anyone who can reach this service can partition the member from its
cluster, drop or delay its traffic, and so make the cluster unavailable.
The node registers it only when started with --enable-fault-injection,
and it is meant for local clusters on loopback, such as the ones raftui
hosts. Faults are in memory only: Heal or a restart undoes them.
"""
from __future__ import annotations

import grpc
import grpc.aio

from engine.proto import fault_pb2, fault_pb2_grpc
from engine.transport.faults import FaultFilter


class FaultServicer(fault_pb2_grpc.FaultServicer):
    """Thin: validate, call the filter, answer with the resulting status."""

    def __init__(self, faults: FaultFilter, member_id: int) -> None:
        self._faults = faults
        self._member_id = member_id

    async def _selected(self, request, context) -> set[int] | None:
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


def add_fault_service(server: grpc.aio.Server, faults: FaultFilter, member_id: int) -> None:
    """Register the Fault service. Only for --enable-fault-injection (see above)."""
    fault_pb2_grpc.add_FaultServicer_to_server(FaultServicer(faults, member_id), server)
