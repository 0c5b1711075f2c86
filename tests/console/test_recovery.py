"""Guided maintenance's steps against a stand-in cluster (no network): the
order (leader last), waiting for catch-up, stopping at the first failure."""
from __future__ import annotations

import asyncio
import dataclasses

from raftui.source import recovery
from raftui.source.model import ActionResult
from raftui.source.poll import StatusResult

from .fake_state import STATE

N1, N2, N3 = 0x1001, 0x1002, 0x1003
UP = dataclasses.replace(STATE, members=tuple(dataclasses.replace(m, health="up") for m in STATE.members))


class Cluster:
    """Answers like three members; `lag` makes a defragmented member catch up only after some looks."""

    def __init__(self, fail_defrag: int = 0, lag: int = 0, stuck: int = 0, refuse_put: bool = False):
        self.calls: list[tuple] = []
        self.fail_defrag, self.lag, self.stuck, self.refuse_put = fail_defrag, lag, stuck, refuse_put
        self.looks: dict[int, int] = {}

    async def current_revision(self):
        return 600

    async def compact(self, revision):
        self.calls.append(("compact", revision))
        return ActionResult(True, f"compacted to revision {revision}")

    async def defrag(self, member_id):
        self.calls.append(("defrag", member_id))
        if member_id == self.fail_defrag:
            return ActionResult.fail("defrag n?: context deadline exceeded")
        self.looks[member_id] = 0
        return ActionResult(True, "defragmented")

    async def status_of(self, member_id, deadline=1.0):
        looks = self.looks.get(member_id, 99)
        self.looks[member_id] = looks + 1
        behind = member_id == self.stuck or looks < self.lag
        return StatusResult(f"ep{member_id}", ok=True, member_id=member_id, leader_id=N1, commit_index=100,
                            applied_index=90 if behind else 100)

    async def alarm_disarm(self):
        self.calls.append(("disarm",))
        return ActionResult(True, "disarmed 1 alarm(s)")

    async def put(self, key, value):
        self.calls.append(("put", key))
        return ActionResult.fail("put: etcdserver: mvcc: database space exceeded") if self.refuse_put \
            else ActionResult(True, "put", 601)

    async def delete(self, key):
        self.calls.append(("delete", key))
        return ActionResult(True, "deleted")


async def _last(gen) -> recovery.Progress:
    progress = None
    async for progress in gen:
        pass
    return progress


def test_nospace_recovery_compacts_defrags_leader_last_disarms_and_checks_a_write(monkeypatch):
    monkeypatch.setattr(recovery, "LOOK_EVERY", 0.01)
    cluster = Cluster(lag=3)
    done = asyncio.run(_last(recovery.nospace_recovery(cluster, UP)))
    assert done.ok and done.finished and all(s.state == "done" for s in done.steps)
    assert [c for c in cluster.calls if c[0] == "defrag"] == [("defrag", N2), ("defrag", N3), ("defrag", N1)]
    assert cluster.calls[0] == ("compact", 600) and cluster.calls[-3:] == [
        ("disarm",), ("put", recovery.PROBE_KEY), ("delete", recovery.PROBE_KEY)]
    assert "applied 100 ≥ the leader's commit 100" in done.steps[2].detail
    assert done.steps[4].title.startswith("defragment n1 (the leader, last)")


def test_a_failed_step_stops_everything_after_it():
    cluster = Cluster(fail_defrag=N3)
    done = asyncio.run(_last(recovery.nospace_recovery(cluster, UP)))
    assert done.ok is False and [s.state for s in done.steps] == ["done", "done", "done", "failed", "skipped",
                                                                   "skipped", "skipped"]
    assert ("defrag", N1) not in cluster.calls and ("disarm",) not in cluster.calls
    assert done.summary.startswith("NOSPACE recovery stopped at step 4") and "context deadline" in done.summary
    refused = asyncio.run(_last(recovery.nospace_recovery(Cluster(refuse_put=True), UP)))
    assert refused.ok is False and refused.steps[-1].detail.startswith("a write is still refused")


def test_rolling_defrag_waits_for_catch_up_and_gives_up_at_its_deadline(monkeypatch):
    monkeypatch.setattr(recovery, "CATCH_UP_WITHIN", 0.3)
    monkeypatch.setattr(recovery, "LOOK_EVERY", 0.02)
    done = asyncio.run(_last(recovery.rolling_defrag(Cluster(stuck=N2), UP)))
    assert [s.state for s in done.steps] == ["done", "failed", "skipped", "skipped"]
    assert done.steps[1].detail == "n2 did not catch up within 0.3s (applied 90 of 100)"

    class Down(Cluster):
        async def status_of(self, member_id, deadline=1.0):
            if member_id == N3:
                return StatusResult("ep3", ok=False, error="connection refused")
            return await super().status_of(member_id)

    cluster = Down()
    refused = asyncio.run(_last(recovery.rolling_defrag(cluster, UP)))
    assert refused.steps[0].state == "failed" and "n3 not answering" in refused.steps[0].detail
    assert not [c for c in cluster.calls if c[0] == "defrag"]
    cluster = Down()                                     # NOSPACE recovery: nothing compacted either
    refused = asyncio.run(_last(recovery.nospace_recovery(cluster, UP)))
    assert refused.steps[0].state == "failed" and cluster.calls == []
