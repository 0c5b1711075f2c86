"""The in-memory key index: key -> the revisions at which it changed.

The backend stores values by revision only; this index is what turns "key
``k`` as of revision ``r``" into the revision whose row holds that value, and
what makes range scans ordered by key. It is rebuilt from the backend when
the store opens, so it is never persisted itself.

Semantics follow etcd's ``mvcc/key_index.go`` and ``mvcc/index.go``.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Iterator

from sortedcontainers import SortedDict, SortedList

# Larger than any sub revision: (r, _MAX_SUB) sorts after every (r, sub).
_MAX_SUB = 1 << 64

Rev = tuple[int, int]  # (main, sub)


class Generation:
    """One life of a key: from the put that created it to its tombstone.

    ``revs`` ascend. ``ver`` counts every revision ever appended to this
    generation (a compaction trims ``revs`` but not ``ver``), so the version
    of ``revs[i]`` is ``ver - (len(revs) - 1 - i)``: etcd's version number of
    the key, 1 for the creating put. ``created`` is the main revision of that
    put (it survives compaction; after a restore it comes from the stored
    KeyValue's ``create_revision``).
    """

    __slots__ = ("ver", "created", "revs")

    def __init__(self, created: int = 0, ver: int = 0, revs: list[Rev] | None = None) -> None:
        self.ver = ver
        self.created = created
        self.revs: list[Rev] = revs if revs is not None else []

    def __repr__(self) -> str:
        return f"Generation(created={self.created}, ver={self.ver}, revs={self.revs})"


class KeyHistory:
    """The revisions of one key, as a list of generations (etcd's keyIndex).

    Example: key "foo" put at 1.0, updated at 2.0, deleted at 3.0, put again
    at 4.0 and 5.0, deleted at 6.0::

        generations:
            {empty}                 <- the next life, not started yet
            {4.0, 5.0, 6.0(t)}
            {1.0, 2.0, 3.0(t)}

    The last generation is always the current one; it is empty exactly when
    the key does not exist now. Every older generation ends with its
    tombstone ``(t)``, which is a revision like any other here: the backend
    row under it is the deletion. Compacting at revision 2 leaves::

            {empty}
            {4.0, 5.0, 6.0(t)}
            {2.0, 3.0(t)}

    (1.0 can no longer be read: reads at >= 2 see 2.0.) Compacting at 4
    drops the whole first generation, its tombstone included, because a read
    at >= 4 cannot see any of it:

            {empty}
            {4.0, 5.0, 6.0(t)}

    and compacting at 6 drops everything: the key is gone from the index.
    """

    __slots__ = ("key", "modified", "generations")

    # Invariant: every generation but the last is non-empty and ends in a
    # tombstone; all revisions ascend across generations; modified is the
    # largest revision ever put or tombstoned (never lowered by compaction).

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified: Rev = (0, 0)
        self.generations: list[Generation] = [Generation()]

    def __repr__(self) -> str:
        return f"KeyHistory({self.key!r}, {self.generations})"

    def is_live(self) -> bool:
        return bool(self.generations[-1].revs)

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def put(self, main: int, sub: int) -> None:
        rev = (main, sub)
        if rev <= self.modified:
            raise AssertionError(f"put {rev} not after {self.modified} for {self.key!r}")
        g = self.generations[-1]
        if not g.revs:
            g.created = main
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev

    def tombstone(self, main: int, sub: int) -> None:
        """Record a deletion: it ends the current generation."""
        if not self.generations[-1].revs:
            raise KeyError(self.key)
        self.put(main, sub)
        self.generations.append(Generation())

    def restore(self, created: int, modified: Rev, ver: int) -> None:
        """Start the history from a row read back from the backend."""
        self.modified = modified
        self.generations = [Generation(created, ver, [modified]), ]

    def get(self, at_rev: int) -> tuple[Rev, int, int] | None:
        """(revision, create main revision, version) of the key as of at_rev."""
        gens = self.generations
        g = gens[-1]
        revs = g.revs
        # Fast path: the key is live and its latest change is visible.
        if revs and revs[-1][0] <= at_rev:
            return revs[-1], g.created, g.ver
        g = self._find_generation(at_rev)
        if g is None:
            return None
        revs = g.revs
        i = bisect_right(revs, (at_rev, _MAX_SUB)) - 1
        if i < 0:
            return None
        return revs[i], g.created, g.ver - (len(revs) - 1 - i)

    def _find_generation(self, at_rev: int) -> Generation | None:
        """The generation that holds the key's state at at_rev, if it existed."""
        gens = self.generations
        last = len(gens) - 1
        i = last
        while i >= 0:
            g = gens[i]
            if not g.revs:
                i -= 1
                continue
            # A finished generation whose tombstone is visible: deleted at at_rev.
            if i != last and g.revs[-1][0] <= at_rev:
                return None
            if g.revs[0][0] <= at_rev:
                return g
            i -= 1
        return None

    def _do_compact(self, at_rev: int, available: set[Rev]) -> tuple[int, int]:
        """Find the generation and revision a read at at_rev would use.

        Adds that revision to ``available`` and returns (generation index,
        revision index or -1).
        """
        gens = self.generations
        gi = 0
        g = gens[0]
        # Skip whole generations that ended (tombstone) at or before at_rev.
        while gi < len(gens) - 1:
            if g.revs[-1][0] > at_rev:
                break
            gi += 1
            g = gens[gi]
        ri = bisect_right(g.revs, (at_rev, _MAX_SUB)) - 1
        if ri >= 0:
            available.add(g.revs[ri])
        return gi, ri

    def compact(self, at_rev: int, available: set[Rev]) -> None:
        """Forget what no read at >= at_rev can see; add what it can to ``available``."""
        gi, ri = self._do_compact(at_rev, available)
        g = self.generations[gi]
        if g.revs:
            if ri > 0:
                del g.revs[:ri]
            # Only a visible tombstone is left of this generation: a read at
            # >= at_rev sees "absent", so neither the index nor the backend
            # needs it any more.
            if len(g.revs) == 1 and gi != len(self.generations) - 1:
                available.discard(g.revs[0])
                gi += 1
        if gi:
            del self.generations[:gi]

    def keep(self, at_rev: int, available: set[Rev]) -> None:
        """Like compact() but only reports what compacting would keep."""
        if self.is_empty():
            return
        gi, ri = self._do_compact(at_rev, available)
        g = self.generations[gi]
        if g.revs and ri == len(g.revs) - 1 and gi != len(self.generations) - 1:
            available.discard(g.revs[ri])

    def all_revs(self) -> Iterator[Rev]:
        for g in self.generations:
            yield from g.revs


class TreeIndex:
    """All keys in byte order, each with its KeyHistory (etcd's treeIndex).

    Range convention (etcd's, after ``mkGteRange``): ``end is None`` means
    the single key ``key``; ``end == b""`` means every key >= ``key``;
    otherwise the half-open interval ``[key, end)``.

    Besides the histories it keeps the sorted list of keys that exist now
    (``_live``): a read at the latest revision, the common case, then
    counts a range with two bisections and walks only the keys it returns,
    instead of visiting every key in the range (etcd visits them all).
    """

    def __init__(self) -> None:
        self._keys: SortedDict = SortedDict()
        self._live: SortedList = SortedList()
        # Invariant: latest_rev >= every revision in the index, so a read at
        # at_rev >= latest_rev sees exactly the keys in _live.
        self.latest_rev = 0

    def __len__(self) -> int:
        return len(self._keys)

    def live_count(self) -> int:
        """Keys that exist now (etcd_debugging_mvcc_keys_total)."""
        return len(self._live)

    def history(self, key: bytes) -> KeyHistory | None:
        return self._keys.get(key)

    def put(self, key: bytes, main: int, sub: int, h: KeyHistory | None = None) -> None:
        """Record a put; ``h`` is the key's history if the caller looked it up already."""
        if h is None:
            h = self._keys.get(key)
            if h is None:
                h = KeyHistory(key)
                self._keys[key] = h
        if not h.generations[-1].revs:
            self._live.add(key)
        h.put(main, sub)
        self.latest_rev = main

    def tombstone(self, key: bytes, main: int, sub: int) -> None:
        h = self._keys.get(key)
        if h is None:
            raise KeyError(key)
        h.tombstone(main, sub)
        self._live.remove(key)
        self.latest_rev = main

    def restore(self, key: bytes, created: int, modified: Rev, ver: int) -> KeyHistory:
        """Add a key read back from the backend (call finish_restore() at the end)."""
        h = KeyHistory(key)
        h.restore(created, modified, ver)
        self._keys[key] = h
        return h

    def finish_restore(self, latest_rev: int) -> None:
        """Derive the live-key list after histories were rebuilt directly."""
        self._live = SortedList(k for k, h in self._keys.items() if h.is_live())
        self.latest_rev = latest_rev

    def get(self, key: bytes, at_rev: int) -> tuple[Rev, int, int] | None:
        h = self._keys.get(key)
        if h is None:
            return None
        return h.get(at_rev)

    def histories(self, key: bytes, end: bytes | None) -> Iterator[KeyHistory]:
        """KeyHistory objects in [key, end) by etcd's range convention."""
        keys = self._keys
        if end is None:
            h = keys.get(key)
            if h is not None:
                yield h
            return
        if end:
            if end <= key:
                return
            it = keys.irange(key, end, inclusive=(True, False))
        else:
            it = keys.irange(key)
        for k in it:
            yield keys[k]

    def revisions(self, key: bytes, end: bytes | None, at_rev: int, limit: int = 0) -> tuple[list[tuple[bytes, Rev]], int]:
        """(key, revision) of keys in the range existing at at_rev, by key, and their count.

        With limit > 0 only the first ``limit`` pairs are returned; the count
        is always the full one.
        """
        if end is None:
            h = self._keys.get(key)
            if h is None:
                return [], 0
            r = h.get(at_rev)
            return ([(key, r[0])], 1) if r is not None else ([], 0)
        if end and end <= key:
            return [], 0
        if at_rev >= self.latest_rev:
            live = self._live
            lo = live.bisect_left(key)
            hi = live.bisect_left(end) if end else len(live)
            n = hi - lo
            if limit <= 0 or limit > n:
                limit = n
            keys = self._keys
            out = []
            for k in live.islice(lo, lo + limit):
                out.append((k, keys[k].generations[-1].revs[-1]))
            return out, n
        out = []
        append = out.append
        total = 0
        for h in self.histories(key, end):
            # Inline of KeyHistory.get's fast path.
            revs = h.generations[-1].revs
            if revs and revs[-1][0] <= at_rev:
                r = revs[-1]
            else:
                got = h.get(at_rev)
                if got is None:
                    continue
                r = got[0]
            total += 1
            if limit <= 0 or total <= limit:
                append((h.key, r))
        return out, total

    def revisions_steps(self, key: bytes, end: bytes | None, at_rev: int, limit: int = 0,
                        chunk: int = 8192):
        """revisions() as a generator (its return value), ``chunk`` keys per
        step, yielding between steps. Writes in between only add revisions
        above at_rev and keys with nothing at or below it, so a step sees
        what a read at at_rev saw; a compaction past at_rev would not (the
        caller checks for one)."""
        if end is None or (end and end <= key):
            return self.revisions(key, end, at_rev, limit)
        keys = self._keys
        out: list[tuple[bytes, Rev]] = []
        append = out.append
        total = 0
        lo, first = key, True
        while True:
            it = keys.irange(lo, end or None, inclusive=(first, False))
            n, last = 0, None
            for k in it:
                last = k
                h = keys[k]
                revs = h.generations[-1].revs
                if revs and revs[-1][0] <= at_rev:
                    r = revs[-1]
                else:
                    got = h.get(at_rev)
                    if got is None:
                        n += 1
                        if n >= chunk:
                            break
                        continue
                    r = got[0]
                total += 1
                if limit <= 0 or total <= limit:
                    append((k, r))
                n += 1
                if n >= chunk:
                    break
            if last is None or n < chunk:
                return out, total
            lo, first = last, False
            yield

    def compact(self, at_rev: int) -> set[Rev]:
        """Compact every key at at_rev; return the revisions still needed <= at_rev."""
        available: set[Rev] = set()
        empty = []
        for k, h in self._keys.items():
            h.compact(at_rev, available)
            if h.is_empty():
                empty.append(k)
        for k in empty:
            del self._keys[k]
        return available

    def compact_steps(self, at_rev: int, available: set[Rev], chunk: int = 8192) -> Iterator[None]:
        """compact(at_rev) into ``available``, ``chunk`` keys at a time,
        yielding between chunks. Writes may come in between: what they add
        is above at_rev (the compaction revision is never above the current
        one), which compacting a key at at_rev leaves alone, and a key
        created since has nothing at or below at_rev. Reads in between are
        at >= at_rev (the store refuses older ones once the compaction is
        applied) and see the same through a history pruned or not."""
        keys = list(dict.keys(self._keys))
        hist = self._keys
        for i in range(0, len(keys), chunk):
            for k in keys[i:i + chunk]:
                h = hist.get(k)
                if h is None:
                    continue
                h.compact(at_rev, available)
                if h.is_empty():
                    del hist[k]
            if i + chunk < len(keys):
                yield

    def keep(self, at_rev: int) -> set[Rev]:
        available: set[Rev] = set()
        for h in self._keys.values():
            h.keep(at_rev, available)
        return available

    def keep_steps(self, at_rev: int, available: set[Rev], chunk: int = 4096) -> Iterator[None]:
        """keep(at_rev) into ``available``, ``chunk`` keys at a time, yielding
        between chunks so the caller's loop can run. The index may change
        in between: revisions added after at_rev and keys created since do
        not change what a read at at_rev sees; a compaction up to at_rev or
        below keeps what that read sees too. (A compaction beyond at_rev
        does not: the caller checks for one.)"""
        keys = list(dict.keys(self._keys))
        get = self._keys.get
        for i in range(0, len(keys), chunk):
            for k in keys[i:i + chunk]:
                h = get(k)
                if h is not None:
                    h.keep(at_rev, available)
            yield

    def __iter__(self) -> Iterator[KeyHistory]:
        return iter(self._keys.values())
