"""Pure parts of the Jepsen harness: the lost-write detector and how a gRPC
error becomes ok / fail / info."""
from __future__ import annotations

import grpc
import pytest

from tests.jepsen import harness
from tests.jepsen.test_checker import H


def test_lost_writes_none_when_final_value_is_the_last_acknowledged_write():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(1, "x", "b", 2, 3)
    assert harness.lost_writes(h.events, {"x": "b"}) == []


def test_lost_writes_superseded_by_a_concurrent_or_indeterminate_write_is_fine():
    h = H()
    h.write(1, "x", "a", 0, 10)
    h.write(2, "x", "b", 5, 6)              # overlaps a: either may be last
    h.write(3, "x", "c", 7, 8, status="info")
    assert harness.lost_writes(h.events, {"x": "a"}) == []
    assert harness.lost_writes(h.events, {"x": "c"}) == []


def test_lost_writes_reports_an_acknowledged_write_that_vanished():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(1, "x", "b", 2, 3)
    lost = harness.lost_writes(h.events, {"x": "a"})
    assert len(lost) == 1 and "write 'b'" in lost[0]
    assert harness.lost_writes(h.events, {"x": None})


def test_lost_writes_reports_values_nobody_wrote_or_that_were_refused():
    h = H()
    h.write(1, "x", "a", 0, 1)
    h.write(1, "x", "z", 2, 3, status="fail")
    assert "never written" in harness.lost_writes(h.events, {"x": "ghost"})[0]
    assert "told it failed" in harness.lost_writes(h.events, {"x": "z"})[0]


class _Err(grpc.aio.AioRpcError):
    def __init__(self, code, details):
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize("f,code,details,want", [
    ("read", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "fail"),
    ("read", grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader", "fail"),
    ("write", grpc.StatusCode.UNAVAILABLE,
     "failed to connect to all addresses; last error: UNKNOWN: Connection refused", "fail"),
    ("write", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "info"),
    ("write", grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader", "info"),
    ("write", grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out", "info"),
    ("cas", grpc.StatusCode.UNAVAILABLE, "Socket closed", "info"),
    ("cas", grpc.StatusCode.UNKNOWN, "Stream removed", "info"),
])
def test_outcome_of_errors(f, code, details, want):
    assert harness._outcome(f, _Err(code, details)) == want
