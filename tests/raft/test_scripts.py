"""Interaction scripts for the Raft core, in the style of etcd-io/raft's
testdata: each block is a command, `----`, then what it printed. The
expected text is the same describe() text the logs and the console use.

Regenerate after an intended change, then review the diff:
    RAFTUI_REWRITE=1 python -m pytest tests/raft/test_scripts.py

Commands:
    cluster 1 2 3 [learners=4,5] [pre-vote=off] [check-quorum=off] [durable-self-ack=off]
                [commit-durability-check=off]
    readies on|off              print every Ready as it is taken (what to persist, then
                                the messages) instead of only the messages sent
    arm-crash N POINT           N dies inside its next Ready at POINT (before, after-send,
                                after-wait, after-snap, before-sync, after-sync, after-msgs,
                                after-handoff, before-advance: between two of the node's
                                Ready steps, engine/server/ready_steps.py), losing what
                                was not fsynced
    campaign N                  N starts an election (prints what N sends)
    propose N DATA              N proposes an entry
    deliver [N]                 deliver in FIFO order until quiet (or N messages), printing each
    tick N [K]                  tick node N K times (prints what it sends)
    tick-all [K]                tick every node K times (prints what is sent)
    isolate N / heal            cut N off from everyone / restore the network
    crash N / restart N         lose everything but storage / come back from it
    transfer N TO               ask leader N to hand leadership to TO
    read-index N CTX            ask for a linearizable read point at N
    add-learner N ID / promote N ID / remove N ID   conf changes (v1) proposed at N
    conf-change N CHANGES       a ConfChangeV2 proposed at N, in etcd-io/raft's text:
                                v4 (voter) l4 (learner) r4 (remove), then implicit|explicit;
                                leave-joint for the empty change. Prints the leader's
                                refusal, if any, then what N sends. New ids get empty nodes.
    status                      one line per node (a joint config adds outgoing=[...])
"""
from __future__ import annotations

import os
import pathlib

import pytest

from engine.proto import raft_pb2 as pb
from engine.raft import ProposalDroppedError
from engine.raft.confchange import parse_changes
from engine.raft.describe import describe_message
from engine.raft.describe import describe_ready
from engine.sim.checker import SafetyChecker
from engine.sim.cluster import CRASH_NAMES, SimCluster

DATA = pathlib.Path(__file__).parent / "testdata"


