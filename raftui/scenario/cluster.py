"""What a scenario does to a cluster, through the console's own layers.

`ScenarioCluster` wraps a ClusterSource (polls, etcd's calls, the Fault
service) and, in host mode, the ClusterHost (kill, restart, pause, resume,
new members). Every method returns an ActionResult or a state; none raises
for a member being down. No UI here (tests/console/test_scenario.py checks
that importing raftui.scenario loads no textual).
"""
from __future__ import annotations

import asyncio
import dataclasses

import grpc

from engine.proto import rpc_pb2
from raftui.host import ClusterHost, HostError
from raftui.host.health import log_tail, with_process_health
from raftui.host.learner import add_hosted_learner
from raftui.source import ClusterSource, TlsFiles
from raftui.source import actions, errors, faults
from raftui.source.codec import decode, encode
from raftui.source.connection import ClientAuth, Connections, Stubs
from raftui.source.model import ActionResult, ClusterState, Member

KV_DEADLINE = 5.0                 # etcdctl's --command-timeout
RESTART_ANSWER_WITHIN = 30.0      # a restarted member replays its WAL first
LOOK_EVERY = 0.2                  # between two looks at a condition (never a synchronisation by itself)


@dataclasses.dataclass(frozen=True)
class Agreement:
    """Who the answering voters say leads, if a majority of all voters agree (same term)."""
    leader: Member | None
    term: int
    text: str


