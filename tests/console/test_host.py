"""Host mode's process host, run with the real etcd binary."""
from __future__ import annotations

import asyncio

import pytest

from raftui.host import etcd_host
from raftui.host.health import with_process_health
from raftui.source import ClusterSource

from .conftest import run


@pytest.fixture
def host(etcd_binaries, tmp_path):
    h = etcd_host(tmp_path / "cluster", 3, etcd_bin=etcd_binaries[0])
    h.start()
    try:
        h.wait_listening()
        yield h
    finally:
        h.stop_all()


async def _poll_until(source, condition, rounds=60):
    for _ in range(rounds):
        state = await source.poll()
        if condition(state):
            return state
        await asyncio.sleep(0.1)  # poll interval, as the console's own timer
    raise AssertionError(f"condition not reached: {source.state}")


def _health(state, name):
    return next(m.health for m in state.members if m.name == name)


def test_kill_restart_pause_resume(host):
    async def body():
        source = ClusterSource(host.endpoints)
        try:
            await _poll_until(source, lambda s: s.leader_id and all(m.health == "up" for m in s.members))
            host.kill("n3")
            assert host.state("n3") == "killed"
            await _poll_until(source, lambda s: _health(s, "n3") == "down")
            shown = with_process_health(source.state, host)
            assert next(m.health for m in shown.members if m.name == "n3") == "killed"
            host.restart("n3")
            await _poll_until(source, lambda s: _health(s, "n3") == "up")
            host.pause("n2")
            assert host.state("n2") == "paused"
            await _poll_until(source, lambda s: _health(s, "n2") == "down", rounds=10)
            host.resume("n2")
            await _poll_until(source, lambda s: _health(s, "n2") == "up")
        finally:
            await source.close()
    run(body())


def test_same_data_dir_resumes_the_same_cluster(host, etcd_binaries):
    again = etcd_host(host.data_dir, 5, etcd_bin=etcd_binaries[0])
    assert again.resumed and again.names == host.names and again.endpoints == host.endpoints
    again.start()   # every member is still running: adopted, not started twice
    assert [again.pid(n) for n in again.names] == [host.pid(n) for n in host.names]
