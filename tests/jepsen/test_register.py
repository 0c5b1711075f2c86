"""Jepsen-style tests of raftnode: linearizable registers under faults.

Five clients (asyncio tasks, grpc.aio channels, one member at a time,
re-picking on failure) do random linearizable reads, writes and
compare-and-set Txns on three keys with 1 s deadlines while a nemesis, one
fault at a time, kills (-9) and restarts a random member, the leader, or a
majority at once; isolates a random member or the leader through its Fault
service (Cut all); builds a bridge (two halves that cannot talk, one member
seeing both); makes a member's network flaky (drop 30 %, delay 20-80 ms);
and pauses a random member or the leader with SIGSTOP. Each kind at least
once, then random ones until the time is up (the 5-member run also splits a
minority group off). Then everything is healed, killed members restarted,
the cluster settles (a leader, with a deadline), every key is read once
more, and the whole history goes to the linearizability checker
(tests/support/linearizability.py). The test also demands >= 200 ok ops and
every fault kind injected, so it cannot pass vacuously, and checks that the
checker rejects the same history with a stale read planted in it.

The crash test kills every member at once, twice, in the middle of traffic:
every acknowledged write must survive (be read back or superseded by a
write that did not finish before it began) and the history must still be
linearizable.

Reproducing: every run prints its seed; RAFTUI_JEPSEN_SEED=<seed> replays
the same plan (each client's ops, keys and members; the nemesis's faults,
targets and timings; a leader-targeted fault hits whoever leads at that
moment). Timing still varies -- scheduling, elections, fsync -- so a seed
replays the plan, not the exact history. On failure the history,
a timeline, the verdict and the member logs are saved under
/tmp/raftui-jepsen-<test>-seed<seed>-<time>/.
"""
from __future__ import annotations

import asyncio
import copy
import os

import pytest

from tests.jepsen import harness
from tests.support import linearizability as lin

# Fast elections (more leader changes per run) and frequent snapshots (a
# restarted member often catches up from a snapshot instead of the log).
CLUSTER_ARGS = ("--heartbeat-interval=50", "--election-timeout=500", "--snapshot-count=300")
DURATION = float(os.environ.get("RAFTUI_JEPSEN_DURATION", "22"))
MIN_OK_OPS = 200
N_KEYS = 3


@pytest.fixture(autouse=True)
def _faulthandler(monkeypatch):
    """Members started by these tests dump a Python traceback into their log
    if they die of a fatal signal (SIGSEGV...), instead of vanishing."""
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")


@pytest.fixture(scope="module")
def cluster3(raftnode_binary, tmp_path_factory):
    """One 3-member cluster (CLUSTER_ARGS) for the nemesis run and the whole-cluster crash (CI
    time: one start fewer). Their keys differ (tagged by test and seed) and each run ends with
    every member resumed, restarted and healed and a leader (harness.heal_all)."""
    from tests.support.raftnode import start_raftnode_cluster

    env = pytest.MonkeyPatch()
    env.setenv("PYTHONFAULTHANDLER", "1")      # as _faulthandler, for the members started here
    cluster = start_raftnode_cluster(tmp_path_factory.mktemp("jepsen3"), 3, extra_args=CLUSTER_ARGS)
    try:
        yield cluster
    finally:
        cluster.stop()
        env.undo()


def _keys(tag: str) -> list[str]:
    return [f"/jepsen/{tag}/r{i}" for i in range(N_KEYS)]


def _judge(res: harness.RunResult, cluster, name: str, *, kinds, min_ok: int = MIN_OK_OPS,
           extra_problems: list[str] = ()) -> None:
    summary = res.summary()
    print("\n" + summary)
    problems = list(extra_problems)
    problems += [f"member crashed: {c}" for c in res.crashes]
    problems += [p for p in res.problems if p.startswith("cluster did not settle")]
    if len(res.final_values) != N_KEYS:
        problems.append(f"final reads missing: got {sorted(res.final_values)}")
    if res.verdict.valid is not True:
        problems.append("history is " + ("NOT linearizable" if res.verdict.valid is False else "undecided"))
    if res.ok_ops < min_ok:
        problems.append(f"only {res.ok_ops} ok ops (need {min_ok}): the run proves too little")
    missing = [k for k in kinds if res.faults[k] < 1]
    if missing:
        problems.append(f"faults never injected: {missing}")
    if os.environ.get("RAFTUI_JEPSEN_SAVE") and not problems:
        print(f"  saved in {res.save(name, cluster)}")
    if problems:
        path = res.save(name, cluster, "\n".join(problems))
        pytest.fail(
            f"{name} failed with seed {res.seed} (replay: RAFTUI_JEPSEN_SEED={res.seed}; timing varies)\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\n{summary}\n\n{res.verdict.report()}\n\nhistory, timeline and logs saved in {path}",
            pytrace=False)


