"""Random schedules: one seed drives a whole run of a simulated cluster
through a hostile network — drops, duplicates, reordering, partitions,
one-way link failures, links slow by whole ticks, stalled (paused) members,
crashes and restarts, membership changes (single ones as etcdctl makes them,
and ConfChangeV2 through joint configs: replace, grow or shrink by two,
demote, promote; the network split when a leader enters one), snapshots,
leader transfers and linearizable reads — with every safety property
checked after every step.

Each Ready runs the node's own steps (engine/server/ready_steps.py);
committed entries wait in each node's apply queue, as in the node's apply
task, until a step of the schedule lets that node apply (p_apply), so
applying lags behind the core as it does in the node. Crashes strike
between Readies or, armed, between any two steps of one (see
engine/sim/cluster.py CRASH_*), losing whatever was not yet fsynced.

Replay a failing seed: the failure prints the exact command, e.g.
    python -m engine.sim --seed 1234 --nodes 5 --steps 500 -v
"""
from __future__ import annotations

import dataclasses
import random

from engine.proto import raft_pb2 as pb
from engine.raft import StateType
from engine.raft.confchange import describe_changes
from engine.sim import mutations
from engine.sim.checker import InvariantViolation, SafetyChecker
from engine.sim.cluster import CRASH_POINTS, SimCluster


@dataclasses.dataclass
class ScheduleConfig:
    nodes: int = 3          # founding voters
    learners: int = 0       # founding learners
    steps: int = 1000
    # Share of crashes armed to strike inside the next Ready the victim
    # handles (at a random CRASH_* point) rather than between two Readies.
    crash_in_ready: float = 0.5
    # Mutations (tests/raft/test_mutations.py): False puts back a bug the
    # simulator must find.
    durable_self_ack: bool = True
    # Named core patches (engine/sim/mutations.py), e.g. ("strict-commit-load",).
    mutations: tuple[str, ...] = ()
    # False: leave out the direct durability check of commit indexes, so
    # that a mutation must be caught by its visible consequences.
    check_commit_durability: bool = True
    # Chance per step of each kind of trouble.
    p_drop: float = 0.05
    p_dup: float = 0.03
    p_partition: float = 0.01
    p_one_way: float = 0.005   # cut one direction of one link
    p_slow: float = 0.005      # delay one direction of one link by 1..12 ticks
    p_pause: float = 0.005     # stop one process for 1..30 ticks (it then resumes)
    p_heal: float = 0.02
    p_crash: float = 0.01
    p_restart: float = 0.05
    p_conf_change: float = 0.01
    # Share of conf changes made as one ConfChangeV2 through a joint config
    # (replace a voter, grow or shrink by two, demote, promote learners);
    # the rest are v1 single changes, as etcdctl 3.4 proposes them.
    joint_share: float = 0.5
    # Chance that a leader applying the entry that enters a joint config
    # cuts the network right then: itself and a majority of C_new (new
    # members first) on one side, the rest of C_old on the other, which has
    # not applied the change yet (its commit index is in flight). The
    # moment where C_new's majority alone must not decide.
    p_split_on_joint: float = 0.3
    p_compact: float = 0.02
    p_transfer: float = 0.005
    p_read: float = 0.03
    p_propose: float = 0.15
    p_tick: float = 0.25
    # Chance per step that one node's apply task runs (one batch or all of
    # its queue): committed entries are applied after the Ready that handed
    # them advanced the core, lagging behind it (engine/server/applying.py).
    p_apply: float = 0.1
    # After the hostile part: heal, restart everyone, and require the
    # cluster to converge (liveness) within this many rounds.
    settle_rounds: int = 300
    # "" = draw a profile from the seed; a name = that profile; None = as given.
    profile: str | None = ""


