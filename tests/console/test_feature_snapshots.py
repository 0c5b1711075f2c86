"""Snapshots of issue 14's screens at 80x24 (dark theme), on fixed data: the
link matrix with a one-way cut, the revision scrubber, why a txn failed,
NOSPACE recovery stopped at a failed step. README points at these SVGs.
Update after a deliberate change with --snapshot-update and review them."""
from __future__ import annotations

import dataclasses

import pytest

from raftui.app import RaftuiApp
from raftui.screens.links import LinksScreen
from raftui.screens.recovery import RecoveryScreen
from raftui.screens.scrub import ScrubScreen
from raftui.screens.txn import TxnScreen
from raftui.source import recovery
from raftui.source.faults import IN, OUT, FaultView
from raftui.source.model import KeyValue
from raftui.source.scrub import Change, RevisionView
from raftui.source.txn import Check, CompareSpec, TxnOutcome

from .fake_state import STATE, FakeSource
from .test_recovery import UP, Cluster

N1, N2, N3 = 0x1001, 0x1002, 0x1003
LINKS = dataclasses.replace(STATE, faults=(
    (N1, FaultView(cuts=frozenset({(N2, OUT), (N3, OUT)}))),
    (N2, FaultView(cuts=frozenset({(N1, IN)}), delays=(((N3, OUT), 200),))),
    (N3, FaultView(cuts=frozenset({(N1, IN)}), drops=(((N2, OUT), 0.3),)))))


@pytest.fixture(autouse=True)
def _deterministic(fixed_clock_and_tz):
    yield


async def _scrub_view(revision: int) -> RevisionView:
    kvs = (KeyValue("/app/config", "mode=blue", 300, 411, 4), KeyValue("/app/jobs/7", "queued", 409, 409, 1),
           KeyValue("/app/leader", "n1", 120, 398, 9))
    return RevisionView("/app/", True, revision, 512, kvs, 3,
                        (Change("changed", "/app/config", "mode=blue", "mode=green"),
                         Change("deleted", "/app/jobs/6", "", "done")))


def _txn() -> TxnOutcome:
    kv = KeyValue("/app/config", "mode=blue", 300, 411, 4)
    return TxnOutcome(False, 512, 512, (
        Check(CompareSpec("value", "/app/config", "=", "mode=blue"), kv, True),
        Check(CompareSpec("mod", "/app/config", "<", "400"), kv, False),
        Check(CompareSpec("version", "/app/lock", "=", "0"), None, True)),
        ('get /app/config: /app/config = "mode=blue"',))


def _screen(which: str):
    if which == "links":
        return LinksScreen(LINKS, lambda *a: None)
    if which == "scrub":
        return ScrubScreen("/app/", True, 411, _scrub_view, lambda: (512, 300))
    if which == "txn":
        return TxnScreen(_txn())
    cluster = Cluster(fail_defrag=N3)
    return RecoveryScreen(recovery.Runner(cluster, "NOSPACE recovery", recovery.plan_nospace(UP)).progress,
                          lambda: recovery.nospace_recovery(cluster, UP))


@pytest.mark.parametrize("which", ["links", "scrub", "txn", "recovery"])
def test_feature_screen(snap_compare, which):
    async def show(pilot):
        pilot.app.push_screen(_screen(which))
        await pilot.pause(0.3)
        await pilot.pause()

    app = RaftuiApp(lambda: FakeSource(LINKS), theme="dark", mode_label="hosting 3 members", live=False)
    assert snap_compare(app, terminal_size=(80, 24), run_before=show)
