"""Shared fixtures for the hardening suite (issue 8).

Real raftnode clusters from tests/support/raftnode.py: free 127.0.0.1 ports,
a leader waited for with a deadline, every member stopped by PID.

- ``hard_cluster3``: one 3-member cluster per test module (fast elections,
  watch progress notifications every 0.5 s), members' client URLs published.
- ``hard_cluster_factory``: make(size=3, extra=()) -> a fresh cluster of the
  test's own, stopped after the test (for tests that kill or reconfigure).
- ``run(coro, timeout)``: run one coroutine (grpc.aio lives inside it) with a deadline.
- ``wait_for(cond, timeout, what)``: poll a condition with a deadline (never a bare sleep).
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable, Callable, Iterator, Sequence, TypeVar

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from tests.support import raftnode as support_raftnode

T = TypeVar("T")

# Faster elections than etcd's defaults keep start-up and failover short.
FAST = ("--heartbeat-interval=50", "--election-timeout=500")
PROGRESS_ENV = "RAFTUI_WATCH_PROGRESS_NOTIFY_INTERVAL"
PROGRESS_INTERVAL = 0.5  # seconds between periodic watch progress notifications


class _progress_env:
    """Members started inside inherit the periodic progress interval of these tests."""

    def __enter__(self):
        self.old = os.environ.get(PROGRESS_ENV)
        os.environ[PROGRESS_ENV] = str(PROGRESS_INTERVAL)

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = self.old


def start_cluster(root, size: int = 3, extra: Sequence[str] = (), *,
                  fast: bool = True, timeout: float = 40.0) -> support_raftnode.RaftnodeCluster:
    """A fresh raftnode cluster under `root` whose members have published their client URLs."""
    with _progress_env():
        c = support_raftnode.start_raftnode_cluster(
            root, size=size, extra_args=(*(FAST if fast else ()), *extra), timeout=timeout)
    try:
        wait_published(c)
    except BaseException:
        c.stop()
        raise
    return c


def restart_member(c: support_raftnode.RaftnodeCluster, i: int, timeout: float = 30.0) -> None:
    """Start member i again (same argv, same data dir) and wait until it listens."""
    with _progress_env():
        c.restart(i, wait=False)
    c.wait_listening(timeout, which=[i])


def death_note(m, limit: int = 600) -> str:
    """Why a member died, from its log: the last CRITICAL/ERROR/Traceback line (or the log's tail)."""
    tail = m.log_tail(20000)
    lines = [ln for ln in tail.splitlines() if " CRITICAL " in ln or ln.startswith(("Traceback", "ValueError",
                                                                                     "AssertionError"))]
    if lines:
        return lines[-1][:limit]
    return tail[-limit:]


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `cond` until it returns something truthy (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # poll interval, not synchronisation


def wait_published(c: support_raftnode.RaftnodeCluster, timeout: float = 15.0) -> None:
    """Wait until every member has published its client URLs through the log."""
    def published():
        for ep in c.endpoints:
            try:
                with grpc.insecure_channel(ep) as ch:
                    ms = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=1).members
                if len(ms) == len(c.members) and all(m.clientURLs for m in ms):
                    return True
            except grpc.RpcError:
                continue
        return False
    wait_for(published, timeout, "members to publish their client URLs")


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Run one coroutine (grpc.aio channels live inside it) with a deadline."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


@pytest.fixture(scope="module")
def hard_cluster3(raftnode_binary, tmp_path_factory) -> Iterator[support_raftnode.RaftnodeCluster]:
    """One 3-member raftnode cluster per test module."""
    c = start_cluster(tmp_path_factory.mktemp("hard3"), 3)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def hard_cluster_factory(raftnode_binary, tmp_path_factory):
    """make(size=3, extra=(), fast=True) -> a fresh cluster of the test's own, stopped after it."""
    made: list[support_raftnode.RaftnodeCluster] = []

    def make(size: int = 3, extra: Sequence[str] = (), *, fast: bool = True) -> support_raftnode.RaftnodeCluster:
        c = start_cluster(tmp_path_factory.mktemp(f"hard{size}"), size, extra, fast=fast)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.stop()


# --------------------------------------------------------------------------- loop lag

# Channel options: a member restarted by a test is reached again within half a second
# (grpc's default backoff grows to two minutes).
LAG_WINDOW_S = 5.0   # the span Inspect's loop_lag_ms covers (SERVER, contract 3)
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                  ("grpc.max_reconnect_backoff_ms", 500)]

