"""Run a Script against a cluster, step by step, and say what happened.

    runner = Runner(script, cluster, on_event=print)
    report = await runner.run()          # never raises for the cluster's behaviour
    print(report.text()); sys.exit(0 if report.ok else 1)

Before the first step the runner looks at the cluster once and refuses
(not_possible) a scenario it cannot run there: too few members, fault steps
without raftnode's Fault service (real etcd), process steps when attached,
member names the cluster does not have. Then each step runs to its end
(a `wait` polls its condition until it holds or its deadline passes); the
first step that fails ends the run, named with its line in the report.

Events go to `on_event` as they happen (StepEvent: start / done / fail),
which is what the console's scenario panel draws. No UI here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Callable

from raftui.render import escape
from raftui.source.model import ActionResult, ClusterState, Member

from .cluster import LOOK_EVERY, ScenarioCluster
from .script import DEFAULT_WITHIN, Loop, Ref, Script, Step

CONNECT_WITHIN = 20.0            # the cluster must answer this fast before the first step
# A put expected to be refused gets this long: a member that cannot commit (cut off, no quorum)
# answers only with the deadline, and a refusal it can give at once (NOSPACE) comes at once.
EXPECT_FAIL_DEADLINE = 2.0
FILL_CHUNK = 256 * 1024


class StepFailed(Exception):
    """The step's condition did not hold; the message says what was seen instead."""


@dataclasses.dataclass(frozen=True)
class StepEvent:
    kind: str                    # start / done / fail / note
    step: Step | Loop | None
    text: str = ""
    seconds: float = 0.0
    iteration: tuple[int, ...] = ()     # loop counters around the step (1-based), outermost first

    def line(self) -> str:
        """One printable line: the step and results escaped as every panel escapes server text
        (raftui/render.py), so neither a file nor a member can send control sequences to a terminal."""
        if self.step is None:
            return escape(self.text, limit=2000)
        loop = "".join(f"[{i}]" for i in self.iteration)
        mark = {"start": "..", "done": "ok", "fail": "FAILED", "note": "--"}[self.kind]
        what = f"  {escape(self.text, limit=2000)}" if self.text else ""
        took = f" ({self.seconds:.1f}s)" if self.kind in ("done", "fail") else ""
        return f"{mark:>6} {self.step.where}{loop}: {escape(self.step.text, limit=500)}{took}{what}"


@dataclasses.dataclass
class Report:
    script: Script
    ok: bool = False
    not_possible: list[str] = dataclasses.field(default_factory=list)
    failed: StepEvent | None = None
    events: list[StepEvent] = dataclasses.field(default_factory=list)
    steps_run: int = 0
    seconds: float = 0.0

    def text(self) -> str:
        """The verdict, escaped (see StepEvent.line)."""
        head = f"scenario {escape(repr(self.script.name), limit=200)}"
        if self.not_possible:
            return "\n".join([f"{head}: NOT POSSIBLE on this cluster (nothing was run):",
                              *(f"  {escape(why, limit=1000)}" for why in self.not_possible)])
        if self.ok:
            return f"{head}: PASSED, {self.steps_run} steps in {self.seconds:.1f}s"
        f = self.failed
        if f is None or f.step is None:
            return f"{head}: FAILED: {escape(f.text, limit=2000) if f else 'stopped'}"
        return (f"{head}: FAILED at {f.step.where}: {escape(f.step.text, limit=500)}\n  "
                f"{escape(f.text, limit=2000)}\n  ({self.steps_run} steps run, {self.seconds:.1f}s)")



# Answers no retry changes: who asks is refused (auth), not the cluster's state.
REFUSED_FOR_GOOD = ("etcdserver: user name is empty", "etcdserver: permission denied",
                    "auth: permission denied", "etcdserver: authentication failed")


def _refused_for_good(text: str) -> bool:
    return any(t in text for t in REFUSED_FOR_GOOD)