def _checker_bites(res: harness.RunResult) -> None:
    """The same real history with one anomaly planted must be rejected: the
    final read of a key is made to return that key's first acknowledged
    write, long overwritten (a stale read). Guards against a checker or a
    history that could never fail."""
    events = copy.deepcopy(res.history)
    key = sorted(res.final_values)[0]
    writes = [e for e in events if e["type"] == "ok" and e["key"] == key and e["f"] == "write"]
    final = [e for e in events if e["type"] == "ok" and e["key"] == key and e["process"] == "final"][-1]
    assert len(writes) >= 2 and writes[0]["value"] != final["value"]
    final["value"] = writes[0]["value"]
    verdict = lin.check(events)
    assert verdict.valid is False, "the checker accepted a planted stale read"
    kv = verdict.keys[key]
    assert any(o.process == "final" for o in kv.counterexample), kv.report


def test_register_linearizable_under_faults(cluster3):
    seed = harness.seed_from_env()
    print(f"\nseed {seed}")
    cluster = cluster3
    res = asyncio.run(harness.run(cluster, seed=seed, keys=_keys(f"s{seed}"), duration=DURATION))
    _judge(res, cluster, "register3", kinds=harness.STANDARD_FAULTS)
    _checker_bites(res)


@pytest.mark.soak   # CI time: the 3-member nemesis run and the whole-cluster crash stay in the default run
def test_register_linearizable_under_faults_5_members(raftnode_cluster_factory):
    seed = harness.seed_from_env()
    print(f"\nseed {seed}")
    cluster = raftnode_cluster_factory(5, CLUSTER_ARGS)
    kinds = (harness.KILL, harness.LEADER_KILL, harness.PARTITION_LEADER, harness.PAUSE_LEADER, harness.SPLIT,
             harness.BRIDGE)
    res = asyncio.run(harness.run(cluster, seed=seed, keys=_keys(f"f{seed}"), duration=DURATION * 0.6,
                                  faults=kinds))
    _judge(res, cluster, "register5", kinds=kinds, min_ok=MIN_OK_OPS // 2)


def test_no_acknowledged_write_lost_when_every_member_crashes(cluster3):
    seed = harness.seed_from_env()
    print(f"\nseed {seed}")
    cluster = cluster3

    async def schedule(nemesis: harness.Nemesis) -> None:
        for _ in range(2):
            await asyncio.sleep(nemesis.rng.uniform(2.0, 3.0))   # traffic before the crash (schedule)
            await nemesis.inject(harness.CRASH_ALL, nemesis.rng.uniform(0.3, 1.0))
            lead = await nemesis.leader()        # waits, with a deadline
            nemesis.rec.nemesis(f"leader again: {None if lead is None else nemesis.name(lead)}")

    mix = {lin.READ: 0.2, lin.WRITE: 0.6, lin.CAS: 0.2}
    res = asyncio.run(harness.run(cluster, seed=seed, keys=_keys(f"c{seed}"), duration=10.0, mix=mix,
                                  schedule=schedule))
    lost = harness.lost_writes(res.history, res.final_values)
    acked = sum(res.counts[(f, lin.OK)] for f in (lin.WRITE, lin.CAS))
    print(f"  acknowledged writes/cas: {acked}; lost: {len(lost)}")
    _judge(res, cluster, "crash-all", kinds=(harness.CRASH_ALL,), min_ok=100, extra_problems=lost)
    assert res.faults[harness.CRASH_ALL] == 2


@pytest.mark.soak
@pytest.mark.timeout(0)  # a soak runs as long as it is asked to
@pytest.mark.parametrize("size", [3, 5])
def test_register_soak(raftnode_cluster_factory, size):
    """Longer runs with 8 clients (-m soak): RAFTUI_JEPSEN_SOAK_SECONDS of traffic (default 120)."""
    seed = harness.seed_from_env()
    print(f"\nseed {seed}")
    cluster = raftnode_cluster_factory(size, CLUSTER_ARGS)
    kinds = harness.STANDARD_FAULTS + ((harness.SPLIT,) if size >= 5 else ())
    duration = float(os.environ.get("RAFTUI_JEPSEN_SOAK_SECONDS", "120"))
    res = asyncio.run(harness.run(cluster, seed=seed, keys=_keys(f"soak{size}-{seed}"), duration=duration,
                                  faults=kinds, n_clients=8))
    _judge(res, cluster, f"soak{size}", kinds=kinds)
