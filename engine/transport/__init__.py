"""Peer transport between members, and the fault filter that can break it."""
from engine.transport.faults import FaultFilter, FaultStatus
from engine.transport.transport import (
    PeerStatus,
    PeerTransport,
    add_peer_service,
    make_server,
)

__all__ = ["FaultFilter", "FaultStatus", "PeerStatus", "PeerTransport",
           "add_peer_service", "make_server"]
