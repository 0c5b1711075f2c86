"""The lessor: leases, their TTLs, and the keys attached to them.

Semantics after etcd's ``lease/lessor.go`` (3.4):

* Grant and Revoke are applied from the log on every member, so every
  member has the same leases and revoking deletes the same keys at the same
  revision everywhere (the kvstore does the deleting; ``revoke`` only says
  which keys, sorted, as etcd sorts them).
* Only the primary (the leader's lessor) keeps time. A non-primary lessor's
  leases never expire ("forever"); ``promote(now)`` starts every lease's
  clock afresh from its remaining TTL (checkpointed) or its granted TTL, as
  etcd does on a new leader; ``demote()`` stops them again.
* Time is injected. ``now`` is a number of seconds passed in by the server;
  a grant applied while primary starts its lease at ``clock()`` if a clock
  callable was given, else at the last ``now`` the server passed in.
  Nothing here reads the wall clock, so tests drive expiry with a fake clock.
* Expiry does not delete anything: ``expired(now)`` tells the server which
  leases to revoke, and it proposes LeaseRevoke through the log.

KeepAlive and TimeToLive are not replicated (etcd serves them on the
leader only).
"""
from __future__ import annotations

from typing import Callable, Iterable

from . import errors
from .backend import Backend

MAX_LEASE_TTL = 9_000_000_000  # etcd's MaxLeaseTTL, seconds
# etcd: minTTL = ceil((3 * electionTicks / 2) * heartbeat) = 2 s with the
# 3.4 defaults (10 ticks of 100 ms).
DEFAULT_MIN_TTL = 2
# An expired lease whose revoke did not get through is offered again after
# this many seconds (etcd's expiredLeaseRetryInterval).
EXPIRED_RETRY_INTERVAL = 3.0
NO_LEASE = 0

_FOREVER = float("inf")


class Lease:
    __slots__ = ("id", "ttl", "remaining_ttl", "expiry", "keys", "offered_at")

    def __init__(self, lease_id: int, ttl: int, remaining_ttl: int = 0) -> None:
        self.id = lease_id
        self.ttl = ttl
        # Checkpointed remaining TTL (0: none); used when a new primary
        # restarts the clock, then cleared by a keepalive.
        self.remaining_ttl = remaining_ttl
        self.expiry = _FOREVER
        self.keys: set[bytes] = set()
        self.offered_at = -_FOREVER  # last time expired() reported it

    def refresh(self, now: float, extend: float = 0.0) -> None:
        self.expiry = now + extend + (self.remaining_ttl if self.remaining_ttl > 0 else self.ttl)

    def remaining(self, now: float) -> float:
        return self.expiry - now


