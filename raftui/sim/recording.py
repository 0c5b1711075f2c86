"""A simulated schedule, recorded as frames the console's panels can show.

    rec = record(seed=42, nodes=5)                 # runs engine/sim's schedule for that seed once
    rec.frames[k].state                            # a raftui ClusterState: the cluster after event k
    rec.failure                                    # the simulator's failure text, None if it passed

The adapter is thin on purpose: engine/sim belongs to the Raft work and
changes. It uses only the simulator's entry points (ScheduleConfig,
Schedule(seed, cfg, verbose).run(), mutations.applied, ScheduleFailure) and,
after every event the simulator reports, reads each node's public state
(alive, role, term, leader, commit / applied / last index) through getattr
with defaults: a renamed field shows as 0 or "unknown", never an exception.

A seed replays the same schedule, so a failing seed is recorded up to the
failure and the last frame says what the simulator found and how to replay
it with `python -m engine.sim`. No UI here.
"""
from __future__ import annotations

import dataclasses
import re

from raftui.source import timeline as tl
from raftui.source.model import ClusterState, Member, TimelineLine

MAX_STEPS = 20_000
MAX_FRAMES = 200_000
MESSAGE = re.compile(r"^(?:drop )?(\d+)->(\d+) (\w+)")
TICK_SECONDS = 0.1             # the timeline's clock: one simulated tick shown as 100 ms
EVENT_KINDS = (("partition", "partition"), ("heal", "heal"), ("crash", "killed"), ("restart", "up"),
               ("pause", "paused"), ("resume", "up"), ("compact", "compact"), ("transfer", "leader"),
               ("conf", "member"), ("add", "member"), ("remove", "member"), ("promote", "member"),
               ("slow", "partition"), ("cut", "partition"))


LOG_TAIL = 24                  # entries of each node's log kept per frame (the last ones)


@dataclasses.dataclass(frozen=True)
class NodeLog:
    """The tail of one node's Raft log: the term of each entry, and how far it is committed."""
    node: int
    last: int
    commit: int
    terms: tuple[tuple[int, int], ...]     # (index, term), ascending


@dataclasses.dataclass(frozen=True)
class Frame:
    index: int
    tick: int
    note: str                       # what the simulator reported (a message, a fault, ...)
    message: bool                   # the note is a message between two nodes
    state: ClusterState
    lines: tuple[TimelineLine, ...]   # timeline lines this frame adds (oldest first)
    logs: tuple[NodeLog, ...] = ()    # live nodes' log tails: where logs differ (Figure 8) shows here


@dataclasses.dataclass
class Recording:
    seed: int
    nodes: int
    steps: int
    frames: list[Frame]
    failure: str | None = None      # the simulator's verdict when the seed fails
    replay: str = ""                # python -m engine.sim ... for the same schedule
    summary: str = ""               # the simulator's result line when it passes
    truncated: bool = False         # more events than MAX_FRAMES: the rest were not recorded
    profile: str = ""               # the weather the seed drew (or was given): calm, storm, partitions, ...

    def timeline_at(self, k: int, limit: int = tl.TIMELINE_LIMIT) -> tuple[TimelineLine, ...]:
        """The timeline as it stood at frame k, newest first."""
        out: list[TimelineLine] = []
        for f in reversed(self.frames[:k + 1]):
            for line in reversed(f.lines):
                out.append(line)
                if len(out) >= limit:
                    return tuple(out)
        return tuple(out)

    def next_change(self, k: int, step: int = 1) -> int:
        """The next frame (in direction `step`) that is not a message: a fault, a leader or term
        change, a member down or up. k itself if there is none."""
        i = k + step
        while 0 <= i < len(self.frames):
            f = self.frames[i]
            if not f.message or any(x.kind in ("leader", "term", "down", "up", "killed") for x in f.lines):
                return i
            i += step
        return k


def _role(raft) -> str:
    state = getattr(getattr(raft, "state", None), "value", "")
    return {"leader": "leader", "candidate": "candidate", "pre-candidate": "candidate"}.get(state, "follower")


def _member(node, cluster) -> Member:
    nid = getattr(node, "id", 0)
    raft = getattr(getattr(node, "rn", None), "raft", None)
    log = getattr(raft, "log", None)
    alive = getattr(node, "alive", True)
    paused = nid in getattr(cluster, "paused", {})
    learners = getattr(node, "learners", set()) or set()
    try:
        last = log.last_index() if log is not None else 0
    except Exception:      # a log mid-restore: shown as unknown rather than stopping the recording
        last = 0
    health = "killed" if not alive else "paused" if paused else "up"
    return Member(name=f"s{nid}", id=nid, endpoint=f"sim:{nid}", is_learner=nid in learners,
                  role=("learner" if nid in learners else _role(raft)) if alive else "unknown",
                  health=health, term=getattr(raft, "term", 0) if alive else 0,
                  commit_index=getattr(log, "committed", 0) if alive else 0,
                  applied_index=getattr(getattr(node, "sm", None), "applied", 0) if alive else 0,
                  last_index=last if alive else None, leader_id=getattr(raft, "lead", 0) if alive else 0)


