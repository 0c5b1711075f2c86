"""Applying committed entries: the apply task (etcd's apply goroutine).

The Ready loop hands it each Ready's committed entries and goes on
persisting, sending and ticking. The task applies them in order: runs of
normal entries in chunks of requests, each chunk ONE SQLite transaction
under Node.apply_lock, letting the event loop run every APPLY_SLICE, also
inside one long request (Applier.apply_batch_steps); conf changes (v1 and
joint v2) through the core and the member table. Then it answers the
waiting clients (futures by request id), moves Node.applied_index, and,
every snapshot_count entries, syncs the store and asks the Ready loop for
a snapshot. Nothing a committed entry holds can stop it: a request or conf
change that cannot be applied is logged loudly and skipped alike on every
member; an error of the member itself (disk, db) is fatal. A mixin of Node
(engine/server/node.py), which holds the state it uses.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time

from engine.mvcc.apply import ApplyRejected
from engine.proto import internal_pb2, rpc_pb2
from engine.proto import raft_pb2 as pb
from engine.raft import confchange
from engine.raft.confchange import ConfChangeError
from engine.server import errors
from engine.server.membership import MemberRecord

log = logging.getLogger("engine.server")

# The apply task lets the event loop run after this long (seconds) of
# applying, also inside one request (a nested txn of 30,000 writes), so
# heartbeats, reads and Status keep flowing: a fraction of a heartbeat.
APPLY_SLICE = 0.01
# Committed requests applied in one SQLite transaction at most (a member
# catching up applies thousands per Ready): answers go out, and what waits
# for the apply lock gets its turn, between chunks.
APPLY_CHUNK = 512
# A chunk whose apply took longer than this (seconds) counts as a slow apply
# (etcd_server_slow_apply_total; etcd counts single requests over 100 ms).
SLOW_APPLY = 0.1
# After applying the conf change that removes it, a member stops this many
# seconds later (etcd's stopWithDelay: the leader's messages carrying the
# commit still go out), then the process exits with status 0, as etcd's.
REMOVED_STOP_DELAY = 1.0
# Test-only fault injection, read once at start (see TestFaultHook).
TEST_FAULT_ENV = "RAFTNODE_TEST_FAULT"
# Errors that are the machine's, not the entry's: applying must stop (fatal),
# never skip the entry, or members would diverge. (Requests: only
# ApplyRejected, raised by the applier for one request's own semantics, is
# skipped; anything else out of apply_batch is fatal.)
_FATAL_APPLY_ERRORS = (OSError, MemoryError, sqlite3.Error)


class TestFaultHook:
    """RAFTNODE_TEST_FAULT=fail:<key> | wedge:<key> | stall:<key>, for tests
    only: when a committed entry holding <key> reaches the loop, raise out of
    the raft loop (a bug or a disk error), block the event loop for good (a
    wedged member) or for STALL seconds (a slow apply). Absent (the
    default), nothing is checked."""

    STALL = 1.0

    def __init__(self, spec: str) -> None:
        mode, _, key = spec.partition(":")
        if mode not in ("fail", "wedge", "stall") or not key:
            raise ValueError(f"{TEST_FAULT_ENV}: expected fail:<key>, wedge:<key> or stall:<key>, got {spec!r}")
        self.mode, self.key = mode, key.encode()

    @classmethod
    def from_env(cls) -> "TestFaultHook | None":
        spec = os.environ.get(TEST_FAULT_ENV)
        return cls(spec) if spec else None

    def check(self, entries) -> None:
        for e in entries:
            if self.key in e.data:
                if self.mode == "fail":
                    raise RuntimeError(f"test fault injected at entry {e.index} ({TEST_FAULT_ENV})")
                if self.mode == "stall":
                    log.warning("test fault: stalling the event loop %.1f s at entry %d (%s)",
                                self.STALL, e.index, TEST_FAULT_ENV)
                    time.sleep(self.STALL)
                    continue
                log.warning("test fault: wedging the event loop at entry %d (%s)", e.index, TEST_FAULT_ENV)
                time.sleep(3600)


def _config_ids(cs: pb.ConfState) -> set[int]:
    """Every member of a (possibly joint) configuration."""
    return set(cs.voters) | set(cs.voters_outgoing) | set(cs.learners) | set(cs.learners_next)


def _enum_name(enum, value: int) -> str:
    """A protobuf enum value's name, or the number for a value it does not
    define (clients may send any number)."""
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)



class Applying:
    """Node's apply task and what applying an entry does to the member."""

    async def _apply_loop(self) -> None:
        """The apply task: committed entries in the order the Ready loop
        handed them, each chunk of requests under the apply lock."""
        while not self._stopped:
            if not self._to_apply:
                self._apply_idle.set()
                await self._apply_wake.wait()
                self._apply_wake.clear()
                continue
            ents = self._to_apply[0]
            if self._test_fault is not None:
                self._test_fault.check(ents)
            await self._apply(ents)
            self._to_apply.popleft()
            await self._snapshot_if_due()

    def _set_applied(self, index: int) -> None:
        self.applied_index = max(self.applied_index, index)
        self._waiters.applied_to(index)

    async def _drive(self, steps):
        """Run a step generator (applier.apply_batch_steps) to its end,
        letting the event loop run after each APPLY_SLICE of work."""
        budget = time.monotonic() + APPLY_SLICE
        n = 0
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            n += 1
            if not n & 63 and time.monotonic() > budget:
                await asyncio.sleep(0)
                budget = time.monotonic() + APPLY_SLICE

    async def _apply(self, ents: list[pb.Entry]) -> None:
        term = self.rn.raft.term
        batch: list[internal_pb2.InternalRequest] = []
        indexes: list[int] = []
        last_index = 0

        async def flush() -> None:
            nonlocal last_index
            if not last_index:
                return
            start = 0
            while True:
                reqs, idxs = batch[start:start + APPLY_CHUNK], indexes[start:start + APPLY_CHUNK]
                start += APPLY_CHUNK
                upto = last_index if start >= len(batch) else idxs[-1]
                t0 = time.monotonic()
                async with self.apply_lock:
                    results = await self._apply_chunk(upto, reqs, idxs, term)
                if time.monotonic() - t0 > SLOW_APPLY:
                    self.slow_applies += 1
                for req, res in zip(reqs, results):
                    if res is not None:
                        self._after_apply(req, res)
                        self._waiters.trigger(req.id, res)
                self.applied_requests += len(reqs)
                self._set_applied(upto)
                # What waits for the store between batches (housekeeping,
                # a watch being created) gets its turn now, under load too.
                await asyncio.sleep(0)
                if start >= len(batch):
                    break
            batch.clear()
            indexes.clear()
            last_index = 0

        for e in ents:
            if confchange.is_conf_change(e):
                await flush()
                async with self.apply_lock:
                    self._apply_conf_change(e)
                self._set_applied(e.index)
                continue
            last_index = e.index
            if not e.data:
                # The empty entry a leader appends on election: once it is
                # applied here, so is everything of the previous terms.
                if e.term == term and self.is_leader and not self.applier.lessor.primary:
                    await flush()
                    last_index = e.index
                    # (Still leading in that term after the flush's awaits?)
                    if self.is_leader and self.rn.raft.term == term:
                        self.applier.lessor.promote(time.monotonic(), extend=self.cfg.election_timeout_ms / 1000)
                        log.info("lessor promoted at index %d (first entry of term %d)", e.index, e.term)
                continue
            req = internal_pb2.InternalRequest()
            try:
                req.ParseFromString(e.data)
            except Exception:
                log.error("undecodable entry at %d, skipped", e.index)
                continue
            batch.append(req)
            indexes.append(e.index)
        await flush()
        self._set_applied(ents[-1].index)

    async def _apply_chunk(self, upto: int, reqs: list, idxs: list[int], term: int) -> list:
        """Apply one chunk (under the apply lock); its results. When one
        request's apply raises (ApplyRejected: a bug its content triggers,
        the same on every member), the applier rolled the chunk back: the
        requests before it go again as one batch, it is logged loudly and
        skipped (its client told, the applied index moved past it), and the
        rest go on as a new batch. Anything else out of the applier -- a db
        or disk error, a failure in a compaction step run with the commit,
        in notifying watchers -- is this member's, not the entry's: fatal
        (the task fails, the process exits, replay after a restart
        re-applies)."""
        results: list = []
        while True:
            try:
                results += await self._drive(self.applier.apply_batch_steps(upto, reqs, term=term, indexes=idxs))
                return results
            except ApplyRejected as e:
                p = e.position
                cause = e.cause
            if p:
                results += await self._drive(
                    self.applier.apply_batch_steps(idxs[p - 1], reqs[:p], term=term, indexes=idxs[:p]))
            log.error("entry %d (%s) cannot be applied: skipped (as on every member): %r",
                      idxs[p], reqs[p].WhichOneof("request"), cause, exc_info=cause)
            await self._drive(self.applier.apply_batch_steps(idxs[p], [], term=term))
            results.append(errors.ApplyFailed())
            reqs, idxs = reqs[p + 1:], idxs[p + 1:]

    def _after_apply(self, req: internal_pb2.InternalRequest, res) -> None:
        """Timeline notes for an applied request: display only, so nothing
        here may stop the loop (a client's enum value we have no name for
        is shown as its number)."""
        try:
            kind = req.WhichOneof("request")
            if kind == "member_attributes":
                pass
            elif (kind == "alarm" and not isinstance(res, Exception)
                  and req.alarm.action != rpc_pb2.AlarmRequest.GET):  # a GET changes nothing
                self._note("alarm", f"alarm {_enum_name(rpc_pb2.AlarmRequest.AlarmAction, req.alarm.action)} "
                                    f"{_enum_name(rpc_pb2.AlarmType, req.alarm.alarm)}")
            elif kind == "compaction" and not isinstance(res, Exception):
                self._note("compaction", f"compacted to revision {req.compaction.revision}")
        except Exception as e:
            log.error("noting an applied request failed (ignored): %r", e, exc_info=True)

    def _apply_member_attributes(self, req: internal_pb2.InternalRequest):
        m = req.member_attributes
        self.membership.set_attributes(m.ID, m.name, list(m.clientURLs))
        return rpc_pb2.MemberUpdateResponse()

    def _apply_conf_change(self, e: pb.Entry) -> None:
        """A committed conf change, v1 (etcdctl's, with the member record in
        its context) or v2 (joint consensus: the leader's own auto-leave is
        an empty one). Whatever it holds, it never stops the member: one
        that cannot take effect is logged loudly and skipped the same way on
        every member (and on replay), and the applied index still moves
        past it."""
        already = e.index <= self.applier.consistent_index
        v1 = e.type == pb.EntryConfChange
        ctx = internal_pb2.ConfChangeContext()
        cc = None
        try:
            cc = confchange.decode(e)
            if v1 and cc.context:
                ctx.ParseFromString(cc.context)
        except Exception as ex:  # undecodable: the same on every member
            refusal = f"undecodable ({ex!r})"
        else:
            refusal = self._conf_change_refusal(cc, ctx) if v1 else None
        rid = cc.id if v1 and cc is not None else 0
        if refusal is not None:
            # Checks that depend only on the entry: every member, and every
            # replay, refuses it alike; raft's config does not change.
            log.error("conf change at index %d refused and skipped: %s", e.index, refusal)
            self._skip_conf_change(e, already, rid, errors.BadURLs() if "URL" in refusal else errors.MemberNotFound())
            return
        before = _config_ids(self.rn.raft.conf_state())
        try:
            conf = self.rn.apply_conf_change(cc)
        except ConfChangeError as ex:
            # The core's config cannot take it (a leader never proposes
            # one; a forged or corrupt entry): skipped alike everywhere.
            log.error("conf change at index %d refused by the raft core and skipped: %s", e.index, ex)
            self._skip_conf_change(e, already, rid, errors.MemberNotFound())
            return
        if not already:
            try:
                if v1:
                    self._conf_change_effects(cc, ctx)
                else:
                    self._joint_change_effects(before, conf)
            except _FATAL_APPLY_ERRORS:
                raise
            except Exception as ex:
                log.error("conf change at index %d (%s): its member-table effect failed and was skipped: %r",
                          e.index, confchange.describe_changes(cc), ex, exc_info=True)
            # The member table and the applied index move together.
            self.applier.apply_batch(e.index, [], term=self.rn.raft.term)
        self._sync_peers()
        if self.member_id in before and self.member_id not in _config_ids(conf):
            self._note("member", "this member was removed from the cluster")
            asyncio.get_running_loop().call_later(
                REMOVED_STOP_DELAY, self._stop_removed, f"applied its removal at index {e.index}")
        if rid:
            self._waiters.trigger(rid, None)

    def _skip_conf_change(self, e: pb.Entry, already: bool, rid: int, err: Exception) -> None:
        if not already:
            self.applier.apply_batch(e.index, [], term=self.rn.raft.term)
        if rid:
            self._waiters.trigger(rid, err)

    def _joint_change_effects(self, before: set[int], conf: pb.ConfState) -> None:
        """The member table after a v2 change, from the config it left: ids
        gone are removed (outgoing voters go when the joint config is left),
        voters promoted, learners (a demotion completes at the leave)
        demoted. A v2 change carries no member records: one that adds an id
        the table does not know adds it unnamed, without URLs (loudly)."""
        after = _config_ids(conf)
        voters = set(conf.voters) | set(conf.voters_outgoing)
        for mid in sorted(before - after):
            if mid in self.membership.members:
                self.membership.remove(mid)
                self._note("member", f"member {mid:x} removed")
        for mid in sorted(after):
            learner = mid not in voters
            rec = self.membership.members.get(mid)
            if rec is None:
                if mid in self.membership.removed:
                    log.error("conf change adds member %x, which was removed before: member table unchanged", mid)
                    continue
                log.error("conf change adds member %x without a member record: added unnamed, without URLs", mid)
                self.membership.add(MemberRecord(mid, "", [], [], is_learner=learner))
            elif rec.is_learner and not learner:
                self.membership.promote(mid)
                self._note("member", f"member {mid:x} promoted to voter")
            elif learner and not rec.is_learner:
                self.membership.demote(mid)
                self._note("member", f"member {mid:x} demoted to learner")

    @staticmethod
    def _conf_change_refusal(cc: pb.ConfChange, ctx) -> str | None:
        """Why a conf change cannot be applied at all, judged from the entry
        alone (deterministic), or None."""
        if cc.type not in (pb.ConfChangeAddNode, pb.ConfChangeAddLearnerNode,
                           pb.ConfChangeRemoveNode, pb.ConfChangeUpdateNode):
            return f"unknown type {cc.type}"
        if cc.node_id == 0:
            return "no member id"
        if cc.type == pb.ConfChangeUpdateNode and not ctx.member.peerURLs:
            return "UpdateNode without peer URLs"
        return None

    def _conf_change_effects(self, cc: pb.ConfChange, ctx) -> None:
        t = cc.type
        if t in (pb.ConfChangeAddNode, pb.ConfChangeAddLearnerNode):
            if cc.node_id in self.membership.removed:
                log.error("conf change adds member %x, which was removed before: member table unchanged",
                          cc.node_id)
            elif t == pb.ConfChangeAddNode and cc.node_id in self.membership.members:
                self.membership.promote(cc.node_id)
                self._note("member", f"member {cc.node_id:x} promoted to voter")
            elif t == pb.ConfChangeAddLearnerNode and cc.node_id in self.membership.members:
                # A voter made a learner (the core demotes it; etcd's API
                # never proposes it): its record stays, as a learner's.
                self.membership.demote(cc.node_id)
                self._note("member", f"member {cc.node_id:x} demoted to learner")
            else:
                rec = MemberRecord.from_pb(ctx.member)
                rec.id = cc.node_id
                rec.is_learner = t == pb.ConfChangeAddLearnerNode
                self.membership.add(rec)
                self._note("member", f"member {cc.node_id:x} ({rec.name or 'unnamed'}) added"
                                     + (" as learner" if rec.is_learner else ""))
        elif t == pb.ConfChangeRemoveNode:
            self.membership.remove(cc.node_id)
            self._note("member", f"member {cc.node_id:x} removed")
        elif t == pb.ConfChangeUpdateNode:
            if cc.node_id not in self.membership.members:
                log.error("conf change updates unknown member %x: skipped", cc.node_id)
                return
            self.membership.update_peer_urls(cc.node_id, list(ctx.member.peerURLs))
            self._note("member", f"member {cc.node_id:x} peer URLs now {','.join(ctx.member.peerURLs)}")

    def _add_peer(self, mid: int, urls: list[str]) -> None:
        """Tell the transport about a member; a URL it cannot use makes an
        unreachable peer, never an exception out of apply or start."""
        try:
            self.transport.add_peer(mid, list(urls))
        except Exception as ex:
            log.error("member %x: cannot use peer URLs %s: %s; it stays unreachable",
                      mid, ",".join(urls), ex)

    def _sync_peers(self) -> None:
        for m in self.membership.sorted():
            if m.id != self.member_id:
                self._add_peer(m.id, m.peer_urls)
        peers = self.transport.peers()
        for mid in self.membership.removed:
            # Also ids never added as peers here (a restart, a snapshot):
            # their streams are refused as removed, which tells them.
            if mid in peers or not self.transport.is_removed(mid):
                try:
                    self.transport.remove_peer(mid)
                except Exception as ex:
                    log.error("removing peer %x: %r", mid, ex)

    async def _snapshot_if_due(self) -> None:
        """Apply task, between batches: once snapshot_count entries were
        applied since the last snapshot, make the store durable (before the
        log below it is dropped; fsyncs, on a worker) and ask the Ready loop
        to compact. Nothing is applied meanwhile (this task waits), so the
        index and the conf state taken first are what the synced store
        holds."""
        applied = self.applied_index
        if self._snapshot_due is None and applied - self._snapshot_index >= self.cfg.snapshot_count:
            conf = pb.ConfState()
            conf.CopyFrom(self.rn.raft.conf_state())
            await asyncio.get_running_loop().run_in_executor(None, self.applier.sync)
            self._snapshot_due = (applied, conf)
            self._wake.set()

