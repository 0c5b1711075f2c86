"""The watch hub: etcd's watchable store, without goroutines or asyncio.

Model (etcd ``mvcc/watchable_store.go``):

* A watcher follows one key or a range ``[key, range_end)`` (etcd's range
  convention: empty range_end = one key, ``"\\0"`` = every key >= key).
* Every watcher is in one of two groups. **Synced** watchers have seen
  everything up to the current revision; after each committed batch the
  applier calls ``notify(changes)`` and the hub appends the batch's matching
  events to each synced watcher's buffer. **Unsynced** watchers are behind:
  they started at an old revision, or their buffer was full when events
  came (etcd's "victims"). The server calls ``sync_unsynced(max_events)``
  repeatedly (between apply batches); each call reads a bounded slice of
  history from the backend and feeds it to the unsynced watchers, moving
  those that reach the current revision to the synced group. Apply never
  waits for a watcher.
* ``min_rev`` is the next revision a watcher needs; every revision below it
  was delivered, none at or above it was, so moving between groups can
  neither skip nor repeat an event.
* Events of one revision always go into a buffer together. The buffer is
  bounded by ``max_buffered_events``, except that an empty buffer takes a
  whole revision however large, so a huge transaction cannot stall a
  watcher forever.
* A watcher whose ``min_rev`` is below the compact revision can never be
  caught up: it gets ``compact_revision`` set and is cancelled.

Delivery: a watcher has a ``notify(watcher)`` callback, called (once per
``notify``/``sync_unsynced`` call, at most) when it got new events or was
cancelled; it must be cheap (e.g. set an asyncio Event). The consumer then
calls ``watcher.take_events()`` and sends them with
``watcher.revision`` as the response header revision. Event objects may be
shared between watchers: treat them as read-only (copying them into a
WatchResponse is fine).

Not thread-safe; run from the thread that runs the applier, outside batches.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from engine.proto import kv_pb2, rpc_pb2

from . import errors
from .kvstore import DELETE, PUT, KVStore, RevisionChanges, mk_gte_range

Event = kv_pb2.Event
NOPUT = rpc_pb2.WatchCreateRequest.NOPUT
NODELETE = rpc_pb2.WatchCreateRequest.NODELETE


class Watcher:
    __slots__ = (
        "id", "key", "range_end", "end", "start_revision", "prev_kv", "no_put", "no_delete",
        "notify", "min_rev", "synced", "buffer", "_revision", "compact_revision", "canceled",
        "events_sent", "max_buffered", "_hub",
    )

    def __init__(self, hub: "WatchHub", wid: int, key: bytes, range_end: bytes, start_revision: int,
                 prev_kv: bool, filters: Iterable[int], notify: Callable[["Watcher"], None] | None,
                 max_buffered: int) -> None:
        self._hub = hub
        self.id = wid
        self.key = key
        self.range_end = range_end        # as requested (for display)
        self.end = mk_gte_range(range_end)  # index convention
        self.start_revision = start_revision
        self.prev_kv = prev_kv
        fs = set(filters)
        self.no_put = NOPUT in fs
        self.no_delete = NODELETE in fs
        self.notify = notify
        # Invariant: every matching event with revision < min_rev is in
        # buffer or was taken; none at or above it is.
        self.min_rev = 0
        self.synced = False
        self.buffer: list[Event] = []
        # While unsynced: the revision the buffered events are complete up to.
        self._revision = 0
        self.compact_revision = 0
        self.canceled = False
        self.events_sent = 0
        self.max_buffered = max_buffered

    def matches(self, key: bytes) -> bool:
        end = self.end
        if end is None:
            return key == self.key
        return self.key <= key and (not end or key < end)

    @property
    def revision(self) -> int:
        """The store revision this watcher's events are complete up to.

        Use it as the header revision of the response carrying the events
        just taken: a synced watcher has seen everything (the current
        revision), an unsynced one only what was read for it so far.
        """
        return self._hub.notified_rev if self.synced else self._revision

    def take_events(self) -> list[Event]:
        """All buffered events, whole revisions in revision order; empties the buffer."""
        evs = self.buffer
        if not evs:
            return evs
        self.buffer = []
        self.events_sent += len(evs)
        return evs

    def __repr__(self) -> str:
        return (f"Watcher(id={self.id}, key={self.key!r}, end={self.range_end!r}, "
                f"min_rev={self.min_rev}, synced={self.synced}, buffered={len(self.buffer)})")


@dataclass(frozen=True)
class WatcherStat:
    id: int
    key: bytes
    range_end: bytes
    start_revision: int
    synced: bool
    events_sent: int
    buffered: int
    next_revision: int


class WatchHub:
    def __init__(self, store: KVStore, *, max_buffered_events: int = 1024) -> None:
        self.store = store
        self.max_buffered_events = max_buffered_events
        self._watchers: dict[int, Watcher] = {}
        self._next_id = 1
        # Synced watchers, indexed for fan-out: one-key watchers by key,
        # range watchers by their (key, end) so that many watchers on one
        # prefix cost one comparison per event.
        self._synced_keys: dict[bytes, set[Watcher]] = {}
        self._synced_ranges: dict[tuple[bytes, bytes], set[Watcher]] = {}
        self._unsynced: set[Watcher] = set()
        # Every change up to this revision was fanned out to the synced
        # watchers. The store's current_rev runs ahead of it while an apply
        # chunk is half done (its requests applied, not yet notified): what
        # a synced watcher or a progress notification reports is this one.
        self.notified_rev = store.current_rev

    # -- membership ---------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes = b"",
        start_revision: int = 0,
        *,
        prev_kv: bool = False,
        filters: Iterable[int] = (),
        notify: Callable[[Watcher], None] | None = None,
        watch_id: int = 0,
    ) -> Watcher:
        """Create a watcher. start_revision 0 (or a future one) starts synced."""
        end = mk_gte_range(range_end)
        if end and end <= key:
            raise ValueError("empty watch range")
        if watch_id == 0:
            while self._next_id in self._watchers:
                self._next_id += 1
            watch_id = self._next_id
            self._next_id += 1
        elif watch_id in self._watchers:
            raise ValueError(f"watch id {watch_id} in use")
        w = Watcher(self, watch_id, key, range_end, start_revision, prev_kv, filters, notify,
                    self.max_buffered_events)
        self._watchers[watch_id] = w
        cur = self.store.current_rev
        if start_revision == 0 or start_revision > cur:
            w.min_rev = max(cur + 1, start_revision)
            w._revision = cur
            self._add_synced(w)
        else:
            w.min_rev = start_revision
            w._revision = start_revision - 1
            if start_revision < self.store.compact_rev:
                self._compacted(w)
            else:
                self._unsynced.add(w)
        return w

    def cancel(self, watch_id: int) -> bool:
        w = self._watchers.pop(watch_id, None)
        if w is None:
            return False
        self._remove_from_groups(w)
        w.canceled = True
        return True

    def get(self, watch_id: int) -> Watcher | None:
        return self._watchers.get(watch_id)

    def _add_synced(self, w: Watcher) -> None:
        w.synced = True
        if w.end is None:
            self._synced_keys.setdefault(w.key, set()).add(w)
        else:
            self._synced_ranges.setdefault((w.key, w.end), set()).add(w)

    def _remove_synced(self, w: Watcher) -> None:
        w.synced = False
        if w.end is None:
            group = self._synced_keys.get(w.key)
            gkey, table = w.key, self._synced_keys
        else:
            group = self._synced_ranges.get((w.key, w.end))
            gkey, table = (w.key, w.end), self._synced_ranges  # type: ignore[assignment]
        if group is not None:
            group.discard(w)
            if not group:
                del table[gkey]

    def _remove_from_groups(self, w: Watcher) -> None:
        if w.synced:
            self._remove_synced(w)
        self._unsynced.discard(w)

    def _compacted(self, w: Watcher) -> None:
        """The watcher can't be caught up: tell it the compact revision, cancel it."""
        self._remove_from_groups(w)
        self._watchers.pop(w.id, None)
        w.compact_revision = self.store.compact_rev
        w.canceled = True
        if w.notify is not None:
            w.notify(w)

    # -- fan-out --------------------------------------------------------------

    def _event(self, w: Watcher, typ: int, kv: kv_pb2.KeyValue, cache: dict) -> Event | None:
        if (w.no_put and typ == PUT) or (w.no_delete and typ == DELETE):
            return None
        if not w.prev_kv:
            ev = cache.get(id(kv))
            if ev is None:
                ev = Event(type=typ, kv=kv)
                cache[id(kv)] = ev
            return ev
        ev = Event(type=typ, kv=kv)
        # etcd reads the previous value at mod_revision - 1, except for a
        # create (nothing before it).
        if not (typ == PUT and kv.create_revision == kv.mod_revision):
            try:
                prev = self.store.get(kv.key, kv.mod_revision - 1)
            except errors.MVCCError:  # compacted meanwhile: no prev_kv, like etcd
                prev = None
            if prev is not None:
                ev.prev_kv.CopyFrom(prev)
        return ev

    def _offer(self, w: Watcher, rev: int, evs: list[Event], notified: dict[int, Watcher]) -> bool:
        """Give w the events of revision rev; False if its buffer is too full."""
        buf = w.buffer
        if buf and len(buf) + len(evs) > w.max_buffered:
            return False
        buf.extend(evs)
        w.min_rev = rev + 1
        w._revision = rev
        notified[w.id] = w
        return True

    def notify(self, changes: list[RevisionChanges]) -> None:
        """Fan the changes of a committed batch out to the synced watchers.

        Work is done per group of watchers on the same key or range: the
        matching changes are found once per group, and a watcher without
        prev_kv or filters whose buffer has room takes the whole batch's
        events (shared Event objects) in one extend.
        """
        if changes:
            self.notified_rev = max(self.notified_rev, changes[-1][0])
        if not self._watchers:
            return
        notified: dict[int, Watcher] = {}
        victims: list[tuple[Watcher, int]] = []
        cache: dict[int, Event] = {}
        for (lo, hi), ws in self._synced_ranges.items():
            revs = []
            for rev, chs in changes:
                m = [c for c in chs if lo <= c[1].key and (not hi or c[1].key < hi)]
                if m:
                    revs.append((rev, m))
            if revs:
                self._deliver(ws, revs, cache, notified, victims)
        if self._synced_keys:
            keys = self._synced_keys
            per_key: dict[bytes, list] = {}
            for rev, chs in changes:
                for c in chs:
                    k = c[1].key
                    if k in keys:
                        revs = per_key.setdefault(k, [])
                        if revs and revs[-1][0] == rev:
                            revs[-1][1].append(c)
                        else:
                            revs.append((rev, [c]))
            for k, revs in per_key.items():
                self._deliver(keys[k], revs, cache, notified, victims)
        for w, rev in victims:
            # Too slow: catch it up from history once it drains its buffer.
            self._remove_synced(w)
            w.min_rev = rev
            self._unsynced.add(w)
        for w in notified.values():
            if w.notify is not None:
                w.notify(w)

    def _deliver(self, ws: set[Watcher], revs: list[RevisionChanges], cache: dict[int, Event],
                 notified: dict[int, Watcher], victims: list[tuple[Watcher, int]]) -> None:
        """Offer one group's matching changes (by revision) to each of its watchers."""
        first, last = revs[0][0], revs[-1][0]
        shared: list[Event] | None = None
        for w in ws:
            buf = w.buffer
            if not (w.prev_kv or w.no_put or w.no_delete or w.min_rev > first):
                if shared is None:
                    shared = []
                    for _, chs in revs:
                        for typ, kv in chs:
                            ev = cache.get(id(kv))
                            if ev is None:
                                ev = cache[id(kv)] = Event(type=typ, kv=kv)
                            shared.append(ev)
                if len(buf) + len(shared) <= w.max_buffered:
                    buf.extend(shared)
                    w.min_rev = last + 1
                    w._revision = last
                    notified[w.id] = w
                    continue
            # One revision at a time: filters, prev_kv, a start in the
            # future, or a buffer close to full.
            for rev, chs in revs:
                if rev < w.min_rev:
                    continue
                evs = []
                for typ, kv in chs:
                    ev = self._event(w, typ, kv, cache)
                    if ev is not None:
                        evs.append(ev)
                if evs and not self._offer(w, rev, evs, notified):
                    victims.append((w, rev))
                    break

    # -- catching up ----------------------------------------------------------

    @property
    def unsynced_count(self) -> int:
        return len(self._unsynced)

    def sync_unsynced(self, max_events: int = 1000) -> int:
        """Feed unsynced watchers from history, reading about max_events rows.

        Returns the number of events delivered (0 when there is nothing to do
        or every unsynced watcher's buffer is full). Call it until
        ``unsynced_count`` is 0 or it returns 0, between apply batches.
        """
        if not self._unsynced:
            return 0
        store = self.store
        cur, compact = store.current_rev, store.compact_rev
        for w in [w for w in self._unsynced if w.min_rev < compact]:
            self._compacted(w)
        ready = [w for w in self._unsynced if len(w.buffer) < w.max_buffered]
        if not ready:
            return 0
        start = min(w.min_rev for w in ready)
        history, upto = store.changes_since(start, max_events)
        notified: dict[int, Watcher] = {}
        delivered = 0
        for w in ready:
            full = False
            for rev, chs in history:
                if rev < w.min_rev:
                    continue
                cache: dict = {}
                evs = []
                for typ, kv in chs:
                    if w.matches(kv.key):
                        ev = self._event(w, typ, kv, cache)
                        if ev is not None:
                            evs.append(ev)
                if evs:
                    if not self._offer(w, rev, evs, notified):
                        full = True
                        break
                    delivered += len(evs)
            if full:
                continue
            if w.min_rev <= upto:
                # Everything through upto was looked at for w.
                w.min_rev = upto + 1
                w._revision = upto
            if upto >= cur:
                self._unsynced.discard(w)
                self._add_synced(w)
                notified.setdefault(w.id, w)
        for w in notified.values():
            if w.notify is not None:
                w.notify(w)
        return delivered

    def request_progress(self, watch_id: int) -> int | None:
        """The revision to report in one watcher's progress notification, if one can be sent.

        Only a synced watcher with nothing left to take can claim to be at
        the current revision (etcd sends progress only to synced watchers).
        """
        w = self._watchers.get(watch_id)
        if w is None:
            return None
        return self.progress_all([w])

    def progress_all(self, watchers: Iterable[Watcher]) -> int | None:
        """The revision a stream-wide progress notification may report, or None (defer it).

        A progress notification at revision R promises that every event at or
        below R was already sent on the stream (Kubernetes' consistent reads
        rely on it; etcd #15220, fixed in 3.4.25 by ``progressIfSync``): so it
        is only sent when every watcher of the stream is synced, still live,
        and has no buffered events left to take. The caller retries after
        it sent the events it was waiting for (etcd's ``deferProgress``).
        A stream without watchers gets the current revision.
        """
        for w in watchers:
            if w.canceled or not w.synced or w.buffer or self._watchers.get(w.id) is not w:
                return None
        return self.notified_rev

    # -- snapshot restore -------------------------------------------------------

    def on_restore(self, old_rev: int) -> None:
        """The store was replaced: everyone catches up from the new history."""
        self.notified_rev = self.store.current_rev
        for w in list(self._watchers.values()):
            if w.synced:
                self._remove_synced(w)
                w.min_rev = max(w.min_rev, old_rev + 1)
                self._unsynced.add(w)

    # -- console --------------------------------------------------------------

    def stats(self) -> list[WatcherStat]:
        return [
            WatcherStat(w.id, w.key, w.range_end, w.start_revision, w.synced, w.events_sent,
                        len(w.buffer), w.min_rev)
            for w in sorted(self._watchers.values(), key=lambda w: w.id)
        ]

    def __len__(self) -> int:
        return len(self._watchers)