class LagPoller:
    """Measure every member's responsiveness from the client side, in a separate process.

    A child process (so that the test's own CPU use -- hypothesis, protobuf --
    does not count) calls Maintenance.Status on every endpoint every
    ``interval`` seconds with a short deadline and keeps, per endpoint, the
    worst latency seen, the failures, and the worst ``loop_lag_ms`` that
    Inspect.RaftStatus reports when the member has that field (issue 8's
    contract 3). ``snapshot()`` asks the child for its figures so far;
    ``reset()`` starts a new window. Stopped by PID.
    """

    def __init__(self, endpoints: Sequence[str], interval: float = 0.05) -> None:
        import subprocess
        import sys

        from tests.support.launch import with_parent_death_signal

        self.endpoints = list(endpoints)
        code = ("import sys; from tests.hardening.conftest import _lag_poller_main; "
                "_lag_poller_main(sys.argv[1].split(','), float(sys.argv[2]))")
        env = dict(os.environ)
        root = str(support_raftnode.REPO_ROOT)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            with_parent_death_signal([sys.executable, "-c", code, ",".join(self.endpoints), str(interval)]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
        ready = self.proc.stdout.readline()
        if not ready.startswith("ready"):
            self.stop()
            raise RuntimeError(f"lag poller did not start: {ready!r}")

    def _ask(self, cmd: str) -> dict:
        import json
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("lag poller died")
        return json.loads(line)

    def snapshot(self) -> dict:
        """{"max_ms": {ep: worst Status latency}, "fail": {ep: failures},
        "samples": n, "loop_lag_ms": {ep: worst reported} (empty without the field)}."""
        return self._ask("get")

    def reset(self) -> dict:
        return self._ask("reset")

    def stop(self) -> None:
        import subprocess
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _lag_poller_main(endpoints: list[str], interval: float) -> None:
    """The child of LagPoller: a thread polls, the main thread answers 'get'/'reset' on stdin."""
    import json
    import sys
    import threading

    from engine.proto import inspect_pb2, inspect_pb2_grpc

    lock = threading.Lock()

    def fresh() -> dict:
        # loop_lag_ms is the worst gap over the member's last LAG_WINDOW_S seconds: samples taken
        # that soon after a reset may still show the previous window's lag, so they count only
        # through loop_lag_max_ms (worst since start) rising within this window.
        return {"max_ms": {ep: 0.0 for ep in endpoints}, "fail": {ep: 0 for ep in endpoints},
                "samples": 0, "loop_lag_ms": {}, "worst_at": {}, "t0": time.monotonic(),
                "max_first": {}, "max_last": {}}

    state = fresh()
    stop = threading.Event()
    chans = {ep: grpc.insecure_channel(ep, options=FAST_RECONNECT) for ep in endpoints}
    stubs = {ep: (rpc_pb2_grpc.MaintenanceStub(ch), inspect_pb2_grpc.InspectStub(ch)) for ep, ch in chans.items()}
    has_lag = "loop_lag_ms" in inspect_pb2.RaftStatusResponse.DESCRIPTOR.fields_by_name

    def poll() -> None:
        n = 0
        while not stop.is_set():
            for ep in endpoints:
                maint, insp = stubs[ep]
                t0 = time.monotonic()
                try:
                    maint.Status(rpc_pb2.StatusRequest(), timeout=2.0)
                    ok = True
                except grpc.RpcError:
                    ok = False
                dt = (time.monotonic() - t0) * 1000
                lag = lag_max = None
                if has_lag and n % 10 == 0:
                    try:
                        rs = insp.RaftStatus(inspect_pb2.RaftStatusRequest(), timeout=2.0)
                        lag = rs.loop_lag_ms
                        lag_max = getattr(rs, "loop_lag_max_ms", None)
                    except grpc.RpcError:
                        pass
                with lock:
                    state["samples"] += 1
                    if not ok:
                        state["fail"][ep] += 1
                    elif dt > state["max_ms"][ep]:
                        state["max_ms"][ep] = dt
                        state["worst_at"][ep] = time.time()
                    if lag is not None:
                        late = time.monotonic() - state["t0"] >= LAG_WINDOW_S
                        if late:
                            state["loop_lag_ms"][ep] = max(state["loop_lag_ms"].get(ep, 0), lag)
                        else:
                            state["loop_lag_ms"].setdefault(ep, 0)
                    if lag_max is not None:
                        state["max_first"].setdefault(ep, lag_max)
                        state["max_last"][ep] = lag_max
                        if lag_max > state["max_first"][ep]:
                            # A new worst since start: it happened in this window.
                            state["loop_lag_ms"][ep] = max(state["loop_lag_ms"].get(ep, 0), lag_max)
            n += 1
            stop.wait(interval)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        with lock:
            out = json.dumps(state)
            if cmd == "reset":
                state = fresh()
        print(out, flush=True)
    stop.set()