class ScenarioCluster:
    def __init__(self, endpoints: list[str], host: ClusterHost | None = None, tls: TlsFiles | None = None,
                 source: ClusterSource | None = None, auth: ClientAuth | None = None) -> None:
        # `auth` (--user): every call carries its token; with a given source, the source's.
        auth = auth if source is None else source.auth
        self.source = source or ClusterSource(endpoints, tls, **({"auth": auth} if auth is not None else {}))
        self._own_source = source is None
        self.host = host
        self._conns = Connections(list(endpoints), tls, auth=auth)
        self._faults_set: dict[str, tuple[int, int]] = {}   # name -> (drop %, delay ms) the scenario set
        # Told of every fault and process action (result, kind): `raftui run --lincheck` records them
        # in the history as nemesis events.
        self.on_action: list = []

    async def close(self) -> None:
        await self._conns.close()
        if self._own_source:
            await self.source.close()

    # ------------------------------------------------------------- looking

    async def refresh(self) -> ClusterState:
        state = await self.source.poll()
        if self.host is not None:
            state = with_process_health(state, self.host)
        return state

    def stubs(self, m: Member) -> Stubs:
        return self._conns.get(m.endpoint)

    @staticmethod
    def agreement(state: ClusterState) -> Agreement:
        """The leader a majority of the voters names in the highest term they answer with.
        (A deposed leader cut off from the others still thinks it leads: it is outvoted.)"""
        voters = [m for m in state.members if not m.is_learner]
        quorum = len(voters) // 2 + 1
        answering = [m for m in voters if m.health in ("up", "partitioned")]
        if not answering:
            return Agreement(None, 0, "no member answers")
        term = max(m.term for m in answering)
        votes: dict[int, int] = {}
        for m in answering:
            if m.term == term and m.leader_id:
                votes[m.leader_id] = votes.get(m.leader_id, 0) + 1
        for leader_id, n in votes.items():
            if n >= quorum:
                leader = state.member(leader_id)
                if leader is not None and leader.health in ("up", "partitioned"):
                    return Agreement(leader, term, f"{leader.label} leads term {term}")
        said = ", ".join(f"{m.label}: term {m.term} leader "
                         f"{(state.member(m.leader_id).label if state.member(m.leader_id) else m.leader_id) or '-'}"
                         for m in answering)
        return Agreement(None, term, f"no leader a majority ({quorum} of {len(voters)}) agrees on ({said})")

    # ------------------------------------------------------------- keys

    async def put(self, m: Member, key: str, value: str, deadline: float = KV_DEADLINE) -> ActionResult:
        try:
            resp = await self.stubs(m).kv.Put(rpc_pb2.PutRequest(key=encode(key), value=encode(value)),
                                              timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            return ActionResult.fail(errors.describe(exc))
        return ActionResult(True, f"put {key} at revision {resp.header.revision} (via {m.label})",
                            resp.header.revision)

    async def delete(self, m: Member, key: str) -> ActionResult:
        return await actions.delete(self.stubs(m), key)

    async def read(self, m: Member, key: str) -> ActionResult:
        """A linearizable read: data = the value, or None for no key."""
        try:
            resp = await self.stubs(m).kv.Range(rpc_pb2.RangeRequest(key=encode(key)), timeout=KV_DEADLINE)
        except grpc.aio.AioRpcError as exc:
            return ActionResult.fail(errors.describe(exc))
        value = decode(resp.kvs[0].value) if resp.kvs else None
        return ActionResult(True, f"read {key} via {m.label}", value)

    async def compact_now(self, m: Member) -> ActionResult:
        try:
            st = await self.stubs(m).maintenance.Status(rpc_pb2.StatusRequest(), timeout=KV_DEADLINE)
        except grpc.aio.AioRpcError as exc:
            return ActionResult.fail(f"status of {m.label}: {errors.describe(exc)}")
        return await self.source.compact(st.header.revision)

    # ------------------------------------------------------------- faults

    def _told(self, result: ActionResult, kind: str) -> ActionResult:
        """Faults and process actions go into the console's timeline, as its own do (the
        live linearizability check records them as nemesis events from there)."""
        self.source.note(result.text, result.ok, kind if result.ok else "error")
        for listener in self.on_action:
            listener(result, kind)
        return result

    async def partition(self, side_a: list[Member], side_b: list[Member]) -> ActionResult:
        label = "{" + ", ".join(m.label for m in side_a) + "} | {" + ", ".join(m.label for m in side_b) + "}"
        return self._told(await faults.partition([(self.stubs(m), m.id) for m in side_a],
                                                 [(self.stubs(m), m.id) for m in side_b], label), "partition")

    async def link_cut(self, src: Member, dst: Member, cut: bool) -> ActionResult:
        """Cut (or open) the one-way link src -> dst (ClusterSource's link matrix call; it notes it)."""
        link = getattr(self.source, "link_cut", None)
        if link is None:
            return ActionResult.fail("one-way cuts need a console with the link matrix (ClusterSource.link_cut)")
        result = await link(src.id, dst.id, cut)
        for listener in self.on_action:
            listener(result, "partition")
        return result

    async def heal(self, members: list[Member]) -> ActionResult:
        result = await faults.heal([self.stubs(m) for m in members])
        if result.ok:
            self._faults_set.clear()
        return self._told(result, "heal")

    async def drop_delay(self, m: Member, drop: int | None = None, delay_ms: int | None = None) -> ActionResult:
        """One member's drop rate and delay; the one not given stays as the scenario last set it."""
        old_drop, old_delay = self._faults_set.get(m.label, (0, 0))
        new = (old_drop if drop is None else drop, old_delay if delay_ms is None else delay_ms)
        result = await faults.drop_delay(self.stubs(m), m.label, *new)
        if result.ok:
            self._faults_set[m.label] = new
        return self._told(result, "fault")

    # ------------------------------------------------------------- processes (host mode)

    async def host_call(self, verb: str, method: str, m: Member) -> ActionResult:
        if self.host is None:
            return ActionResult.fail(f"{verb} {m.label}: not possible when attached (no local processes)")
        try:
            await asyncio.to_thread(getattr(self.host, method), m.name)
        except (HostError, OSError, KeyError) as exc:
            return self._told(ActionResult.fail(f"{verb} {m.label}: {exc}"), "host")
        return self._told(ActionResult(True, f"{verb} {m.label}"), "host")

    async def restart(self, m: Member) -> ActionResult:
        """Start a member's process again; done once it answers as itself."""
        if self.host is None:
            return ActionResult.fail(f"restart {m.label}: not possible when attached (no local processes)")
        if await self.source.answers(m.id):
            return ActionResult(True, f"{m.label} is running already")
        try:
            await asyncio.to_thread(self.host.restart, m.name)
        except (HostError, OSError, KeyError) as exc:
            return self._told(ActionResult.fail(f"restart {m.label}: {exc}"), "host")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTART_ANSWER_WITHIN
        while True:
            if await self.source.answers(m.id):
                return self._told(ActionResult(True, f"restarted {m.label}: it answers on {m.endpoint}"), "host")
            if self.host.state(m.name) not in ("running", "paused") or loop.time() >= deadline:
                why = await asyncio.to_thread(log_tail, self.host, m.name)
                return self._told(ActionResult.fail(f"restart {m.label} failed" + (f": {why}" if why else "")),
                                  "host")
            await asyncio.sleep(LOOK_EVERY)

    async def add_learner(self) -> ActionResult:
        """Host mode: ports for one more member, MemberAdd as a learner, start its process.
        data = the new member's name."""
        plan = getattr(self.host, "plan_member", None)
        if self.host is None or plan is None:
            return ActionResult.fail("add learner: needs host mode (a process to start)")
        result, started = await add_hosted_learner(self.source, self.host)
        if started is not None:
            self._conns.add(started.endpoint)
        return result
