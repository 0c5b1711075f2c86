"""Jepsen-style harness: concurrent clients on a few registers, a nemesis, a
recorded history, and the linearizability checker as the judge.

Pieces:

* ``Recorder``  -- the history: invoke / ok / fail / info events with the
  client's monotonic clock (ns), plus nemesis events for the timeline.
* ``Client``    -- one logical client (an asyncio task on its own grpc.aio
  channels): random read / write / cas on the keys, each op with a short
  deadline, against one member at a time, re-picking a member on failure.
* ``Nemesis``   -- injects faults into a ``RaftnodeCluster`` on a schedule:
  kill -9 + restart (a random member, the leader, a majority at once, or
  every member at once), partitions through the members' Fault service
  (isolate one member or the leader, a bridge, a minority split; Cut +
  Heal), a flaky network (Drop + Delay), SIGSTOP / SIGCONT. It also notices
  members that die by themselves (a crash is a finding).
* ``run``       -- clients + nemesis for a while, then heal everything,
  wait for a leader, read every key once more and check the history.

Outcome of an op (what makes a history honest):

* reads: ``ok`` with the value; any error is ``fail`` -- a read changes
  nothing, so "did it happen" does not matter;
* writes and cas: ``ok`` on an answer. An error is ``fail`` only when the
  request provably never reached a member: gRPC's "failed to connect to all
  addresses" (the channel has no connection -- refused, or backing off
  after a refusal -- and fails the call before anything is sent).
  Everything else -- the client's deadline, "request timed out", "leader
  changed", a connection reset -- is ``info``: the request may have been
  proposed and still commit later, as in etcd. (raftnode drops a queued
  proposal whose caller gave up, so a server-side "context deadline
  exceeded" or "no leader" means never proposed; classifying those as
  ``info`` too is merely conservative.)

Reproducibility: all random choices (each client's ops, keys and members,
the nemesis schedule, its targets and timings) come from RNGs derived from
one seed, one RNG per task so that a task's choices do not depend on how
the tasks interleave. Timing still varies from run to run (scheduling,
elections, fsync), so a seed replays the same plan, not the same history.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import pathlib
import random
import shutil
import signal
import time
from typing import Any, Sequence

import grpc

from engine.proto import fault_pb2, fault_pb2_grpc, rpc_pb2, rpc_pb2_grpc
from tests.support import linearizability as lin
from tests.support.raftnode import RaftnodeCluster, RaftnodeError

OP_TIMEOUT = 1.0            # per-op client deadline (s)
NEVER_SENT = "failed to connect to all addresses"
CHANNEL_OPTIONS = [
    # Reconnect quickly to a restarted member instead of backing off for seconds.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.enable_retries", 0),
]

KILL, LEADER_KILL = "kill", "leader-kill"
PARTITION, PARTITION_LEADER = "partition", "partition-leader"
PAUSE, PAUSE_LEADER = "pause", "pause-leader"
SPLIT = "split"                      # 5+ members: a minority group cut off from the majority
FLAKY = "flaky-net"                  # a member's peer traffic: 30% dropped, the rest delayed 20-80 ms
BRIDGE = "bridge"                    # two halves that cannot talk, one member (the bridge) sees both
KILL_MAJORITY = "kill-majority"      # kill -9 a majority at once (no quorum), then restart them
CRASH_ALL = "crash-all"              # kill -9 of every member at once
STANDARD_FAULTS = (KILL, LEADER_KILL, KILL_MAJORITY, PARTITION, PARTITION_LEADER, BRIDGE, PAUSE, PAUSE_LEADER,
                   FLAKY)


def seed_from_env() -> int:
    """RAFTUI_JEPSEN_SEED if set (to replay a plan), else a fresh random seed."""
    s = os.environ.get("RAFTUI_JEPSEN_SEED")
    return int(s) if s else int.from_bytes(os.urandom(4), "big")


def derived_rng(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}/{name}")


# ---------------------------------------------------------------- the history


class Recorder:
    """The history. Single asyncio loop; the clock is time.monotonic_ns()."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._next = 0
        self.t0 = time.monotonic_ns()

    def invoke(self, process: Any, f: str, key: str, value: Any) -> int:
        self._next += 1
        self.events.append(dict(id=self._next, type="invoke", process=process, f=f, key=key, value=value,
                                time=time.monotonic_ns()))
        return self._next

    def complete(self, op_id: int, type_: str, process: Any, f: str, key: str, value: Any, **extra) -> None:
        self.events.append(dict(id=op_id, type=type_, process=process, f=f, key=key, value=value,
                                time=time.monotonic_ns(), **extra))

    def nemesis(self, what: str, **extra) -> None:
        self.events.append(dict(type="nemesis", what=what, time=time.monotonic_ns(), **extra))

    def nemesis_events(self) -> list[dict]:
        return [e for e in self.events if e["type"] == "nemesis"]

    def text(self) -> str:
        """Every event on one line, in time order."""
        out = []
        for e in sorted(self.events, key=lambda e: e["time"]):
            t = (e["time"] - self.t0) / 1e9
            if e["type"] == "nemesis":
                out.append(f"{t:9.3f}s  nemesis   {e['what']}")
                continue
            v = e.get("value")
            extra = ""
            if e["f"] == "cas" and e["type"] == "ok":
                extra = " swapped" if e.get("swapped") else f" not-swapped current={e.get('current')!r}"
            err = f"  ({e['error']})" if e.get("error") else ""
            node = f"@{e['node']}" if e.get("node") else ""
            out.append(f"{t:9.3f}s  p{e['process']:<7} {e['type']:<6} #{e['id']:<5} {node:<4} {e['f']:<5} "
                       f"{e['key']} {v!r}{extra}{err}")
        return "\n".join(out)