class Script:
    def __init__(self) -> None:
        self.c: SimCluster | None = None
        self.readies: list[str] | None = None  # collected Ready lines while `readies on`

    def _on_ready(self, nid: int, rd) -> None:
        if self.readies is None:
            return
        if isinstance(rd, str):  # a crash point reached
            self.readies.append(f"{nid}: {rd}")
            return
        lines = describe_ready(rd)
        self.readies.append(f"{nid}: {lines[0]}")
        self.readies.extend(lines[1:])

    def _take_readies(self) -> list[str]:
        out, self.readies = self.readies, []
        return out

    def _sent(self, before: int) -> list[str]:
        if self.readies is not None:
            return self._take_readies()
        return [describe_message(m) for m in self.c.net.inflight[before:]]

    def run(self, line: str) -> list[str]:
        words = line.split()
        cmd, args = words[0], words[1:]
        c = self.c
        if cmd == "cluster":
            ids = [int(a) for a in args if a.isdigit()]
            opts = {a.split("=")[0]: a.split("=")[1] for a in args if "=" in a}
            learners = [int(x) for x in opts["learners"].split(",")] if "learners" in opts else []
            self.readies = None
            self.c = SimCluster(ids, seed=0, pre_vote=opts.get("pre-vote", "on") == "on",
                                check_quorum=opts.get("check-quorum", "on") == "on",
                                learners=learners,
                                durable_self_ack=opts.get("durable-self-ack", "on") == "on",
                                checker=SafetyChecker(opts.get("commit-durability-check", "on") == "on"))
            self.c.on_ready = self._on_ready
            return self._status()
        if cmd == "readies":
            self.readies = [] if args[0] == "on" else None
            return []
        if cmd == "arm-crash":
            c.arm_crash(int(args[0]), CRASH_NAMES.index(args[1]))
            return []
        if cmd == "status":
            return self._status()
        if cmd in ("campaign", "propose", "tick", "transfer", "read-index",
                   "add-learner", "promote", "remove", "conf-change"):
            n = c.nodes[int(args[0])]
            before = len(c.net.inflight)
            refused = []
            try:
                if cmd == "campaign":
                    n.rn.campaign()
                elif cmd == "propose":
                    n.rn.propose(args[1].encode())
                elif cmd == "tick":
                    for _ in range(int(args[1]) if len(args) > 1 else 1):
                        n.rn.tick()
                        c.process(n)
                elif cmd == "transfer":
                    n.rn.transfer_leader(int(args[1]))
                elif cmd == "read-index":
                    n.rn.read_index(args[1].encode())
                elif cmd == "conf-change":
                    cc = parse_changes(" ".join(args[1:]))
                    for ch in cc.changes:
                        if ch.node_id not in c.nodes:
                            c.add_empty_node(ch.node_id)
                    why = n.rn.conf_change_refusal(cc)
                    if why is not None:
                        refused = [f"refused (a no-op takes its place): {why}"]
                    n.rn.propose_conf_change(cc)
                else:
                    t = {"add-learner": pb.ConfChangeAddLearnerNode, "promote": pb.ConfChangeAddNode,
                         "remove": pb.ConfChangeRemoveNode}[cmd]
                    nid = int(args[1])
                    if cmd == "add-learner":
                        c.add_empty_node(nid)
                    n.rn.propose_conf_change(pb.ConfChange(type=t, node_id=nid))
            except ProposalDroppedError as e:
                return [f"dropped: {e}"]
            c.process(n)
            return refused + self._sent(before)
        if cmd == "tick-all":
            before = len(c.net.inflight)
            for _ in range(int(args[0]) if args else 1):
                c.tick_all()
            return self._sent(before)
        if cmd == "deliver":
            limit = int(args[0]) if args else 10_000
            out = []
            delivered = 0
            while c.net.inflight and delivered < limit:
                delivered += 1
                m = c.net.take_first()
                cut = c.net.is_cut(m.from_, m.to) or not c.nodes[m.to].alive
                out.append(describe_message(m) + ("  (dropped)" if cut else ""))
                c.deliver(m)
                if self.readies is not None:
                    out.extend("  " + line for line in self._take_readies())
            for n in c.live():
                for ctx, idx in n.read_results:
                    out.append(f"{n.id}: read {ctx.decode()} at index {idx}")
                n.read_results.clear()
            return out
        if cmd == "isolate":
            c.net.isolate(int(args[0]), list(c.nodes))
            return []
        if cmd == "heal":
            c.net.heal()
            return []
        if cmd == "crash":
            c.crash(int(args[0]))
            return []
        if cmd == "restart":
            c.restart(int(args[0]))
            return (self._take_readies() if self.readies is not None else []) + self._status()
        raise ValueError(f"unknown command {cmd!r}")

    def _status(self) -> list[str]:
        out = []
        for nid, n in sorted(self.c.nodes.items()):
            if not n.alive:
                out.append(f"{nid}: down")
                continue
            r = n.raft
            role = "learner" if r.is_learner else r.state.value
            out.append(f"{nid}: {role} term={r.term} lead={r.lead} commit={r.log.committed} "
                       f"applied={r.log.applied} last={r.log.last_index()} voters={sorted(r.config.incoming)}"
                       + (f" learners={list(r.learners)}" if r.learners else "")
                       + (f" outgoing={sorted(r.config.outgoing)}" if r.config.joint else "")
                       + (f" learners_next={sorted(r.config.learners_next)}" if r.config.learners_next else "")
                       + (" autoleave" if r.config.auto_leave else ""))
        return out


def _parse(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """Blocks of (comments, commands, expected output). A comment belongs to
    the block it precedes, so a rewrite keeps it in place."""
    blocks, notes, cmds, out, in_out = [], [], [], [], False
    for line in text.splitlines():
        if line.startswith("#") and not in_out:
            notes.append(line)
            continue
        if line == "----":
            in_out = True
            continue
        if in_out:
            if line == "":
                blocks.append((notes, cmds, out))
                notes, cmds, out, in_out = [], [], [], False
            else:
                out.append(line)
        elif line.strip():
            cmds.append(line)
    if cmds:
        blocks.append((notes, cmds, out))
    return blocks


def _render(blocks) -> str:
    parts = []
    for notes, cmds, out in blocks:
        parts.append("\n".join(notes + cmds) + "\n----\n" + ("\n".join(out) + "\n" if out else ""))
    return "\n".join(parts)


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_script(path: pathlib.Path):
    text = path.read_text()
    s = Script()
    got_blocks = []
    failures = []
    for notes, cmds, want in _parse(text):
        got = []
        for cmd in cmds:
            got.extend(s.run(cmd))
        got_blocks.append((notes, cmds, got))
        if got != want:
            failures.append((cmds, want, got))
    if os.environ.get("RAFTUI_REWRITE"):
        path.write_text(_render(got_blocks))
        return
    if failures:
        cmds, want, got = failures[0]
        pytest.fail(f"{path.name}: after {cmds}:\n--- want\n" + "\n".join(want)
                    + "\n--- got\n" + "\n".join(got), pytrace=False)
