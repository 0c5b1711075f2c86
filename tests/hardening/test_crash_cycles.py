"""Issue 8, hostile-input suite part (c): kill -9 cycles while the cluster works.

A real 3-member raftnode cluster with ``--snapshot-count=50`` (a raft
snapshot, and log compaction, every 50 applied entries) keeping 500 entries
after each for slow followers (``--experimental-snapshot-catchup-entries``;
etcd keeps 5,000: fewer than a follower falls behind while it installs one
snapshot is a livelock, which this suite found). While two writer
threads put fresh keys (one key per put, a unique value; every acknowledged
put is recorded), the main thread runs CYCLES kill cycles, its moments
drawn from a seeded RNG (the seed is printed; ``RAFTUI_CRASH_SEED`` replays
one):

- kill -9 one member -- the leader or a follower, the 4th member when there
  is one -- after a random number of further acknowledged writes (the
  "random moment": in the middle of applying, snapshotting, compacting,
  sending or installing a snapshot); sometimes keep it down until the
  others have moved 60+ writes on, so it must catch up from a snapshot;
- the victim may be streaming a Maintenance Snapshot, or applying a
  physical compaction it was just asked for, when it dies;
- between kills: MVCC compactions (physical or not) and a Maintenance
  Snapshot stream; every few cycles one membership step: add a 4th member
  as a learner (a real process), promote it, later remove it and stop it;
- restart the killed member with its own argv (RaftnodeMember.restart).

Every restart must succeed: the process stays up, listens, sees a leader and
applies up to the leader's commit index (deadline 40 s); so must every other
member (none stuck while alive). At the end, after
the writers stop: a linearizable read of every writer's keys holds every
acknowledged key with its value (no acknowledged write lost), and all
members report the same HashKV at one revision.

CI runs CI_CYCLES (about a minute or two); ``-m soak`` runs SOAK_CYCLES (200, the
issue's figure).
"""
from __future__ import annotations

import dataclasses
import os
import random
import threading
import time

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import FAST_RECONNECT, death_note, restart_member, start_cluster, wait_for

CI_CYCLES = int(os.environ.get("RAFTUI_CRASH_CYCLES", "8"))
SOAK_CYCLES = int(os.environ.get("RAFTUI_CRASH_SOAK_CYCLES", "200"))
SNAPSHOT_COUNT = 50
CATCHUP_ENTRIES = 500
WRITERS = 2
PUT_TIMEOUT = 3.0
CATCH_UP = 40.0
REMOVED_EXIT_S = 10.0   # a removed member stops itself within this (etcd: ErrMemberRemoved)


@dataclasses.dataclass
class Stats:
    cycles: int = 0
    leader_kills: int = 0
    long_downs: int = 0
    compactions: int = 0
    inflight_snapshots: int = 0
    inflight_compactions: int = 0
    snapshots: int = 0
    member_steps: list = dataclasses.field(default_factory=list)
    removed_zombies: list = dataclasses.field(default_factory=list)
    restart_s: list = dataclasses.field(default_factory=list)


class Writers:
    """WRITERS threads putting fresh keys w<t>/<seq> = <t>-<seq> to random live members."""

    def __init__(self, cluster, seed: int) -> None:
        self.cluster = cluster
        self.seed = seed
        self.lock = threading.Lock()
        self.acked: dict[bytes, bytes] = {}
        self.failed = 0
        self.stop = threading.Event()
        self.live: list[int] = list(range(len(cluster.members)))   # indices a writer may use
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in range(WRITERS)]
        self.errors: dict[str, int] = {}

    def start(self) -> None:
        for th in self.threads:
            th.start()

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _run(self, t: int) -> None:
        rng = random.Random(self.seed * 31 + t)
        chans: dict[str, grpc.Channel] = {}
        seq = 0
        try:
            while not self.stop.is_set():
                with self.lock:
                    live = list(self.live)
                i = rng.choice(live)
                ep = self.cluster.members[i].endpoint
                ch = chans.get(ep)
                if ch is None:
                    ch = chans[ep] = grpc.insecure_channel(ep, options=FAST_RECONNECT)
                key, value = b"w%d/%08d" % (t, seq), b"%d-%d" % (t, seq)
                seq += 1
                try:
                    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=PUT_TIMEOUT)
                except grpc.RpcError as e:
                    with self.lock:
                        self.failed += 1
                        k = f"{e.code().name} {(e.details() or '')[:60]}"
                        self.errors[k] = self.errors.get(k, 0) + 1
                    if not self.stop.is_set():
                        self.stop.wait(0.02)   # back-off after a failure, not synchronisation
                    continue
                with self.lock:
                    self.acked[key] = value
        finally:
            for ch in chans.values():
                ch.close()

    def join(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=PUT_TIMEOUT + 5)
            assert not th.is_alive(), "a writer thread did not stop"


