"""Contract 3 / issue 8 "the member measures its own loop lag": the longest
gap between ticker wakeups beyond the interval, over the last few seconds
and since start, reported by Inspect.RaftStatus (loop_lag_ms,
loop_lag_max_ms) and logged when over half an election timeout."""
from __future__ import annotations

import os

import grpc

from engine.proto import inspect_pb2 as ipb
from engine.proto import inspect_pb2_grpc, rpc_pb2, rpc_pb2_grpc
from engine.server import applying as applying_mod
from engine.server import node as node_mod
from engine.server import ready_loop as ready_loop_mod

from .conftest import start_cluster, wait_for

FAULT_ENV = "RAFTNODE_TEST_FAULT"


def _raft_status(endpoint: str):
    with grpc.insecure_channel(endpoint) as ch:
        return inspect_pb2_grpc.InspectStub(ch).RaftStatus(ipb.RaftStatusRequest(), timeout=2)


def test_a_stalled_loop_shows_in_inspect_and_the_log(raftnode_binary, tmp_path):
    old = os.environ.get(FAULT_ENV)
    os.environ[FAULT_ENV] = "stall:__stall_me__"
    try:
        c = start_cluster(tmp_path / "c", 1)
    finally:
        if old is None:
            os.environ.pop(FAULT_ENV, None)
        else:
            os.environ[FAULT_ENV] = old
    try:
        m = c.members[0]
        stall_ms = applying_mod.TestFaultHook.STALL * 1000
        quiet = _raft_status(m.endpoint)
        assert quiet.loop_lag_ms < 0.8 * stall_ms, quiet.loop_lag_ms   # (a loaded test machine lags too)
        with grpc.insecure_channel(m.endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"__stall_me__", value=b"1"), timeout=10)
        st = _raft_status(m.endpoint)
        assert st.loop_lag_ms >= 0.8 * stall_ms, st
        assert st.loop_lag_max_ms >= st.loop_lag_ms
        wait_for(lambda: "event loop lag" in m.log_path.read_text(errors="replace"), 5,
                 "a warning about the loop lag")
        # The window forgets it after a few seconds; the maximum stays.
        wait_for(lambda: _raft_status(m.endpoint).loop_lag_ms < 0.8 * stall_ms, ready_loop_mod.LAG_WINDOW + 10,
                 "the lag window to move past the stall")
        assert _raft_status(m.endpoint).loop_lag_max_ms >= 0.8 * stall_ms
    finally:
        c.stop()


def test_record_lag_window_and_max():
    class Cfg:
        election_timeout_ms = 1000
    n = node_mod.Node.__new__(node_mod.Node)
    n.cfg = Cfg()
    import collections
    n._lags = collections.deque()
    n.loop_lag_max = 0.0
    n._record_lag(100.0, 0.3)
    n._record_lag(101.0, 0.01)
    assert n.loop_lag == 0.3 and n.loop_lag_max == 0.3
    n._record_lag(100.0 + ready_loop_mod.LAG_WINDOW + 0.5, -0.001)   # a negative gap counts as 0
    assert n.loop_lag == 0.01
    assert n.loop_lag_max == 0.3