# ---------------------------------------------------------------- clients


def _channel(endpoint: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)


def _outcome(f: str, e: grpc.aio.AioRpcError) -> str:
    if f == lin.READ:
        return lin.FAIL
    if e.code() == grpc.StatusCode.UNAVAILABLE and NEVER_SENT in (e.details() or ""):
        return lin.FAIL
    return lin.INFO


def _short(e: grpc.aio.AioRpcError) -> str:
    d = (e.details() or "").split(";")[0]
    return f"{e.code().name}: {d[:80]}"


class Client:
    """One logical client. ``process`` changes after every indeterminate op,
    Jepsen's convention: the op stays open forever, so its process must
    never be reused for another op."""

    def __init__(self, idx: int, n_clients: int, endpoints: Sequence[str], keys: Sequence[str],
                 rng: random.Random, rec: Recorder, mix: dict[str, float],
                 names: Sequence[str] | None = None) -> None:
        self.idx = idx
        self.names = list(names) if names else [f"m{i}" for i in range(len(endpoints))]
        self.n = n_clients
        self.process = idx
        self.endpoints = list(endpoints)
        self.keys = list(keys)
        self.rng = rng
        self.rec = rec
        self.mix = mix
        self.member = rng.randrange(len(endpoints))
        self.channels: dict[int, grpc.aio.Channel] = {}
        self.known: dict[str, str] = {}   # a value this client last saw per key (for cas)
        self.seq = 0
        self.stats: collections.Counter = collections.Counter()

    def stub(self) -> rpc_pb2_grpc.KVStub:
        ch = self.channels.get(self.member)
        if ch is None:
            ch = self.channels[self.member] = _channel(self.endpoints[self.member])
        return rpc_pb2_grpc.KVStub(ch)

    def repick(self) -> None:
        others = [i for i in range(len(self.endpoints)) if i != self.member]
        if others:
            self.member = self.rng.choice(others)

    def next_value(self) -> str:
        self.seq += 1
        return f"c{self.idx}-{self.seq}"

    async def run(self, stop: asyncio.Event) -> None:
        kinds, weights = zip(*self.mix.items())
        while not stop.is_set():
            f = self.rng.choices(kinds, weights)[0]
            key = self.rng.choice(self.keys)
            if f == lin.CAS and key not in self.known:
                f = lin.WRITE
            await self.do(f, key)

    async def do(self, f: str, key: str, timeout: float = OP_TIMEOUT) -> str:
        """One op, recorded; returns its outcome (ok / fail / info)."""
        p = self.process
        kb = key.encode()
        value: Any = None
        if f == lin.WRITE:
            value = self.next_value()
        elif f == lin.CAS:
            old, new = self.known[key], self.next_value()
            value = [old, new]
        oid = self.rec.invoke(p, f, key, value)
        try:
            if f == lin.READ:
                # Default Range = linearizable (ReadIndex), not serializable.
                resp = await self.stub().Range(rpc_pb2.RangeRequest(key=kb), timeout=timeout)
                got = resp.kvs[0].value.decode() if resp.kvs else None
                self.rec.complete(oid, lin.OK, p, f, key, got, node=self.names[self.member])
                if got is not None:
                    self.known[key] = got
            elif f == lin.WRITE:
                await self.stub().Put(rpc_pb2.PutRequest(key=kb, value=value.encode()), timeout=timeout)
                self.rec.complete(oid, lin.OK, p, f, key, value, node=self.names[self.member])
                self.known[key] = value
            else:
                C = rpc_pb2.Compare
                req = rpc_pb2.TxnRequest(
                    compare=[C(result=C.EQUAL, target=C.VALUE, key=kb, value=old.encode())],
                    success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=kb, value=new.encode()))],
                    failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=kb))])
                resp = await self.stub().Txn(req, timeout=timeout)
                extra: dict[str, Any] = {"swapped": resp.succeeded}
                if resp.succeeded:
                    self.known[key] = new
                else:
                    kvs = resp.responses[0].response_range.kvs if resp.responses else []
                    cur = kvs[0].value.decode() if kvs else None
                    extra["current"] = cur
                    if cur is not None:
                        self.known[key] = cur
                self.rec.complete(oid, lin.OK, p, f, key, [old, new], node=self.names[self.member], **extra)
            outcome = lin.OK
        except grpc.aio.AioRpcError as e:
            outcome = _outcome(f, e)
            self.rec.complete(oid, outcome, p, f, key, value, node=self.names[self.member], error=_short(e))
            self.repick()
            if outcome == lin.INFO:
                self.process += self.n
            elif NEVER_SENT in (e.details() or ""):
                await asyncio.sleep(0.05)   # retry pacing: do not spin while every member is down
        self.stats[(f, outcome)] += 1
        return outcome

    async def close(self) -> None:
        await asyncio.gather(*(ch.close() for ch in self.channels.values()), return_exceptions=True)