# Each seed draws a weather profile, so the runs cover calm stretches as well
# as storms of crashes or partitions (rare interleavings such as the paper's
# Figure 8 need many elections close together).
_PROFILES = {
    "calm": dict(p_crash=0.003, p_partition=0.003, p_drop=0.02),
    "lossy": dict(p_drop=0.15, p_dup=0.08),
    "crashy": dict(p_crash=0.04, p_restart=0.08, p_propose=0.25),
    "partitions": dict(p_partition=0.04, p_heal=0.03),
    "asymmetric": dict(p_one_way=0.03, p_slow=0.03, p_heal=0.02),
    "stalls": dict(p_pause=0.03, p_crash=0.02),
    "churn": dict(p_conf_change=0.04, p_compact=0.05),
    # Membership through joint configs, with the network split right where
    # C_new's majority alone must not decide; otherwise calm, so that new
    # members catch up and the split's two sides can act.
    "joint": dict(p_conf_change=0.05, joint_share=0.9, p_split_on_joint=0.6, p_crash=0.003,
                  p_partition=0.005, p_drop=0.01, p_dup=0.01, p_one_way=0.001, p_slow=0.001,
                  p_pause=0.001, p_transfer=0.001, p_compact=0.005, p_heal=0.03,
                  p_propose=0.05, p_read=0.01),
    "storm": dict(p_crash=0.03, p_restart=0.06, p_partition=0.03, p_heal=0.03,
                  p_drop=0.08, p_tick=0.35, p_propose=0.2),
}


def _with_profile(cfg: ScheduleConfig, rng: random.Random) -> ScheduleConfig:
    if cfg.profile is None:
        return cfg
    name = cfg.profile or rng.choice(sorted(_PROFILES))
    return dataclasses.replace(cfg, profile=name, **_PROFILES[name])


@dataclasses.dataclass
class ScheduleResult:
    seed: int
    nodes: int
    steps: int
    committed: int
    leaders: int
    delivered: int
    dropped: int
    snapshots_sent: int
    conf_changes: int
    reads: int
    crashes_in_ready: int = 0
    joint_entered: int = 0   # joint configs a leader applied (entered)



def replay_command(seed: int, cfg: ScheduleConfig) -> str:
    """The one command that replays this schedule (-v prints every event)."""
    cmd = f"python -m engine.sim --seed {seed} --nodes {cfg.nodes} --steps {cfg.steps}"
    if cfg.learners:
        cmd += f" --learners {cfg.learners}"
    if cfg.profile:  # given explicitly; "" (drawn from the seed) needs no flag
        cmd += f" --profile {cfg.profile}"
    if not cfg.durable_self_ack:
        cmd += " --mutate no-durable-self-ack"
    for name in cfg.mutations:
        cmd += f" --mutate {name}"
    if not cfg.check_commit_durability:
        cmd += " --no-durability-check"
    return cmd + " -v"


class ScheduleFailure(AssertionError):
    def __init__(self, seed: int, cfg: ScheduleConfig, step: int, cause: BaseException,
                 trace: list[str], given: ScheduleConfig | None = None) -> None:
        self.seed, self.nodes, self.step, self.cause, self.trace = seed, cfg.nodes, step, cause, trace
        self.cfg = cfg
        self.replay = replay_command(seed, given or cfg)
        tail = "\n  ".join(trace[-25:])
        super().__init__(
            f"seed {seed} ({cfg.nodes} voters, {cfg.learners} learners, profile {cfg.profile}) "
            f"failed at step {step}: {cause}\n"
            f"  replay: {self.replay}\n  last events:\n  {tail}")


