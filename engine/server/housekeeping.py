"""Periodic work of a member, beside the Ready loop: expired leases revoked
by a confirmed leader (etcd #15247/#16822), watchers that started in the
past caught up in bounded slices, auto-compaction proposed, a pending
physical compaction advanced between batches, and our name and client URLs
published once (then clients are served). A mixin of Node
(engine/server/node.py), which holds the state it uses.
"""
from __future__ import annotations

import asyncio
import logging
import time

from engine.mvcc import errors as mvcc_errors
from engine.proto import internal_pb2, rpc_pb2
from engine.server import errors
from engine.server.membership import MemberRecord

log = logging.getLogger("engine.server")

# Publishing our name and client URLs is retried until done or stopped,
# waiting this long (seconds) first, doubling up to the second.
PUBLISH_BACKOFF = (0.1, 2.0)

class Housekeeping:
    """Node's periodic task and the proposals it makes."""

    async def _housekeeping(self) -> None:
        """Lease expiry (leader), catching up unsynced watchers, publishing
        our client URLs once."""
        published = False
        while True:
            await asyncio.sleep(0.02 if self.applier.hub.unsynced_count else 0.1)
            if self._stopped:
                return
            try:
                self._maybe_auto_compact()
                hub = self.applier.hub
                if hub.unsynced_count or self.applier.kv.compaction_pending:
                    # The store between batches only: the lock is fair, so
                    # this slice comes right after the chunk being applied.
                    async with self.apply_lock:
                        # Catch up watchers that started in the past (or fell
                        # behind) in a bounded slice per round.
                        budget = time.monotonic() + 0.02
                        while hub.unsynced_count and hub.sync_unsynced(max_events=1000) and time.monotonic() < budget:
                            pass
                        if self.applier.kv.compaction_pending:
                            self.applier.compact_step()
                if self.is_leader and not self._revoking:
                    expired = self.applier.lessor.expired(time.monotonic())
                    if expired:
                        self._revoking = True
                        self._background(self._revoke_expired(expired, self.term))
                if not published and self.leader_id:
                    published = True
                    self._background(self._publish())
            except Exception:
                log.exception("housekeeping failed")

    async def _revoke_expired(self, lease_ids: list[int], term: int) -> None:
        """Propose revoking expired leases, but only as a confirmed leader
        (etcd #15247, fixed by #16822's ensureLeadership): a leader that was
        stalled (a slow fsync) still believes it leads while clients keep
        their leases alive on the new leader. A ReadIndex round confirms
        leadership with a quorum; then we must still be leader, in the term
        the leases expired in, with a primary lessor."""
        try:
            try:
                await self.read_barrier(self._request_timeout())
            except (errors.ServerError, mvcc_errors.MVCCError) as e:
                log.warning("not revoking %d expired lease(s): leadership not confirmed (%s)",
                            len(lease_ids), e)
                return
            if not self._still_leading(term):
                log.warning("not revoking %d expired lease(s): no longer the leader of term %d",
                            len(lease_ids), term)
                return
            lessor = self.applier.lessor
            now = time.monotonic()
            for lid in lease_ids:
                lease = lessor.lookup(lid)
                if lease is None or lease.remaining(now) > 0:
                    continue  # revoked meanwhile, or renewed
                if not self._still_leading(term):
                    return
                # As root (etcd revokes WithRoot): with auth on, apply checks
                # every request's user at the auth revision it was made at.
                req = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lid),
                                                   username="root", auth_revision=self.applier.auth.revision)
                # Tagged with the term: dropped by the loop if it no longer
                # leads in it when the revoke would reach raft.
                self._background(self.propose(req, self._request_timeout(), leader_term=term))
        finally:
            self._revoking = False

    def _still_leading(self, term: int) -> bool:
        return self.is_leader and self.term == term and self.applier.lessor.primary

    def _request_timeout(self) -> float:
        """etcd's ReqTimeout: 5 s + 2 election timeouts."""
        return 5.0 + 2 * self.cfg.election_timeout_ms / 1000

    def _maybe_auto_compact(self) -> None:
        c = self.compactor
        if not c.enabled:
            return
        if not self.is_leader:
            c.reset()
            return
        kv = self.applier.kv
        rev = c.due(time.monotonic(), kv.current_rev, max(kv.compact_rev, 0))
        if rev is not None:
            self._note("compaction", f"auto-compaction to revision {rev}")
            req = internal_pb2.InternalRequest(compaction=rpc_pb2.CompactionRequest(revision=rev))
            self._background(self.propose(req, 5.0))

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(self._quiet(coro))
        self._bg_tasks.add(task)
        task.add_done_callback(self._bg_tasks.discard)
        # A task cancelled before it ran (the member stopping) never started
        # `coro`: closing it spares the 'never awaited' warning (a no-op otherwise).
        task.add_done_callback(lambda _t: coro.close())

    def _attributes_published(self) -> bool:
        me = self.membership.members.get(self.member_id)
        return (me is not None and me.client_urls == list(self.cfg.advertise_client_urls)
                and me.name == self.cfg.name)

    async def _publish(self) -> None:
        if self._attributes_published():
            self.published.set()
            return
        rec = MemberRecord(self.member_id, self.cfg.name, list(self.cfg.initial_advertise_peer_urls),
                           list(self.cfg.advertise_client_urls))
        req = internal_pb2.InternalRequest(member_attributes=rec.to_pb())
        # Until published or stopped (etcd's publish retries until stop),
        # backing off 0.1 s doubling to 2 s between tries.
        delay, longest = PUBLISH_BACKOFF
        while not self._stopped and self._fatal is None:
            try:
                await self.propose(req, 5.0)
                self.published.set()
                return
            except (errors.ServerError, mvcc_errors.MVCCError) as e:
                log.info("publish failed, retrying in %.1f s: %s", delay, e)
                req.id = 0
            await asyncio.sleep(delay)  # a retry pause, not a synchronisation
            delay = min(delay * 2, longest)

    @staticmethod
    async def _quiet(coro) -> None:
        try:
            await coro
        except Exception as e:
            log.debug("background proposal failed: %s", e)

