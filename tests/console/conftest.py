"""Console tests: helpers to drive the app with key presses and wait on conditions.

pytest 8 has no built-in async tests and we add no plugin: each async test
body runs through `run()` (a fresh event loop per test, so gRPC channels are
born and die in the loop that uses them).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Awaitable, Callable, Iterator

import pytest

DEFAULT_WAIT = 10.0


def run(coro: Awaitable, timeout: float = 60.0):
    """Run one test coroutine with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(pilot, condition: Callable[[], object], timeout: float = DEFAULT_WAIT,
                what: str = "condition"):
    """Let the app run until `condition()` is truthy; fail after `timeout` seconds.

    Synchronisation is on observable state, never on a fixed sleep: the pause
    is only how long to let the app work between two looks. A failure says
    what the console's timeline showed, which usually tells why."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{_timeline_tail(pilot)}")
        await pilot.pause(0.05)


def _timeline_tail(pilot, lines: int = 15) -> str:
    source = getattr(pilot.app, "source", None)
    if source is None:
        return ""
    state = source.state
    members = "\n".join(f"  {m.label} {m.role} {m.health} term {m.term} commit {m.commit_index} "
                        f"applied {m.applied_index} {'; '.join(m.errors)}" for m in state.members)
    events = "\n".join(f"  {time.strftime('%H:%M:%S', time.localtime(e.at))} {e.kind}: {e.text}"
                       for e in state.timeline[:lines])
    return f"members:\n{members}\ntimeline (newest first):\n{events}"


async def type_text(pilot, text: str) -> None:
    await pilot.press(*text)


async def fill(pilot, *values: str) -> None:
    """Fill the open form: each field cleared (ctrl+u: the cursor starts at
    the end of a prefilled value), typed, enter."""
    for value in values:
        await pilot.press("ctrl+u", *value, "enter")


@pytest.fixture
def fixed_clock_and_tz(monkeypatch):
    """Snapshot determinism: UTC time stamps, no cursor blink."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    from textual.widgets import Input

    monkeypatch.setattr(Input, "cursor_blink", False, raising=False)
    yield
    monkeypatch.undo()
    time.tzset()


def stop_by_pid(host) -> None:
    """Stop a host's members; anything that survived: SIGKILL by PID."""
    host.stop_all(timeout=10.0)
    for name in host.names:
        pid = host.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def hosted_cluster(data_dir, size: int = 3, host=None) -> Iterator[object]:
    """A hosted raftnode cluster (raftui's own ProcessHost, fault injection on),
    listening when entered, stopped by PID when left. `host`: a ProcessHost
    made by the caller (extra member flags), else raftnode_host(data_dir, size)."""
    from raftui.host import raftnode_host

    host = host if host is not None else raftnode_host(data_dir, size)
    try:
        host.start()
        host.wait_listening(30.0)
        yield host
    finally:
        stop_by_pid(host)


@pytest.fixture(scope="package")
def shared_hosted(raftnode_binary, tmp_path_factory):
    """One hosted 3-member raftnode cluster (raftnode_host's defaults) for every console module
    that drives a healthy 3-member cluster and leaves it healthy after each test: test_features_hosted,
    test_hosted, test_hostile, test_scenario and test_lincheck's live check (CI time: one start
    instead of five). Each test
    writes under its own keys; none counts on a fresh revision or an empty keyspace. Members
    import this checkout (PYTHONPATH, whatever pip installed). Stopped by PID after the last
    console test."""
    import pathlib

    root = str(pathlib.Path(__file__).resolve().parents[2])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
        with hosted_cluster(tmp_path_factory.mktemp("hosted") / "cluster", 3) as host:
            yield host


@pytest.fixture(scope="package")
def real_etcd3(etcd_binaries, tmp_path_factory):
    """tests/conftest.py's 3-member real etcd, one for the console package instead of one per
    module (CI time: test_pilot, test_scenario and test_source; each test writes under its own
    keys, nothing there counts on a fresh revision, and none leaves a member down)."""
    from tests.support import etcd as support_etcd

    cluster = support_etcd.start_etcd_cluster(tmp_path_factory.mktemp("etcd3"), size=3)
    try:
        yield cluster
    finally:
        cluster.stop()