def _status(ep: str, timeout: float = 1.0):
    try:
        with grpc.insecure_channel(ep) as ch:
            return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)
    except grpc.RpcError:
        return None


class Crasher:
    def __init__(self, cluster, rng: random.Random, writers: Writers, stats: Stats) -> None:
        self.c = cluster
        self.rng = rng
        self.w = writers
        self.stats = stats
        self.active: list[int] = list(range(len(cluster.members)))  # members of the cluster
        self.fourth: int | None = None      # index of the added member while it is one
        self.fourth_id: int | None = None
        self.fourth_voter = False
        self.adds = 0
        self.channels: dict[str, grpc.Channel] = {}
        self.asked = 0     # the member the last membership call went to

    # -- helpers -------------------------------------------------------------------

    def _set_live(self, live: list[int]) -> None:
        """Where the writers may send: running members of the cluster, never a learner."""
        live = [i for i in live if i != self.fourth or self.fourth_voter]
        with self.w.lock:
            self.w.live = list(live)

    def check_no_crash(self) -> None:
        """No member of the cluster died by itself (only our kill -9 stops one)."""
        for i in self.active:
            m = self.c.members[i]
            assert m.running(), (f"{m.name} died by itself (exit {m.proc.returncode}): {death_note(m)}\n"
                                 f"{m.log_tail(3000)}")

    def _stub(self, kind):
        """A stub on a random running active member (one cached channel per endpoint)."""
        live = [i for i in self.active if self.c.members[i].running()
                and (i != self.fourth or self.fourth_voter)]   # learners serve no writes
        assert live, "no live member"
        self.asked = self.rng.choice(live)
        ep = self.c.members[self.asked].endpoint
        ch = self.channels.get(ep)
        if ch is None:
            ch = self.channels[ep] = grpc.insecure_channel(ep, options=FAST_RECONNECT)
        return kind(ch)

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()

    def leader_commit(self) -> tuple[int, int]:
        """(index of the leader, its commit index), waiting for a leader among the active members."""
        def find():
            for i in self.active:
                m = self.c.members[i]
                if not m.running():
                    continue
                st = _status(m.endpoint)
                if st is not None and st.leader and st.leader == st.header.member_id:
                    return i, st.raftIndex
            return None
        return wait_for(find, CATCH_UP, "a leader among the active members")

    def wait_rejoined(self, i: int) -> None:
        """Member i runs, listens, knows a leader and has applied the leader's commit index."""
        m = self.c.members[i]
        _, commit = self.leader_commit()

        def caught_up():
            assert m.running(), f"{m.name} exited after its restart (code {m.proc.returncode}): {death_note(m)}\n" \
                                f"{m.log_tail(3000)}"
            st = _status(m.endpoint)
            return st is not None and st.leader != 0 and st.raftAppliedIndex >= commit
        wait_for(caught_up, CATCH_UP, f"{m.name} to rejoin and apply up to {commit}")

    def more_writes(self, n: int, timeout: float = 30.0) -> None:
        """The random moment: wait until n more puts were acknowledged."""
        target = self.w.count() + n
        wait_for(lambda: self.w.count() >= target, timeout, f"{n} more acknowledged writes", interval=0.005)

    # -- one cycle -----------------------------------------------------------------

    def cycle(self) -> None:
        rng, c = self.rng, self.c
        self.check_no_crash()
        lead, _ = self.leader_commit()
        victims = [i for i in self.active if c.members[i].running()]
        victim = lead if rng.random() < 0.35 else rng.choice(victims)
        if victim == lead:
            self.stats.leader_kills += 1
        inflight = []
        if rng.random() < 0.25:
            # The victim is streaming a snapshot (its db file being read) when it dies.
            inflight.append(self._background(self._snapshot_from, c.members[victim].endpoint))
            self.stats.inflight_snapshots += 1
        if rng.random() < 0.25:
            # ... or a physical compaction it was asked for is being applied.
            inflight.append(self._background(self._compact_on, c.members[victim].endpoint))
            self.stats.inflight_compactions += 1
        self.more_writes(rng.randint(0, 25))
        c.kill(victim)
        for th in inflight:
            th.join(timeout=30)
            assert not th.is_alive(), "a call to the killed member did not end"
        self._set_live([i for i in self.active if i != victim])
        if rng.random() < 0.3:
            # Down long enough for the others to snapshot and compact past it.
            self.stats.long_downs += 1
            self.more_writes(CATCHUP_ENTRIES + SNAPSHOT_COUNT + rng.randint(10, 40), timeout=60)
        if rng.random() < 0.5:
            self.compact()
        t0 = time.monotonic()
        restart_member(c, victim, timeout=CATCH_UP)
        self._set_live(self.active)
        self.wait_rejoined(victim)
        self.stats.restart_s.append(time.monotonic() - t0)
        self.check_no_crash()
        for i in self.active:
            if i != victim:
                # Every other member follows too: none sits alive but stuck (seen: a member whose
                # raft loop went silent while its transport kept receiving snapshots).
                self.wait_rejoined(i)
        if rng.random() < 0.15:
            self.snapshot()
        self.stats.cycles += 1

    @staticmethod
    def _background(fn, *args) -> threading.Thread:
        th = threading.Thread(target=fn, args=args, daemon=True)
        th.start()
        return th

    @staticmethod
    def _snapshot_from(ep: str) -> None:
        try:
            with grpc.insecure_channel(ep) as ch:
                for _ in rpc_pb2_grpc.MaintenanceStub(ch).Snapshot(rpc_pb2.SnapshotRequest(), timeout=20):
                    pass
        except grpc.RpcError:
            pass   # cut by the kill, most of the time

    @staticmethod
    def _compact_on(ep: str) -> None:
        try:
            with grpc.insecure_channel(ep) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                rev = kv.Range(rpc_pb2.RangeRequest(key=b"\0", count_only=True), timeout=5).header.revision
                kv.Compact(rpc_pb2.CompactionRequest(revision=max(1, rev - 5), physical=True), timeout=5)
        except grpc.RpcError:
            pass

    def compact(self) -> None:
        kv = self._stub(rpc_pb2_grpc.KVStub)
        try:
            rev = kv.Range(rpc_pb2.RangeRequest(key=b"\0", count_only=True), timeout=PUT_TIMEOUT).header.revision
            kv.Compact(rpc_pb2.CompactionRequest(revision=max(1, rev - self.rng.randint(0, 30)),
                                                 physical=self.rng.random() < 0.5), timeout=PUT_TIMEOUT)
            self.stats.compactions += 1
        except grpc.RpcError:
            pass   # compacted already, no leader for a moment: the next one will do

    def snapshot(self) -> None:
        m = self._stub(rpc_pb2_grpc.MaintenanceStub)
        try:
            n = sum(len(r.blob) for r in m.Snapshot(rpc_pb2.SnapshotRequest(), timeout=20))
            assert n > 0
            self.stats.snapshots += 1
        except grpc.RpcError:
            pass

    # -- membership ------------------------------------------------------------------

    def member_step(self) -> None:
        """One step of: add a learner (a real process) -> promote it -> remove it."""
        c = self.c
        cl = self._stub(rpc_pb2_grpc.ClusterStub)
        if self.fourth is None:
            self.adds += 1
            m = c.plan_member(f"x{self.adds}")
            resp = self._retry(lambda: cl.MemberAdd(
                rpc_pb2.MemberAddRequest(peerURLs=[m.peer_url], isLearner=True), timeout=5), "member add")
            initial = ",".join(f"{mm.name}={u}" for mm in resp.members for u in mm.peerURLs if mm.name) + \
                f",{m.name}={m.peer_url}"
            c.start_planned(m, initial_cluster=initial, wait=True, timeout=CATCH_UP)
            self.fourth = len(c.members) - 1
            self.fourth_id = resp.member.ID
            self.fourth_voter = False
            self.active.append(self.fourth)
            self.wait_rejoined(self.fourth)
            self.stats.member_steps.append(f"add learner {m.name}")
        elif not self.fourth_voter:
            self._retry(lambda: cl.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=self.fourth_id), timeout=5),
                        "promote")
            self.fourth_voter = True
            self._set_live(self.active)
            self.stats.member_steps.append(f"promote {c.members[self.fourth].name}")
        else:
            idx = self.fourth
            self._retry(lambda: cl.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=self.fourth_id), timeout=5),
                        "remove", done=lambda: self.fourth_id not in self._member_ids(exclude=idx))
            self.active.remove(idx)
            self._set_live(self.active)
            # etcd: a removed member stops itself (its peers answer its streams "removed",
            # even when it missed the entry that removed it). Give it a few seconds.
            gone = self._exits_within(idx, REMOVED_EXIT_S)
            if not gone:
                self.stats.removed_zombies.append(c.members[idx].name)
            c.stop_member(idx, timeout=5)
            self.fourth = self.fourth_id = None
            self.stats.member_steps.append(f"remove {c.members[idx].name}")

    def _member_ids(self, exclude: int) -> set[int] | None:
        """Member ids as a member other than `exclude` sees them (None if none answers)."""
        for i in self.active:
            if i == exclude or not self.c.members[i].running():
                continue
            try:
                with grpc.insecure_channel(self.c.members[i].endpoint) as ch:
                    ms = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=5)
                return {m.ID for m in ms.members}
            except grpc.RpcError:
                continue
        return None

    def _exits_within(self, i: int, seconds: float) -> bool:
        m = self.c.members[i]
        try:
            wait_for(lambda: not m.running(), seconds, f"{m.name} to exit")
            return True
        except AssertionError:
            return False

    def _retry(self, fn, what: str, done=None):
        """Membership calls refused for a transient reason (learner not caught up yet,
        unhealthy right after a restart, a leader change) are retried until CATCH_UP.
        done(): True when an earlier attempt took effect after all (its answer was lost)."""
        deadline = time.monotonic() + CATCH_UP
        while True:
            try:
                return fn()
            except grpc.RpcError as e:
                if done is not None and done():
                    self.stats.member_steps.append(f"({what}: took effect though answered "
                                                   f"{e.code().name} {e.details()})")
                    return None
                transient = e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or \
                    (e.details() or "").endswith(("in sync with leader", "not enough started members"))
                if not transient or time.monotonic() > deadline:
                    asked = self.c.members[self.asked]
                    raise AssertionError(f"{what} failed on {asked.name} ({asked.endpoint}) for "
                                         f"{CATCH_UP:.0f} s: {e.code().name} {e.details()}") from None
                self.more_writes(5)   # let the cluster move on before trying again