# ---------------------------------------------------------------- restarting members

def spawn(cluster: RaftnodeCluster, i: int) -> None:
    """Start member i again without waiting for it to listen (the nemesis
    keeps the clients going meanwhile)."""
    cluster.restart(i, wait=False)


# ---------------------------------------------------------------- the nemesis


class Nemesis:
    """Faults on a schedule drawn from its own RNG. Blocking cluster calls
    (reaping a killed member, waiting until one listens, finding the leader)
    run in a worker thread so the clients keep going; one fault at a time,
    always repaired before the next."""

    def __init__(self, cluster: RaftnodeCluster, rng: random.Random, rec: Recorder) -> None:
        self.cluster = cluster
        self.rng = rng
        self.rec = rec
        self.injected: collections.Counter = collections.Counter()
        self.problems: list[str] = []
        self.crashes: list[str] = []          # members that died by themselves
        self._reaped: set[int] = set()        # id() of processes already looked at
        self.cut: set[int] = set()

    def scan_crashes(self) -> None:
        """Record every member process that exited on its own (not our
        SIGKILL, not a SIGTERM stop): a crash is a finding, whatever else."""
        for m in self.cluster.members:
            p = m.proc
            if p is None or id(p) in self._reaped or p.poll() is None:
                continue
            self._reaped.add(id(p))
            if p.returncode in (-signal.SIGKILL, -signal.SIGTERM):
                continue
            how = f"signal {signal.Signals(-p.returncode).name}" if p.returncode < 0 else f"exit {p.returncode}"
            self.crashes.append(f"{m.name} (pid {p.pid}) died with {how}; log {m.log_path}")
            self.rec.nemesis(f"CRASH: {m.name} pid {p.pid} died with {how}")

    def name(self, i: int) -> str:
        return self.cluster.members[i].name

    async def leader(self) -> int | None:
        idx = await asyncio.to_thread(self.cluster.leader_index)
        if idx is not None:
            return idx
        try:
            return await asyncio.to_thread(self.cluster.wait_leader, 10.0)
        except RaftnodeError as e:
            self.problems.append(f"no leader to target: {str(e).splitlines()[0]}")
            return None

    async def fault_rpc(self, i: int, method: str, req, attempts: int = 3) -> bool:
        """Call the Fault service of member i. Its own channel (grpc shares
        subchannels between channels in a process, and the clients' one to a
        member that was just restarted may still be backing off), waiting
        for the connection rather than failing fast."""
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        for attempt in range(attempts):
            ch = grpc.aio.insecure_channel(self.cluster.members[i].endpoint, options=options)
            try:
                await getattr(fault_pb2_grpc.FaultStub(ch), method)(req, timeout=2.0, wait_for_ready=True)
                return True
            except grpc.aio.AioRpcError as e:
                err = f"Fault.{method} on {self.name(i)} failed (attempt {attempt + 1}): {e.code().name}: {e.details()}"
                self.rec.nemesis(err)
            finally:
                await ch.close()
        self.problems.append(err)
        return False

    async def run_schedule(self, kinds: Sequence[str], until: float, *, max_faults: int = 40,
                           quiet: tuple[float, float] = (0.4, 1.0), hold: tuple[float, float] = (0.8, 2.0)) -> None:
        """Every kind once (shuffled), then random kinds until ``until`` (monotonic)."""
        plan = list(kinds)
        self.rng.shuffle(plan)
        n = 0
        while n < max_faults:
            if n >= len(plan):
                if time.monotonic() >= until:
                    break
                plan.append(self.rng.choice(list(kinds)))
            kind = plan[n]
            n += 1
            await asyncio.sleep(self.rng.uniform(*quiet))          # schedule, not synchronisation
            await self.inject(kind, self.rng.uniform(*hold))

    async def inject(self, kind: str, hold: float) -> None:
        self.scan_crashes()
        try:
            await self._inject(kind, hold)
        except RaftnodeError as e:
            # The helper noticed a member that died by itself; record it and
            # go on (heal_all restarts it) so the history still gets checked.
            self.scan_crashes()
            self.problems.append(f"during {kind}: {str(e).splitlines()[0]}")

    async def _inject(self, kind: str, hold: float) -> None:
        c = self.cluster
        size = len(c.members)
        target = self.rng.randrange(size)      # drawn even when unused: keeps the RNG stream stable
        if kind in (LEADER_KILL, PARTITION_LEADER, PAUSE_LEADER):
            lead = await self.leader()
            if lead is None:
                return
            target = lead
        if kind in (KILL, LEADER_KILL, PAUSE, PAUSE_LEADER) and not c.members[target].running():
            self.problems.append(f"{kind}: {self.name(target)} is not running")
            return
        if kind in (KILL, LEADER_KILL):
            self.rec.nemesis(f"{kind} {self.name(target)}: kill -9 pid {c.members[target].pid}")
            await asyncio.to_thread(c.kill, target)
            self.injected[kind] += 1
            await asyncio.sleep(hold)
            self.rec.nemesis(f"restart {self.name(target)}")
            await self.restart([target])
            self.rec.nemesis(f"{self.name(target)} listening again")
        elif kind in (PARTITION, PARTITION_LEADER):
            self.rec.nemesis(f"{kind} {self.name(target)}: Cut all peers")
            if await self.fault_rpc(target, "Cut", fault_pb2.CutRequest(all=True)):
                self.cut.add(target)
                self.injected[kind] += 1
                await asyncio.sleep(hold)
                self.rec.nemesis(f"heal {self.name(target)}")
                if await self.fault_rpc(target, "Heal", fault_pb2.HealRequest()):
                    self.cut.discard(target)
        elif kind == SPLIT:
            group = self.rng.sample(range(size), (size - 1) // 2)
            rest = [c.members[j].member_id for j in range(size) if j not in group]
            names = ",".join(self.name(j) for j in group)
            self.rec.nemesis(f"split: {{{names}}} cut off from the other {len(rest)}")
            done = [j for j in group if await self.fault_rpc(j, "Cut", fault_pb2.CutRequest(peers=rest))]
            self.cut.update(done)
            if done:
                self.injected[kind] += 1
            await asyncio.sleep(hold)
            self.rec.nemesis(f"heal {names}")
            for j in done:
                if await self.fault_rpc(j, "Heal", fault_pb2.HealRequest()):
                    self.cut.discard(j)
        elif kind == BRIDGE:
            others = [j for j in range(size) if j != target]
            self.rng.shuffle(others)
            half_a, half_b = others[:len(others) // 2], others[len(others) // 2:]
            ids_b = [c.members[j].member_id for j in half_b]
            desc = (f"{{{','.join(self.name(j) for j in half_a)}}} x "
                    f"{{{','.join(self.name(j) for j in half_b)}}}, bridge {self.name(target)}")
            self.rec.nemesis(f"bridge: {desc}")
            done = [j for j in half_a if await self.fault_rpc(j, "Cut", fault_pb2.CutRequest(peers=ids_b))]
            self.cut.update(done)
            if done:
                self.injected[kind] += 1
            await asyncio.sleep(hold)
            self.rec.nemesis(f"heal {','.join(self.name(j) for j in done)}")
            for j in done:
                if await self.fault_rpc(j, "Heal", fault_pb2.HealRequest()):
                    self.cut.discard(j)
        elif kind == KILL_MAJORITY:
            victims = [j for j in self.rng.sample(range(size), size // 2 + 1) if c.members[j].running()]
            procs = [(c.members[j], c.members[j].proc) for j in victims]
            self.rec.nemesis(f"{kind}: kill -9 " + ", ".join(f"{m.name} pid {p.pid}" for m, p in procs))
            for m, p in procs:
                os.kill(p.pid, signal.SIGKILL)
            for m, p in procs:
                await asyncio.to_thread(p.wait, 10.0)
                m.paused = False
            self.injected[kind] += 1
            await asyncio.sleep(hold)
            self.rec.nemesis("restart " + ",".join(self.name(j) for j in victims))
            await self.restart(victims)
            self.rec.nemesis("listening again")
        elif kind == FLAKY:
            self.rec.nemesis(f"{kind} {self.name(target)}: drop 30%, delay 20ms+60ms jitter, all peers")
            if (await self.fault_rpc(target, "Drop", fault_pb2.DropRequest(all=True, rate=0.3))
                    and await self.fault_rpc(target, "Delay", fault_pb2.DelayRequest(all=True, ms=20,
                                                                                     jitter_ms=60))):
                self.injected[kind] += 1
            self.cut.add(target)
            await asyncio.sleep(hold)
            self.rec.nemesis(f"heal {self.name(target)}")
            if await self.fault_rpc(target, "Heal", fault_pb2.HealRequest()):
                self.cut.discard(target)
        elif kind in (PAUSE, PAUSE_LEADER):
            self.rec.nemesis(f"{kind} {self.name(target)}: SIGSTOP pid {c.members[target].pid}")
            c.pause(target)
            self.injected[kind] += 1
            await asyncio.sleep(hold)
            self.rec.nemesis(f"resume {self.name(target)}: SIGCONT")
            c.resume(target)
        elif kind == CRASH_ALL:
            await self.crash_all(hold)
        else:
            raise ValueError(kind)

    async def crash_all(self, hold: float) -> None:
        """kill -9 every member at once (signals first, then reap), restart all."""
        c = self.cluster
        procs = [(m, m.proc) for m in c.members if m.running()]
        self.rec.nemesis("crash-all: kill -9 pids " + ",".join(str(p.pid) for _, p in procs))
        for m, p in procs:
            os.kill(p.pid, signal.SIGKILL)
        for m, p in procs:
            await asyncio.to_thread(p.wait, 10.0)
            m.paused = False
        self.cut.clear()
        self.injected[CRASH_ALL] += 1
        await asyncio.sleep(hold)
        self.rec.nemesis("restart all")
        await self.restart(range(len(c.members)))
        self.rec.nemesis("all listening again")

    async def restart(self, which) -> None:
        """Start members again (``spawn``) and wait until they listen."""
        which = list(which)
        for i in which:
            spawn(self.cluster, i)
        await asyncio.to_thread(self.cluster.wait_listening, 30.0, which)

    async def heal_all(self) -> None:
        """Resume, restart and heal every member; then wait for a leader."""
        c = self.cluster
        self.scan_crashes()
        for i, m in enumerate(c.members):
            if m.paused:
                c.resume(i)
                self.rec.nemesis(f"final: resume {m.name}")
        down = [i for i, m in enumerate(c.members) if not m.running()]
        if down:
            self.rec.nemesis("final: restart " + ",".join(self.name(i) for i in down))
            await self.restart(down)
        for i in range(len(c.members)):
            if i not in down:
                await self.fault_rpc(i, "Heal", fault_pb2.HealRequest())
        self.cut.clear()
        self.rec.nemesis("final: all healed")
        try:
            lead = await asyncio.to_thread(c.wait_leader, 20.0)
        finally:
            self.scan_crashes()
        self.rec.nemesis(f"final: leader {self.name(lead)}")


# ---------------------------------------------------------------- a run


@dataclasses.dataclass
class RunResult:
    seed: int
    history: list[dict]
    recorder: Recorder
    verdict: lin.Verdict
    counts: collections.Counter          # (f, outcome) -> n
    faults: collections.Counter
    final_values: dict[str, Any]
    problems: list[str]
    crashes: list[str]
    elapsed: float
    check_seconds: float

    @property
    def ok_ops(self) -> int:
        return sum(n for (f, o), n in self.counts.items() if o == lin.OK)

    def summary(self) -> str:
        rows = []
        for f in (lin.READ, lin.WRITE, lin.CAS):
            rows.append(f"  {f:<5} ok {self.counts[(f, lin.OK)]:>5}  fail {self.counts[(f, lin.FAIL)]:>4}  "
                        f"info {self.counts[(f, lin.INFO)]:>4}")
        swapped = sum(1 for e in self.history if e["type"] == "ok" and e["f"] == "cas" and e.get("swapped"))
        return "\n".join([
            f"seed {self.seed}: {self.ok_ops} ok ops in {self.elapsed:.1f}s, check {self.check_seconds:.2f}s, "
            f"{'LINEARIZABLE' if self.verdict.valid else 'NOT LINEARIZABLE' if self.verdict.valid is False else 'UNDECIDED'}",
            *rows,
            f"  cas swapped {swapped}",
            "  faults: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.faults.items())),
            "  final: " + ", ".join(f"{k}={v!r}" for k, v in self.final_values.items()),
            *(f"  nemesis problem: {p}" for p in self.problems),
            *(f"  CRASH: {p}" for p in self.crashes),
        ])

    def save(self, name: str, cluster: RaftnodeCluster | None = None, extra: str = "") -> pathlib.Path:
        """History, timeline, verdict and member logs under /tmp."""
        d = pathlib.Path("/tmp") / f"raftui-jepsen-{name}-seed{self.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        d.mkdir(parents=True, exist_ok=True)
        lin.dump_history(self.history, d / "history.jsonl")
        (d / "timeline.txt").write_text(self.recorder.text() + "\n")
        (d / "report.txt").write_text(self.summary() + "\n\n" + extra + "\n\n" + self.verdict.report() + "\n")
        if cluster is not None:
            for m in cluster.members:
                try:
                    shutil.copy(m.log_path, d / f"{m.name}.log")
                except OSError:
                    pass
        return d


async def final_reads(cluster: RaftnodeCluster, keys: Sequence[str], rec: Recorder,
                      deadline_s: float = 30.0) -> dict[str, Any]:
    """One ok linearizable read per key (retrying on other members), recorded in the history."""
    rng = random.Random(0)
    client = Client(10_000, 1, cluster.endpoints, keys, rng, rec, {lin.READ: 1},
                    [m.name for m in cluster.members])
    client.process = "final"
    out: dict[str, Any] = {}
    deadline = time.monotonic() + deadline_s
    try:
        for key in keys:
            while True:
                r = await client.do(lin.READ, key, timeout=2.0)
                if r == lin.OK:
                    out[key] = next(e["value"] for e in reversed(rec.events)
                                    if e["type"] == lin.OK and e["key"] == key)
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"no successful final read of {key} within {deadline_s}s")
                await asyncio.sleep(0.1)   # retry pacing after a failed read
    finally:
        await client.close()
    return out


async def run(cluster: RaftnodeCluster, *, seed: int, keys: Sequence[str], duration: float,
              n_clients: int = 5, faults: Sequence[str] = STANDARD_FAULTS,
              mix: dict[str, float] | None = None, schedule=None) -> RunResult:
    """Clients for ``duration`` s while the nemesis runs ``schedule`` (default:
    every fault in ``faults`` at least once, then random ones until the end);
    then heal, settle, final reads, check."""
    mix = mix or {lin.READ: 0.4, lin.WRITE: 0.35, lin.CAS: 0.25}
    rec = Recorder()
    stop = asyncio.Event()
    names = [m.name for m in cluster.members]
    clients = [Client(i, n_clients, cluster.endpoints, keys, derived_rng(seed, f"client{i}"), rec, mix, names)
               for i in range(n_clients)]
    nemesis = Nemesis(cluster, derived_rng(seed, "nemesis"), rec)
    t0 = time.monotonic()
    tasks = [asyncio.create_task(c.run(stop)) for c in clients]
    try:
        if schedule is None:
            await nemesis.run_schedule(faults, t0 + duration)
        else:
            await schedule(nemesis)
        left = t0 + duration - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)    # the rest of the run is fault-free traffic
    finally:
        stop.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    for r in outcomes:
        if isinstance(r, Exception):   # a bug in a client, not a cluster error: surface it
            raise r
    rec.nemesis("clients stopped")
    finals: dict[str, Any] = {}
    try:
        await nemesis.heal_all()
        finals = await final_reads(cluster, keys, rec)
    except (RaftnodeError, AssertionError) as e:
        # Did not settle: a finding too. Still check what was recorded.
        nemesis.scan_crashes()
        nemesis.problems.append(f"cluster did not settle after healing: {str(e).splitlines()[0]}")
    elapsed = time.monotonic() - t0
    counts: collections.Counter = collections.Counter()
    for c in clients:
        counts.update(c.stats)
    t = time.monotonic()
    verdict = lin.check(rec.events)
    return RunResult(seed, list(rec.events), rec, verdict, counts, nemesis.injected, finals,
                     nemesis.problems, nemesis.crashes, elapsed, time.monotonic() - t)


def lost_writes(history: Sequence[dict], finals: dict[str, Any]) -> list[str]:
    """Acknowledged writes that are neither the final value nor superseded.

    With unique values, the final value f of a key names the op W that wrote
    it. An acknowledged write w (ok write, or ok cas that swapped) is lost if
    W completed before w was invoked: w must then come after W, so the final
    value cannot be W's. Also reported: a final value nobody wrote, or one
    written by an op that was told it failed.
    """
    ops = lin.ops_from_history(history)
    problems = []
    for key, f in finals.items():
        kops = [o for o in ops if o.key == key]
        acked = [o for o in kops if o.status == lin.OK and o.mutates()]
        writers = [o for o in kops if o.mutates() or (o.f == lin.CAS and o.status == lin.FAIL)]
        w_final = [o for o in writers if (o.value if o.f == lin.WRITE else o.value[1]) == f]
        if f is None:
            problems += [f"{key}: acknowledged {o.describe()} lost: the key is absent" for o in acked]
            continue
        if not w_final:
            problems.append(f"{key}: final value {f!r} was never written")
            continue
        W = w_final[0]
        if W.status == lin.FAIL:
            problems.append(f"{key}: final value {f!r} comes from {W.describe()}, which was told it failed")
        for o in acked:
            if o is not W and W.complete < o.invoke:
                problems.append(f"{key}: acknowledged {o.describe()} lost: the final value {f!r} comes from "
                                f"{W.describe()}, which completed before it began")
    return problems