def _partitioned(members: list[Member], net) -> list[Member]:
    """A live node that cannot exchange messages with a majority is shown partitioned."""
    is_cut = getattr(net, "is_cut", None)
    if is_cut is None:
        return members
    ids = [m.id for m in members]
    quorum = len(ids) // 2 + 1
    out = []
    for m in members:
        if m.health == "up":
            reach = 1 + sum(1 for o in ids if o != m.id and not is_cut(m.id, o) and not is_cut(o, m.id))
            if reach < quorum:
                m = dataclasses.replace(m, health="partitioned")
        out.append(m)
    return out


def log_tails(cluster, tail: int = LOG_TAIL) -> tuple[NodeLog, ...]:
    out = []
    for nid, node in sorted((getattr(cluster, "nodes", {}) or {}).items()):
        if not getattr(node, "alive", True):
            continue
        log = getattr(getattr(getattr(node, "rn", None), "raft", None), "log", None)
        try:
            last = log.last_index()
            first = log.first_index()
            terms = tuple((i, log.term(i) or 0) for i in range(max(first, last - tail + 1), last + 1))
        except Exception:       # a log the simulator is restoring: left out of this frame
            continue
        out.append(NodeLog(nid, last, getattr(log, "committed", 0), terms))
    return tuple(out)


def snapshot(cluster) -> ClusterState:
    nodes = getattr(cluster, "nodes", {}) or {}
    members = _partitioned([_member(n, cluster) for _, n in sorted(nodes.items())], getattr(cluster, "net", None))
    live = [m for m in members if m.health in ("up", "partitioned")]
    term = max((m.term for m in live), default=0)
    leader = next((m.id for m in live if m.role == "leader" and m.term == term), 0)
    return ClusterState(members=tuple(members), leader_id=leader, term=term,
                        revision=max((m.applied_index for m in members), default=0),
                        inspect=True, fault=None)


def record(seed: int, nodes: int = 3, steps: int = 1000, *, learners: int = 0,
           mutate: tuple[str, ...] = (), profile: str = "", max_frames: int = MAX_FRAMES) -> Recording:
    """Run the simulator's schedule for `seed` once, keeping a frame per reported event."""
    from engine.sim import mutations
    from engine.sim.schedule import Schedule, ScheduleConfig, ScheduleFailure

    if not 1 <= nodes <= 9:
        raise ValueError("nodes: 1 to 9")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps: 1 to {MAX_STEPS}")
    unknown = [m for m in mutate if m not in mutations.NAMES]
    if unknown:
        raise ValueError(f"unknown mutation {unknown[0]!r} (known: {', '.join(mutations.NAMES)})")
    cfg = ScheduleConfig(nodes=nodes, learners=learners, steps=steps, profile=profile,
                         durable_self_ack="no-durable-self-ack" not in mutate,
                         mutations=tuple(m for m in mutate if m not in mutations.CONFIG_MUTATIONS))
    rec = Recording(seed, nodes, steps, [])
    holder: dict = {}
    prev = ClusterState()
    pending: list[str] = []         # the note just reported: the simulator reports, then acts

    def settle() -> None:
        """The pending note's frame, with the state its event left (read when the next one comes)."""
        nonlocal prev
        sched = holder.get("s")
        if not pending or sched is None:
            return
        text = pending.pop()
        if len(rec.frames) >= max_frames:
            rec.truncated = True
            return
        cluster = sched.c
        now = getattr(getattr(cluster, "net", None), "now", 0)
        state = snapshot(cluster)
        at = now * TICK_SECONDS
        lines = tl.changes(prev, state, at) if prev.members else []
        is_msg = bool(MESSAGE.match(text))
        if not is_msg:
            kind = next((k for word, k in EVENT_KINDS if text.startswith(word)), "action")
            lines = [TimelineLine(at, kind, text)] + lines
        rec.frames.append(Frame(len(rec.frames), now, text, is_msg, state, tuple(lines), log_tails(cluster)))
        prev = state

    def on_note(text: str) -> None:
        settle()
        pending.append(text)

    try:
        with mutations.applied(cfg.mutations):
            try:
                sched = Schedule(seed, cfg, verbose=on_note)
            except KeyError as exc:
                raise ValueError(f"unknown profile {profile!r}") from None
            holder["s"] = sched
            rec.profile = str(getattr(getattr(sched, "cfg", None), "profile", "") or "")
            pending[:] = [f"seed {seed}: {nodes} voters" + (f", {learners} learners" if learners else "")]
            try:
                result = sched.run()
            finally:
                settle()
        rec.summary = (f"passed: {getattr(result, 'steps', '?')} steps, {getattr(result, 'committed', '?')} "
                       f"committed, {getattr(result, 'leaders', '?')} leaders, "
                       f"{getattr(result, 'snapshots_sent', '?')} snapshots, "
                       f"{getattr(result, 'conf_changes', '?')} conf changes, "
                       f"{getattr(result, 'crashes_in_ready', 0)} crashes inside a Ready")
    except ScheduleFailure as f:
        rec.failure = str(f.cause) if getattr(f, "cause", None) is not None else str(f)
        rec.replay = getattr(f, "replay", "")
        state = rec.frames[-1].state if rec.frames else ClusterState()
        tick = rec.frames[-1].tick if rec.frames else 0
        rec.frames.append(Frame(len(rec.frames), tick, f"FAILED: {rec.failure}", False, state,
                                (TimelineLine(tick * TICK_SECONDS, "error", f"simulator: {rec.failure}",
                                              ok=False),), rec.frames[-1].logs if rec.frames else ()))
    if not rec.replay:
        from engine.sim.schedule import replay_command
        rec.replay = replay_command(seed, cfg)
    return rec