class Lessor:
    def __init__(
        self,
        backend: Backend,
        *,
        min_ttl: int = DEFAULT_MIN_TTL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._b = backend
        self.min_ttl = min_ttl
        self._clock = clock
        self._last_now = 0.0
        self._leases: dict[int, Lease] = {}
        self._item_map: dict[bytes, int] = {}  # key -> lease id
        self.primary = False

    # -- restore ----------------------------------------------------------

    def load(self) -> None:
        """(Re)read the leases from the backend; attachments come from the kvstore."""
        self._leases = {i: Lease(i, ttl, rem) for i, ttl, rem in self._b.leases()}
        self._item_map = {}
        if self.primary:
            now = self._now()
            for l in self._leases.values():
                l.refresh(now)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else self._last_now

    def _seen(self, now: float) -> float:
        self._last_now = now
        return now

    # -- queries ----------------------------------------------------------

    def lookup(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def lease_of(self, key: bytes) -> int:
        return self._item_map.get(key, NO_LEASE)

    def leases(self) -> list[int]:
        return sorted(self._leases)

    def __len__(self) -> int:
        return len(self._leases)

    # -- replicated operations (called by the applier, inside a batch) ------

    def check_grant(self, lease_id: int, ttl: int) -> None:
        if lease_id == NO_LEASE:
            raise errors.LeaseNotFound()
        if ttl > MAX_LEASE_TTL:
            raise errors.LeaseTTLTooLarge()
        if lease_id in self._leases:
            raise errors.LeaseExists()

    def grant(self, lease_id: int, ttl: int) -> Lease:
        self.check_grant(lease_id, ttl)
        l = Lease(lease_id, max(ttl, self.min_ttl))
        if self.primary:
            l.refresh(self._now())
        self._leases[lease_id] = l
        self._b.put_lease(lease_id, l.ttl, 0)
        return l

    def revoke_keys(self, lease_id: int) -> list[bytes]:
        """The keys revoking lease_id deletes, sorted (raises LeaseNotFound)."""
        l = self._leases.get(lease_id)
        if l is None:
            raise errors.LeaseNotFound()
        return sorted(l.keys)

    def remove(self, lease_id: int) -> None:
        """Forget a revoked lease (its keys were deleted, detaching them)."""
        l = self._leases.pop(lease_id)
        for k in l.keys:
            self._item_map.pop(k, None)
        self._b.delete_lease(lease_id)

    def checkpoint(self, lease_id: int, remaining_ttl: int) -> None:
        l = self._leases.get(lease_id)
        if l is None:
            return
        l.remaining_ttl = remaining_ttl
        self._b.put_lease(lease_id, l.ttl, remaining_ttl)

    def attach(self, lease_id: int, key: bytes) -> None:
        l = self._leases.get(lease_id)
        if l is None:
            raise errors.LeaseNotFound()
        l.keys.add(key)
        self._item_map[key] = lease_id

    def detach(self, lease_id: int, key: bytes) -> None:
        l = self._leases.get(lease_id)
        if l is not None:
            l.keys.discard(key)
        if self._item_map.get(key) == lease_id:
            del self._item_map[key]

    # -- primary-only, local operations ------------------------------------

    def promote(self, now: float, extend: float = 0.0) -> None:
        """Become the primary: every lease's clock starts now.

        ``extend`` is etcd's grace period for a new leader (its election
        timeout) so clients have time to find it before leases run out.
        Unlike etcd we do not spread out expiries that pile up; a burst is
        revoked at most ``limit`` per expired() call instead.
        """
        self.primary = True
        self._seen(now)
        for l in self._leases.values():
            l.refresh(now, extend)
            l.offered_at = -_FOREVER

    def demote(self) -> None:
        self.primary = False
        for l in self._leases.values():
            l.expiry = _FOREVER

    def keepalive(self, lease_id: int, now: float) -> int:
        """Renew a lease; returns its TTL. Primary only."""
        if not self.primary:
            raise errors.LeaseNotPrimary()
        self._seen(now)
        l = self._leases.get(lease_id)
        if l is None:
            raise errors.LeaseNotFound()
        if l.remaining(now) <= 0:
            # etcd waits for the pending revoke and then says not found.
            raise errors.LeaseNotFound()
        # A keepalive supersedes any checkpointed remaining TTL.
        l.remaining_ttl = 0
        l.refresh(now)
        return l.ttl

    def time_to_live(self, lease_id: int, now: float, keys: bool = False) -> tuple[int, int, list[bytes]]:
        """(remaining TTL in whole seconds, granted TTL, attached keys).

        On a non-primary lessor there is no running clock: the remaining
        TTL reported is the checkpointed one, else the granted TTL (etcd
        forwards TimeToLive to the leader instead).
        """
        l = self._leases.get(lease_id)
        if l is None:
            raise errors.LeaseNotFound()
        if self.primary:
            remaining = int(l.remaining(now))
        else:
            remaining = l.remaining_ttl if l.remaining_ttl > 0 else l.ttl
        return remaining, l.ttl, sorted(l.keys) if keys else []

    def expired(self, now: float, limit: int = 1000) -> list[int]:
        """Leases to revoke now, oldest expiry first. Primary only, else [].

        A lease offered once is offered again only after
        EXPIRED_RETRY_INTERVAL, in case its revoke proposal was lost.
        """
        if not self.primary:
            return []
        self._seen(now)
        due = [
            l for l in self._leases.values()
            if l.expiry <= now and now - l.offered_at >= EXPIRED_RETRY_INTERVAL
        ]
        due.sort(key=lambda l: (l.expiry, l.id))
        due = due[:limit]
        for l in due:
            l.offered_at = now
        return [l.id for l in due]

    def checkpoints(self, now: float) -> list[tuple[int, int]]:
        """(id, remaining whole seconds) of every lease, for a LeaseCheckpoint proposal."""
        if not self.primary:
            return []
        return [(l.id, max(int(l.remaining(now)), 0)) for l in self._leases.values()]

    def attachments(self) -> Iterable[tuple[bytes, int]]:
        return self._item_map.items()
