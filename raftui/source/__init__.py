"""UI-free data layer: gRPC calls to etcd-compatible members -> plain frozen dataclasses.

Nothing in this package may import textual (tests/console/test_layers.py checks).
"""
from . import links, recovery, txn
from .cluster_source import ClusterSource
from .connection import TlsFiles, parse_endpoints
from .model import ActionResult, ClusterState, KeyPage, KeyValue, Member, TimelineLine

__all__ = ["links", "recovery", "txn", "ClusterSource", "TlsFiles", "parse_endpoints", "ActionResult", "ClusterState",
           "KeyPage", "KeyValue", "Member", "TimelineLine"]