class Schedule:
    def __init__(self, seed: int, cfg: ScheduleConfig, verbose=None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.given = cfg
        self.cfg = _with_profile(cfg, self.rng)
        self.trace: list[str] = []
        self.verbose = verbose
        self.ids = list(range(1, cfg.nodes + 1))
        learners = list(range(cfg.nodes + 1, cfg.nodes + cfg.learners + 1))
        self.next_id = cfg.nodes + cfg.learners + 1
        # The trace is always kept (its tail goes into a failure's message);
        # printing every message is what -v adds.
        # Byte limits (flow control, uncommitted tail) for a third of the
        # seeds, drawn from their own generator so that the rest of the run
        # draws as before. Entries are ~8 bytes: these limits bite.
        lim = random.Random(seed ^ 0x5EED_F10)
        inflight_bytes, uncommitted = 0, 0
        if lim.random() < 0.33:
            inflight_bytes = lim.choice((0, 16, 64, 256))
            uncommitted = lim.choice((0, 16, 64, 512))
        self.limits = (inflight_bytes, uncommitted)
        self.c = SimCluster(self.ids, seed=self.rng.getrandbits(32), learners=learners,
                            max_inflight_bytes=inflight_bytes, max_uncommitted_size=uncommitted,
                            checker=SafetyChecker(cfg.check_commit_durability),
                            durable_self_ack=cfg.durable_self_ack, apply_lag=True,
                            log=(lambda s: self._note(s)) if verbose else None)
        self.c.on_conf_change = self._on_conf_change
        self.settling = False  # the storm is over: no more faults
        # A split on joint holds until this tick of the shared clock (no
        # heal or other partition before): long enough for elections.
        self.split_until = -1
        self.split: tuple | None = None
        self.proposed = 0
        self.joint_entered = 0
        self.conf_changes = 0
        self.reads = 0
        # ReadIndex linearizability: (node, ctx) -> committed index known
        # anywhere when the read was asked; its answer must not be lower.
        self.pending_reads: dict[bytes, int] = {}

    def _note(self, s: str) -> None:
        self.trace.append(s)
        if len(self.trace) > 400:
            del self.trace[:200]
        if self.verbose:
            self.verbose(s)

    def run(self) -> ScheduleResult:
        step = 0
        try:
            for step in range(self.cfg.steps):
                self._step()
                if self.split is not None:
                    self._make_split()
                self._check_reads()
                if step % 50 == 49:
                    self._check_log_matching()
            step = self.cfg.steps
            self._settle()
            self._check_log_matching()
        except (InvariantViolation, AssertionError) as e:
            if isinstance(e, ScheduleFailure):
                raise
            raise ScheduleFailure(self.seed, self.cfg, step, e, self.trace, self.given) from e
        c = self.c
        return ScheduleResult(self.seed, self.cfg.nodes, self.cfg.steps, c.checker.max_committed,
                              len(c.checker.leader_of_term), c.net.delivered, c.net.dropped,
                              c.net.sent_by_type.get(pb.MsgSnap, 0), self.conf_changes, self.reads,
                              c.crashes_in_ready, self.joint_entered)

    # -- one random step -----------------------------------------------------------

    def _step(self) -> None:
        r, cfg = self.rng, self.cfg
        x = r.random()
        acc = 0.0
        for p, action in (
            (cfg.p_drop, self._drop), (cfg.p_dup, self._dup),
            (cfg.p_partition, self._partition), (cfg.p_heal, self._heal),
            (cfg.p_one_way, self._one_way), (cfg.p_slow, self._slow),
            (cfg.p_pause, self._pause),
            (cfg.p_crash, self._crash), (cfg.p_restart, self._restart),
            (cfg.p_conf_change, self._conf_change), (cfg.p_compact, self._compact),
            (cfg.p_transfer, self._transfer), (cfg.p_read, self._read),
            (cfg.p_propose, self._propose), (cfg.p_tick, self._tick),
            (cfg.p_apply, self._apply),
        ):
            acc += p
            if x < acc:
                action()
                return
        self._deliver()

    def _deliver(self) -> None:
        m = self.c.net.take()
        if m is None:
            self._tick()
            return
        self.c.deliver(m)

    def _apply(self) -> None:
        busy = [n for n in self.c.live() if n.apply_queue and n.id not in self.c.paused]
        if busy:
            n = self.rng.choice(busy)
            batches = None if self.rng.random() < 0.5 else 1
            done = self.c.apply_pending(n.id, batches)
            self._note(f"apply {n.id}: {done} batches, applied {n.sm.applied}")

    def _drop(self) -> None:
        m = self.c.net.take()
        if m is not None:
            self._note(f"drop {m.from_}->{m.to} {pb.MessageType.Name(m.type)}")
            if m.type == pb.MsgSnap:
                self.c._report_snapshot(m, ok=False)

    def _dup(self) -> None:
        q = self.c.net.inflight
        if q:
            m = q[self.rng.randrange(len(q))]
            d = pb.Message()
            d.CopyFrom(m)
            q.append(d)

    def _tick(self) -> None:
        # Usually everybody ticks together (clocks run at the same rate);
        # sometimes one node runs ahead.
        if self.rng.random() < 0.7:
            self.c.tick_all()
        else:
            self.c.tick(self.rng.choice(sorted(self.c.nodes)))

    def _propose(self) -> None:
        live = self.c.live()
        if not live:
            return
        lead = self.c.leader()
        n = lead if lead is not None and self.rng.random() < 0.8 else self.rng.choice(live)
        self.proposed += 1
        self.c.propose(n.id, f"p{self.proposed}@{n.id}".encode())

    def _partition(self) -> None:
        if self.c.net.now < self.split_until:
            return
        ids = sorted(self.c.nodes)
        if len(ids) < 2:
            return  # one process: nothing to cut
        self.rng.shuffle(ids)
        k = self.rng.randrange(1, len(ids))
        a, b = set(ids[:k]), set(ids[k:])
        self._note(f"partition {sorted(a)} | {sorted(b)}")
        self.c.net.partition([a, b])

    def _pair(self) -> tuple[int, int] | None:
        ids = sorted(self.c.nodes)
        if len(ids) < 2:
            return None
        a, b = self.rng.sample(ids, 2)
        return a, b

    def _one_way(self) -> None:
        p = self._pair()
        if p:
            self._note(f"cut {p[0]} -> {p[1]} (one way)")
            self.c.net.cut_one_way(*p)

    def _slow(self) -> None:
        p = self._pair()
        if p:
            # Up to beyond an election timeout (10 ticks): heartbeats that
            # come too late start elections, votes that come too late lose them.
            ticks = self.rng.randint(1, 12)
            self._note(f"slow {p[0]} -> {p[1]} by {ticks} ticks")
            self.c.net.slow(*p, ticks)

    def _pause(self) -> None:
        live = [n for n in self.c.live() if n.id not in self.c.paused]
        if live:
            n = self.rng.choice(live)
            ticks = self.rng.randint(1, 30)
            self._note(f"pause {n.id} for {ticks} ticks")
            self.c.pause(n.id, ticks)

    def _heal(self) -> None:
        if self.c.net.partitioned() and self.c.net.now >= self.split_until:
            self._note("heal")
            self.c.net.heal()

    def _crash(self) -> None:
        live = self.c.live()
        # Keep one node up in bigger clusters so the run does something; with
        # one or two voters, crashing the last one is the interesting case
        # (its disk alone must bring it back).
        if not live or (len(live) <= 1 and len(self.c.nodes) > 2):
            return
        n = self.rng.choice(live)
        if self.rng.random() < self.cfg.crash_in_ready:
            point = self.rng.randrange(CRASH_POINTS)
            self._note(f"arm crash {n.id} at point {point}")
            self.c.arm_crash(n.id, point)
            return
        self._note(f"crash {n.id}")
        self.c.crash(n.id)

    def _restart(self) -> None:
        dead = [n for n in self.c.nodes.values() if not n.alive]
        if dead:
            n = self.rng.choice(dead)
            self._note(f"restart {n.id}")
            self.c.restart(n.id)

    def _conf_change(self) -> None:
        lead = self.c.leader()
        if lead is None:
            return
        r = lead.raft
        if r.config.joint:
            # Leave (explicit), or try something the leader must refuse.
            if not r.config.auto_leave or self.rng.random() < 0.3:
                self._note(f"propose leave-joint at {lead.id} ({r.config})")
                self.conf_changes += 1
                self.c.propose_conf_change(lead.id, pb.ConfChangeV2())
            return
        if self.rng.random() < self.cfg.joint_share:
            self._joint_change(lead)
            return
        voters, learners = list(r.voters), list(r.learners)
        choice = self.rng.random()
        if choice < 0.3 and len(voters) + len(learners) < self.cfg.nodes + 3:
            nid = self.next_id
            self.next_id += 1
            self.c.add_empty_node(nid)
            cc = pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=nid)
        elif choice < 0.55 and learners:
            cc = pb.ConfChange(type=pb.ConfChangeAddNode, node_id=self.rng.choice(learners))
        elif choice < 0.7 and len(voters) + len(learners) < self.cfg.nodes + 3:
            nid = self.next_id
            self.next_id += 1
            self.c.add_empty_node(nid)
            cc = pb.ConfChange(type=pb.ConfChangeAddNode, node_id=nid)
        elif len(voters) > 2 or learners or (len(voters) > 1 and self.cfg.nodes < 2):
            # Never shrink below the founding size up to 2 voters: runs of
            # 1 voter go back to 1, the others keep 2 so that one crash does
            # not stop them until its restart.
            floor = min(2, self.cfg.nodes)
            pool = (voters if len(voters) > floor else []) + learners
            if len(voters) == 2:
                # Known limit of one-step changes (as in etcd): the leader of
                # {1, 2} that removes itself and then crashes before 2 learns
                # the change is committed leaves 2 needing a vote nobody can
                # give. Operators transfer leadership first; so do we.
                pool = [i for i in pool if i != lead.id]
            if not pool:
                return
            cc = pb.ConfChange(type=pb.ConfChangeRemoveNode, node_id=self.rng.choice(pool))
        else:
            return
        self._note(f"propose conf change {pb.ConfChangeType.Name(cc.type)} {cc.node_id} at {lead.id}")
        self.conf_changes += 1
        self.c.propose_conf_change(lead.id, cc)

    def _joint_change(self, lead) -> None:
        """One ConfChangeV2 of several changes (or one, with an explicit or
        implicit transition): through a joint config."""
        r, rng = lead.raft, self.rng
        voters, learners = sorted(r.config.incoming), sorted(r.config.learners)
        floor = min(2, self.cfg.nodes)
        room = self.cfg.nodes + 3 - len(voters) - len(learners)
        # As for single changes: the leader of two voters does not remove
        # or demote itself (it could crash before the other one learns the
        # leave is committed, which then needs a vote it cannot get).
        removable = [v for v in voters if v != lead.id or len(voters) > 2]
        kind = rng.choice(("replace", "grow", "shrink", "demote", "promote", "learner"))
        adds: list[int] = []  # new, empty members
        changes: list[pb.ConfChangeSingle] = []

        def voter(nid: int) -> pb.ConfChangeSingle:
            return pb.ConfChangeSingle(type=pb.ConfChangeAddNode, node_id=nid)

        # Replacing and growing promote caught-up learners first, as an
        # operator does (add a learner, let it catch up, then swap it in).
        if kind == "replace" and removable and (learners or room >= 1):
            changes.append(pb.ConfChangeSingle(type=pb.ConfChangeRemoveNode, node_id=rng.choice(removable)))
            if learners:
                changes.append(voter(rng.choice(learners)))
            else:
                adds.append(self.next_id)
        elif kind == "grow" and len(learners) + room >= 2:
            changes += [voter(v) for v in learners[:2]]
            adds += [self.next_id + i for i in range(2 - len(changes))]
        elif kind == "learner" and room >= 1:
            nid = self.next_id
            self.c.add_empty_node(nid)
            self.next_id += 1
            changes.append(pb.ConfChangeSingle(type=pb.ConfChangeAddLearnerNode, node_id=nid))
        elif kind == "shrink" and len(voters) - 2 >= floor and len(removable) >= 2:
            for v in rng.sample(removable, 2):
                changes.append(pb.ConfChangeSingle(type=pb.ConfChangeRemoveNode, node_id=v))
        elif kind == "demote" and len(voters) - 1 >= floor and removable:
            changes.append(pb.ConfChangeSingle(type=pb.ConfChangeAddLearnerNode,
                                               node_id=rng.choice(removable)))
        elif kind == "promote" and learners:
            for v in learners:
                changes.append(pb.ConfChangeSingle(type=pb.ConfChangeAddNode, node_id=v))
        else:
            return
        for nid in adds:
            self.c.add_empty_node(nid)
            self.next_id = max(self.next_id, nid + 1)
            changes.append(pb.ConfChangeSingle(type=pb.ConfChangeAddNode, node_id=nid))
        rng.shuffle(changes)
        transition = rng.choice((pb.ConfChangeTransitionAuto, pb.ConfChangeTransitionJointImplicit,
                                 pb.ConfChangeTransitionJointExplicit))
        cc = pb.ConfChangeV2(transition=transition, changes=changes)
        self._note(f"propose conf change v2 {describe_changes(cc)} at {lead.id} ({r.config})")
        self.conf_changes += 1
        self.c.propose_conf_change(lead.id, cc)

    def _on_conf_change(self, n, e: pb.Entry) -> None:
        cfg = n.raft.config
        if n.raft.state is StateType.LEADER and cfg.joint and e.data:
            self.joint_entered += 1
        if (self.settling or n.raft.state is not StateType.LEADER or not cfg.joint or not e.data
                or e.type != pb.EntryConfChangeV2 or self.rng.random() >= self.cfg.p_split_on_joint):
            return
        # The leader and a majority of C_new, members C_old lacks first.
        q = len(cfg.incoming) // 2 + 1
        order = sorted(cfg.incoming - {n.id}, key=lambda v: (v in cfg.outgoing, self.rng.random()))
        side = {n.id} | set(order[: q - (n.id in cfg.incoming)])
        side |= set(cfg.tracked()) - set(cfg.outgoing)  # every new member
        rest = set(self.c.nodes) - side
        if rest:
            # Made at the end of this step, not inside the leader's Ready:
            # its messages (the commit index) are out already and will be
            # lost at delivery.
            self.split = (side, rest, self.rng.randint(20, 60), str(cfg))

    def _make_split(self) -> None:
        side, rest, ticks, cfg = self.split
        self.split = None
        self._note(f"split on joint {cfg} for {ticks} ticks: {sorted(side)} | {sorted(rest)}")
        self.c.net.partition([side, rest])
        self.split_until = self.c.net.now + ticks
        self.c.drop_cut()

    def _compact(self) -> None:
        live = self.c.live()
        if live:
            n = self.rng.choice(live)
            if self.c.compact(n.id, keep=self.rng.choice((0, 2, 10))):
                self._note(f"compact {n.id} at {n.sm.applied}")

    def _transfer(self) -> None:
        lead = self.c.leader()
        if lead is None or len(lead.raft.voters) < 2 or lead.id in self.c.paused:
            return
        to = self.rng.choice([v for v in lead.raft.voters if v != lead.id])
        self._note(f"transfer leader {lead.id} -> {to}")
        lead.rn.transfer_leader(to)
        self.c.process(lead)

    def _read(self) -> None:
        live = self.c.live()
        if not live:
            return
        n = self.rng.choice(live)
        if n.id in self.c.paused:
            return  # a stopped process takes no requests
        self.reads += 1
        ctx = f"r{self.reads}".encode()
        # Everything committed anywhere so far must be visible to this read.
        self.pending_reads[ctx] = self.c.checker.max_committed
        try:
            n.rn.read_index(ctx)
        except Exception:
            self.pending_reads.pop(ctx, None)
            return
        self.c.process(n)

    def _check_reads(self) -> None:
        for n in self.c.nodes.values():
            while n.read_results:
                ctx, index = n.read_results.pop()
                floor = self.pending_reads.pop(ctx, None)
                if floor is not None and index < floor:
                    raise InvariantViolation(
                        f"linearizable read: read {ctx!r} at node {n.id} got index {index}, "
                        f"but {floor} was committed before it was asked")

    def _check_log_matching(self) -> None:
        self.c.checker.check_log_matching(
            {n.id: n.raft.log.all_entries() for n in self.c.live()})

    # -- liveness: once the trouble stops, the cluster must converge -------------------

    def _settle(self) -> None:
        c = self.c
        self.settling = True
        c.armed.clear()
        for nid in list(c.paused):
            c.resume(nid)
        c.net.heal()
        for n in list(c.nodes.values()):
            if not n.alive:
                c.restart(n.id)
        members = None
        for _ in range(self.cfg.settle_rounds):
            c.tick_all()
            c.deliver_all(max_msgs=5000)
            for n in c.live():
                c.apply_pending(n.id)
            lead = c.leader()
            if lead is None:
                continue
            cfg = lead.raft.config
            if cfg.joint:
                # An operator leaves an explicit joint config; an auto one
                # must be left by the leader itself.
                if not cfg.auto_leave and lead.raft.conf_change_refusal(pb.ConfChangeV2()) is None:
                    c.propose_conf_change(lead.id, pb.ConfChangeV2())
                continue
            members = set(lead.raft.voters) | set(lead.raft.learners)
            # A final entry of the leader's term, so everyone must reach it.
            if lead.raft.log.committed < lead.raft.log.last_index():
                continue
            target = lead.raft.log.committed
            if all(c.nodes[m].sm.applied >= target for m in members if m in c.nodes):
                if self._converged(lead, members):
                    return
        raise InvariantViolation(
            f"liveness: no convergence after healing: leader={c.leader() and c.leader().id} "
            f"members={members} " + ", ".join(repr(n.raft) for n in c.live()))

    def _converged(self, lead, members) -> bool:
        digests = {self.c.nodes[m].sm.digest for m in members if m in self.c.nodes}
        applied = {self.c.nodes[m].sm.applied for m in members if m in self.c.nodes}
        return len(digests) == 1 and len(applied) == 1 and lead.raft.state is StateType.LEADER


def run_schedule(seed: int, cfg: ScheduleConfig | None = None, verbose=None) -> ScheduleResult:
    cfg = cfg or ScheduleConfig()
    with mutations.applied(cfg.mutations):
        return Schedule(seed, cfg, verbose).run()