def _keep_logs(c, seed: int) -> str:
    """Copy every member's log out of pytest's temporary dirs (which it prunes) for a post-mortem."""
    import shutil
    dest = f"/tmp/raftui-crash-logs/{seed}-{int(time.time())}"
    os.makedirs(dest, exist_ok=True)
    for m in c.members:
        try:
            shutil.copy(m.log_path, dest)
        except OSError:
            pass
    return dest


def _final_checks(c, active: list[int], writers: Writers) -> dict:
    eps = [c.members[i].endpoint for i in active]
    with grpc.insecure_channel(eps[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        got: dict[bytes, bytes] = {}
        for t in range(WRITERS):
            prefix = b"w%d/" % t
            r = kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=prefix[:-1] + b"0"), timeout=30)
            got.update((x.key, x.value) for x in r.kvs)
        rev = r.header.revision
    lost = [k for k, v in writers.acked.items() if got.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged writes lost or changed, e.g. {sorted(lost)[:5]}"

    # Every member applies up to rev, then all hash the same key space at rev.
    last: dict[str, str] = {}

    def hashes():
        out = {}
        for ep in eps:
            try:
                with grpc.insecure_channel(ep) as ch:
                    h = rpc_pb2_grpc.MaintenanceStub(ch).HashKV(rpc_pb2.HashKVRequest(revision=rev), timeout=10)
            except grpc.RpcError as e:
                last[ep] = f"{e.code().name} {e.details()}; status {_status(ep)}".replace("\n", " ")
                return None
            out[ep] = (h.hash, h.compact_revision)
        return out
    try:
        seen = wait_for(hashes, CATCH_UP, f"HashKV at revision {rev} on every member")
    except AssertionError as e:
        raise AssertionError(f"{e}; last answers: {last}") from None
    assert len(set(seen.values())) == 1, f"members disagree on HashKV at revision {rev}: {seen}"
    return {"revision": rev, "keys": len(got), "hash": next(iter(seen.values()))}


def _run(tmp_path_factory, cycles: int) -> None:
    seed = int(os.environ.get("RAFTUI_CRASH_SEED", "0")) or random.SystemRandom().randrange(1, 2 ** 31)
    print(f"\ncrash cycles: seed {seed} (RAFTUI_CRASH_SEED={seed} replays the schedule), {cycles} cycles")
    rng = random.Random(seed)
    c = start_cluster(tmp_path_factory.mktemp("crash"), 3, (f"--snapshot-count={SNAPSHOT_COUNT}",
                                                                f"--experimental-snapshot-catchup-entries={CATCHUP_ENTRIES}"))
    stats = Stats()
    writers = Writers(c, seed)
    t0 = time.monotonic()
    try:
        writers.start()
        crasher = Crasher(c, rng, writers, stats)
        for n in range(cycles):
            try:
                crasher.cycle()
                if n % 6 == 5:
                    crasher.member_step()
            except BaseException as e:
                raise AssertionError(f"cycle {n} (seed {seed}): {e}\n  member logs kept in "
                                     f"{_keep_logs(c, seed)}") from e
        if crasher.fourth is not None and not crasher.fourth_voter:
            crasher.member_step()   # learners serve no HashKV: promote it, check it too
        writers.join()
        crasher.close()
        final = _final_checks(c, crasher.active, writers)
        took = time.monotonic() - t0
        rs = sorted(stats.restart_s)
        print(f"crash cycles done in {took:.0f} s: {stats.cycles} kill -9 cycles ({stats.leader_kills} of the leader, "
              f"{stats.long_downs} down past a snapshot; {stats.inflight_snapshots} while streaming a snapshot, "
              f"{stats.inflight_compactions} while compacting), {stats.compactions} compactions, {stats.snapshots} "
              f"snapshot streams, membership: {stats.member_steps}; removed members still running after "
              f"{REMOVED_EXIT_S:.0f} s: {stats.removed_zombies}; restart-to-caught-up median "
              f"{rs[len(rs) // 2]:.1f} s, max {rs[-1]:.1f} s; {len(writers.acked)} acknowledged puts, "
              f"{writers.failed} failed {dict(sorted(writers.errors.items(), key=lambda kv: -kv[1])[:4])}; "
              f"final {final}")
    finally:
        writers.stop.set()
        c.stop()


def test_crash_cycles(hard_cluster_factory, tmp_path_factory):
    assert hard_cluster_factory  # the raftnode binary check (skips without the engine)
    _run(tmp_path_factory, CI_CYCLES)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_crash_cycles_soak(hard_cluster_factory, tmp_path_factory):
    assert hard_cluster_factory
    _run(tmp_path_factory, SOAK_CYCLES)