class Runner:
    def __init__(self, script: Script, cluster: ScenarioCluster,
                 on_event: Callable[[StepEvent], None] | None = None) -> None:
        self.script = script
        self.cluster = cluster
        self.on_event = on_event or (lambda e: None)
        self.vars: dict[str, str] = {}          # $name -> member name
        self.acked: dict[str, str | None] = {}  # key -> value last acknowledged (None: deleted)
        self.state = ClusterState()
        self.report = Report(script)
        self._paused_here: set[str] = set()

    # ------------------------------------------------------------------ top

    async def run(self) -> Report:
        started = time.monotonic()
        try:
            problems = await self.preflight()
            if problems:
                self.report.not_possible = problems
                return self.report
            await self._run_items(self.script.steps, ())
            self.report.ok = True
        except StepFailed as exc:
            if self.report.failed is None:
                self.report.failed = self._emit("fail", None, str(exc))
        finally:
            for name in list(self._paused_here):    # a timed pause cut short: never leave it stopped
                m = self._by_name(name)
                if m is not None:
                    await self.cluster.host_call("resumed", "resume", m)
            self.report.seconds = time.monotonic() - started
        return self.report

    async def preflight(self) -> list[str]:
        """Why the scenario cannot run here (empty: it can). Waits for the cluster to answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_WITHIN
        while True:
            self.state = await self.cluster.refresh()
            if any(m.health == "up" for m in self.state.members):
                break
            if loop.time() >= deadline:
                return [f"no member answered within {CONNECT_WITHIN:.0f}s"]
            await asyncio.sleep(LOOK_EVERY)
        if self.state.fault is None:        # the first round may not have heard from the Fault service
            self.state = await self.cluster.refresh()
        out = []
        have = len(self.state.members)
        if have < self.script.members:
            out.append(f"the scenario needs {self.script.members} members; the cluster has {have}")
        needs = self.script.needs()
        if needs["faults"] and not self.state.fault:
            out += [f"{s.where}: {s.text}: network faults need raftnode's Fault service "
                    "(this cluster has none: real etcd, or raftnode without fault injection)" for s in needs["faults"]]
        if needs["host"] and self.cluster.host is None:
            out += [f"{s.where}: {s.text}: needs host mode (local processes); attached clusters cannot "
                    "be killed, paused or grown from here" for s in needs["host"]]
        names = {m.name for m in self.state.members if m.name}
        for s, name in self.script.member_names():
            if name not in names:
                out.append(f"{s.where}: {s.text}: no member named {name!r} (the cluster has "
                           f"{', '.join(sorted(names)) or 'no named members'})")
        return out

    async def _run_items(self, items, iteration: tuple[int, ...]) -> None:
        for item in items:
            if isinstance(item, Loop):
                await self._run_loop(item, iteration)
            else:
                await self._run_step(item, iteration)

    async def _run_loop(self, loop: Loop, iteration: tuple[int, ...]) -> None:
        if loop.repeat:
            for i in range(loop.repeat):
                self._emit("note", loop, f"round {i + 1} of {loop.repeat}", iteration=iteration)
                await self._run_items(loop.body, iteration + (i + 1,))
            return
        self.state = await self.cluster.refresh()
        try:
            if isinstance(loop.over, str):
                members = self._each(self.state) if loop.over == "each" else self._followers(self.state)
                names = [m.name for m in members]
            else:
                names = [self._member(Ref(x)).name for x in loop.over]
        except StepFailed as exc:        # a member of the list is gone: the loop is the failed step
            self.report.failed = self._emit("fail", loop, str(exc), iteration=iteration)
            raise
        self._emit("note", loop, f"over {', '.join(names) or 'nobody'}", iteration=iteration)
        saved = self.vars.get(loop.var)
        for i, name in enumerate(names):
            self.vars[loop.var] = name
            await self._run_items(loop.body, iteration + (i + 1,))
        if saved is None:
            self.vars.pop(loop.var, None)
        else:
            self.vars[loop.var] = saved

    async def _run_step(self, step: Step, iteration: tuple[int, ...]) -> None:
        self._emit("start", step, iteration=iteration)
        t0 = time.monotonic()
        try:
            text = await self._do(step)
        except StepFailed as exc:
            ev = self._emit("fail", step, str(exc), time.monotonic() - t0, iteration)
            self.report.failed = ev
            self.report.steps_run += 1
            raise
        except Exception as exc:        # a bug here must still end in a report, not a trace
            ev = self._emit("fail", step, f"internal error: {type(exc).__name__}: {exc}",
                            time.monotonic() - t0, iteration)
            self.report.failed = ev
            self.report.steps_run += 1
            raise StepFailed(str(exc)) from exc
        self.report.steps_run += 1
        self._emit("done", step, text, time.monotonic() - t0, iteration)

    def _emit(self, kind: str, step, text: str = "", seconds: float = 0.0,
              iteration: tuple[int, ...] = ()) -> StepEvent:
        ev = StepEvent(kind, step, text, seconds, iteration)
        self.report.events.append(ev)
        try:
            self.on_event(ev)
        except Exception:       # a drawing problem never stops the scenario
            pass
        return ev

    # --------------------------------------------------------------- members

    def _by_name(self, name: str) -> Member | None:
        return next((m for m in self.state.members if m.name == name), None)

    def _member(self, r: Ref) -> Member:
        state = self.state
        if r.var is not None:
            name = self.vars.get(r.var)
            m = self._by_name(name) if name else None
            if m is None:
                raise StepFailed(f"${r.var} names {name!r}, which is not a member now")
            return m
        if r.text == "leader":
            agreed = self.cluster.agreement(state)
            if agreed.leader is None:
                raise StepFailed(f"there is no leader now: {agreed.text}")
            return agreed.leader
        if r.text == "follower":
            agreed = self.cluster.agreement(state)
            found = [m for m in self._followers(state) if agreed.leader is None or m.id != agreed.leader.id]
            if not found:
                raise StepFailed("no follower answers now")
            return found[0]
        m = self._by_name(r.text)
        if m is None:
            raise StepFailed(f"no member named {r.text!r} (the cluster has "
                             f"{', '.join(sorted(x.name for x in state.members if x.name))})")
        return m

    def _followers(self, state: ClusterState) -> list[Member]:
        leader = self.cluster.agreement(state).leader
        return sorted((m for m in state.members if m.health == "up" and not m.is_learner
                       and (leader is None or m.id != leader.id)), key=lambda m: m.name)

    def _each(self, state: ClusterState) -> list[Member]:
        """Every member by name, the leader last (a rolling step disturbs the leader once, at the end)."""
        leader = self.cluster.agreement(state).leader
        ms = sorted(state.members, key=lambda m: m.name)
        return [m for m in ms if leader is None or m.id != leader.id] + ([leader] if leader else [])

    def _group(self, refs: tuple[Ref, ...], other: list[Member]) -> list[Member]:
        out: list[Member] = []
        for r in refs:
            if r.text == "rest":
                picked = [m for m in self.state.members if m.id not in {o.id for o in other}]
            elif r.text == "each":
                picked = list(self.state.members)
            elif r.text == "followers":
                picked = self._followers(self.state)
            else:
                picked = [self._member(r)]
            out += [m for m in picked if m.id not in {x.id for x in out}]
        return out

    def _kv_member(self, state: ClusterState) -> Member:
        """Where a KV step goes: the leader if agreed on, else any member that answers."""
        agreed = self.cluster.agreement(state).leader
        if agreed is not None:
            return agreed
        up = [m for m in state.members if m.health == "up"]
        if not up:
            raise StepFailed("no member answers")
        return up[0]

    # ----------------------------------------------------------------- steps

    async def _do(self, step: Step) -> str:
        a = step.args
        verb = step.verb
        if verb == "sleep":
            await asyncio.sleep(a["seconds"])
            return ""
        if verb == "note":
            return a["text"]
        self.state = await self.cluster.refresh()
        handler = getattr(self, f"_step_{verb}")
        return await handler(a)

    def _ok(self, result: ActionResult) -> str:
        if not result.ok:
            raise StepFailed(result.text)
        return result.text

    async def _retrying(self, attempt, within: float = DEFAULT_WITHIN) -> ActionResult:
        """attempt(member) until it succeeds or `within` passes, re-looking at the cluster between tries
        (a leader change or a restarted member makes one call fail; the step is about the cluster)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                m = self._kv_member(self.state)
            except StepFailed as exc:
                result = ActionResult.fail(str(exc))
            else:
                result = await attempt(m)
            if result.ok or loop.time() >= deadline or _refused_for_good(result.text):
                return result
            await asyncio.sleep(LOOK_EVERY)
            self.state = await self.cluster.refresh()

    async def _step_put(self, a: dict) -> str:
        key, value, expect = a["key"], a["value"], a["expect"]
        if expect is None:
            if a["on"] is not None:
                m = self._member(a["on"])
                result = await self.cluster.put(m, key, value)
            else:
                result = await self._retrying(lambda m: self.cluster.put(m, key, value))
            text = self._ok(result)
            self.acked[key] = value
            return text
        m = self._member(a["on"]) if a["on"] is not None else self._kv_member(self.state)
        result = await self.cluster.put(m, key, value, deadline=EXPECT_FAIL_DEADLINE)
        if result.ok:
            self.acked[key] = value
            raise StepFailed(f"the put was accepted ({result.text}); expected it refused"
                             + ("" if expect == "fail" else f" with {expect!r}"))
        if expect != "fail" and expect.lower() not in result.text.lower():
            raise StepFailed(f"refused, but with {result.text!r}, not {expect!r}")
        return f"refused as expected: {result.text}"

    async def _step_delete(self, a: dict) -> str:
        text = self._ok(await self._retrying(lambda m: self.cluster.delete(m, a["key"])))
        self.acked[a["key"]] = None
        return text

    async def _step_fill(self, a: dict) -> str:
        key, limit, until = a["key"], a["bytes"], a["until_nospace"]
        written = 0
        n = 0
        while written < limit:
            n += 1
            value = (f"{n:08d}" * (FILL_CHUNK // 8))[:min(FILL_CHUNK, limit - written) if not until else FILL_CHUNK]
            m = self._kv_member(self.state)
            result = await self.cluster.put(m, key, value, deadline=30.0)
            if not result.ok:
                if until and "space" in result.text.lower():
                    return f"NOSPACE after {written // 1024} KiB in {n - 1} puts: {result.text}"
                raise StepFailed(f"put {n} ({written // 1024} KiB written so far): {result.text}")
            self.acked[key] = value
            written += len(value)
        if until:
            raise StepFailed(f"wrote {written // 1024} KiB and the cluster still accepts writes (no NOSPACE)")
        return f"wrote {written // 1024} KiB in {n} puts"

    async def _read(self, key: str) -> str | None:
        result = await self._retrying(lambda m: self.cluster.read(m, key))
        if not result.ok:
            raise StepFailed(f"read {key}: {result.text}")
        return result.data

    async def _step_assert_committed(self, a: dict) -> str:
        key = a["key"]
        if key not in self.acked:
            raise StepFailed(f"no put of {key} was acknowledged earlier in this scenario")
        want = self.acked[key]
        got = await self._read(key)
        if got != want:
            raise StepFailed(f"{key} holds {_short(got)}; the last acknowledged write was {_short(want)}")
        return f"{key} = {_short(got)}"

    async def _step_assert_value(self, a: dict) -> str:
        got = await self._read(a["key"])
        if got != a["value"]:
            raise StepFailed(f"{a['key']} holds {_short(got)}, not {_short(a['value'])}")
        return f"{a['key']} = {_short(got)}"

    async def _step_assert_leader(self, a: dict) -> str:
        agreed = self.cluster.agreement(self.state)
        if agreed.leader is None:
            raise StepFailed(agreed.text)
        other = self._member(a["who"])
        same = agreed.leader.id == other.id
        if same != (a["op"] == "=="):
            raise StepFailed(f"the leader is {agreed.leader.label}")
        return agreed.text

    def _alarms(self) -> set[str]:
        return {x for m in self.state.members for x in m.alarms}

    async def _step_assert_alarm(self, a: dict) -> str:
        # etcd's Alarm GET (through raft, so after every disarm before it), not the polled Status,
        # which a follower that has not applied the disarm yet still shows.
        listed = await self._retrying(lambda m: self.cluster.source.alarm_list())
        if not listed.ok:
            raise StepFailed(listed.text)
        alarms = {str(item).split(" ", 1)[0] for item in listed.data}
        if a["present"] and a["alarm"] not in alarms:
            raise StepFailed(f"no {a['alarm']} alarm (alarms: {', '.join(sorted(alarms)) or 'none'})")
        if not a["present"] and alarms:
            raise StepFailed(f"alarms raised: {', '.join(sorted(alarms))}")
        return f"alarms: {', '.join(sorted(alarms)) or 'none'}"

    async def _until(self, condition: Callable[[ClusterState], tuple[bool, str]], within: float) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            held, text = condition(self.state)
            if held:
                return text
            if loop.time() >= deadline:
                raise StepFailed(f"not within {within:g}s: {text}")
            await asyncio.sleep(LOOK_EVERY)
            self.state = await self.cluster.refresh()

    async def _step_wait_leader(self, a: dict) -> str:
        other = self._member(a["who"]) if a["who"] is not None else None

        def cond(state: ClusterState) -> tuple[bool, str]:
            agreed = self.cluster.agreement(state)
            if agreed.leader is None:
                return False, agreed.text
            if other is None:
                return True, agreed.text
            same = agreed.leader.id == other.id
            return same == (a["op"] == "=="), agreed.text
        return await self._until(cond, a["within"])

    async def _step_wait_healthy(self, a: dict) -> str:
        def cond(state: ClusterState) -> tuple[bool, str]:
            sick = [f"{m.label} {m.health}" for m in state.members if m.health != "up"]
            agreed = self.cluster.agreement(state)
            if sick:
                return False, "not up: " + ", ".join(sick)
            if agreed.leader is None:
                return False, agreed.text
            return True, f"{len(state.members)} members up; {agreed.text}"
        return await self._until(cond, a["within"])

    async def _step_wait_caught_up(self, a: dict) -> str:
        agreed = self.cluster.agreement(self.state)
        if agreed.leader is None:
            await self._step_wait_leader({"who": None, "op": None, "within": a["within"]})
            agreed = self.cluster.agreement(self.state)
        target = agreed.leader.commit_index
        names = [m.name for m in (self._each(self.state) if a["who"].text == "each" else [self._member(a["who"])])]

        def cond(state: ClusterState) -> tuple[bool, str]:
            behind = []
            for name in names:
                m = next((x for x in state.members if x.name == name), None)
                if m is None or m.health != "up" or m.applied_index < target:
                    behind.append(f"{name} applied {m.applied_index if m else '?'}"
                                  f"{'' if m is None or m.health == 'up' else ' (' + m.health + ')'}")
            if behind:
                return False, f"behind the leader's commit {target}: " + ", ".join(behind)
            return True, f"{', '.join(names)} applied >= {target}"
        return await self._until(cond, a["within"])

    async def _step_wait_alarm(self, a: dict) -> str:
        def cond(state: ClusterState) -> tuple[bool, str]:
            alarms = self._alarms()
            return a["alarm"] in alarms, f"alarms: {', '.join(sorted(alarms)) or 'none'}"
        return await self._until(cond, a["within"])

    async def _step_let(self, a: dict) -> str:
        m = self._member(a["who"])
        self.vars[a["name"]] = m.name
        return f"${a['name']} = {m.label}"

    async def _step_partition(self, a: dict) -> str:
        named_a = [self._member(r) for r in a["a"] if r.text not in ("rest", "each", "followers")]
        named_b = [self._member(r) for r in a["b"] if r.text not in ("rest", "each", "followers")]
        side_a = self._group(a["a"], named_b)
        side_b = self._group(a["b"], side_a)
        if not side_a or not side_b:
            raise StepFailed("one side of the partition is empty")
        if {m.id for m in side_a} & {m.id for m in side_b}:
            raise StepFailed("a member is on both sides")
        return self._ok(await self.cluster.partition(side_a, side_b))

    async def _step_cut(self, a: dict) -> str:
        """One-way cuts: every link from a member of A to a member of B (the console's link matrix call)."""
        named_b = [self._member(r) for r in a["b"] if r.text not in ("rest", "each", "followers")]
        src = self._group(a["a"], named_b)
        dst = self._group(a["b"], src)
        links = [(x, y) for x in src for y in dst if x.id != y.id]
        if not links:
            raise StepFailed("no link between the two groups")
        for x, y in links:
            self._ok(await self.cluster.link_cut(x, y, a["cut"]))
        verb = "cut" if a["cut"] else "opened"
        return f"{verb} {len(links)} link(s) one way: " + ", ".join(f"{x.label}->{y.label}" for x, y in links)

    async def _step_heal(self, a: dict) -> str:
        up = [m for m in self.state.members if m.health in ("up", "partitioned")]
        return self._ok(await self.cluster.heal(up))

    def _targets(self, r: Ref) -> list[Member]:
        return self._each(self.state) if r.text == "each" else [self._member(r)]

    async def _step_drop(self, a: dict) -> str:
        return "; ".join([self._ok(await self.cluster.drop_delay(m, drop=a["percent"]))
                          for m in self._targets(a["who"])])

    async def _step_delay(self, a: dict) -> str:
        return "; ".join([self._ok(await self.cluster.drop_delay(m, delay_ms=a["ms"]))
                          for m in self._targets(a["who"])])

    async def _step_kill(self, a: dict) -> str:
        m = self._member(a["who"])
        text = self._ok(await self.cluster.host_call("killed", "kill", m))
        if a["as"]:
            self.vars[a["as"]] = m.name
        return text

    async def _step_restart(self, a: dict) -> str:
        return self._ok(await self.cluster.restart(self._member(a["who"])))

    async def _step_pause(self, a: dict) -> str:
        m = self._member(a["who"])
        text = self._ok(await self.cluster.host_call("paused", "pause", m))
        if a["seconds"] is None:
            return text
        self._paused_here.add(m.name)
        try:
            await asyncio.sleep(a["seconds"])
        finally:
            self._paused_here.discard(m.name)
            resumed = await self.cluster.host_call("resumed", "resume", m)
        return f"{text}; {self._ok(resumed)} after {a['seconds']:g}s"

    async def _step_resume(self, a: dict) -> str:
        return self._ok(await self.cluster.host_call("resumed", "resume", self._member(a["who"])))

    async def _step_transfer(self, a: dict) -> str:
        target = self._member(a["who"])
        return self._ok(await self.cluster.source.move_leader(target.id))

    async def _step_defrag(self, a: dict) -> str:
        out = []
        for m in self._targets(a["who"]):
            out.append(self._ok(await self.cluster.source.defrag(m.id)))
        return "; ".join(out)

    async def _step_compact(self, a: dict) -> str:
        return self._ok(await self._retrying(self.cluster.compact_now))

    async def _step_disarm(self, a: dict) -> str:
        return self._ok(await self._retrying(lambda m: self.cluster.source.alarm_disarm()))

    async def _step_add_learner(self, a: dict) -> str:
        # etcd refuses a member change until the leader has been connected to every member for
        # 5 s ("unhealthy cluster"): a cluster just started or healed is asked again until it agrees.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEFAULT_WITHIN
        while True:
            result = await self.cluster.add_learner()
            if result.ok or "unhealthy cluster" not in result.text or loop.time() >= deadline:
                break
            await asyncio.sleep(LOOK_EVERY * 5)
        text = self._ok(result)
        if a["as"]:
            self.vars[a["as"]] = result.data
        # The new member is known once the member list names it.
        await self._until(lambda s: (any(m.name == result.data for m in s.members),
                                     f"{result.data} not in the member list yet"), DEFAULT_WITHIN)
        return text

    async def _step_promote(self, a: dict) -> str:
        m = self._member(a["who"])
        return self._ok(await self.cluster.source.promote(m.id))


def _short(v: str | None, limit: int = 40) -> str:
    if v is None:
        return "(no key)"
    return repr(v) if len(v) <= limit else repr(v[:limit]) + f"...({len(v)} chars)"
