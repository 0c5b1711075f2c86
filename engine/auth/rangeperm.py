"""Key-range permissions merged per user: etcd's range_perm_cache.go.

etcd builds, for every user, one interval tree of readable and one of
writable key ranges (the union over the user's roles) and answers


  * a single key:  does any interval contain it?           (``Intersects``)
  * a range:       do the intervals cover all of it?        (``Contains``)

Here the same answers come from a sorted list of DISJOINT intervals: the
permissions are merged once, when the store changes (etcd rebuilds its cache
then too), so each check is one binary search -- O(log n), never a scan of a
user's permissions per request.

Key order is etcd's ``BytesAffineComparable``: plain byte order, except that
the EMPTY key sorts after every other key (it stands for "no end", +inf).
So a permission (or a request) with range_end "\\x00" -- etcd's "from key" --
and one with an empty end both run to +inf. A permission on a single key k
is the interval [k, k + "\\x00"), which holds k alone.

Intervals that are empty or inverted (begin >= end) cover nothing and are
dropped when merging (etcd keeps them in its tree, where they cannot make a
check succeed either).
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Iterable

# The end of every range that runs to the end of the key space.
INF = None


def _lt(a: bytes | None, b: bytes | None) -> bool:
    """a < b in etcd's affine order (None/empty = +inf)."""
    if not a:
        return False
    if not b:
        return True
    return a < b


def _le(a: bytes | None, b: bytes | None) -> bool:
    return not _lt(b, a)


def point(key: bytes) -> tuple[bytes, bytes]:
    return key, key + b"\x00"


def perm_interval(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None] | None:
    """The interval a permission grants, as etcd's getMergedPerms draws it
    (None when it covers nothing)."""
    if not range_end:
        begin, end = point(key)
    else:
        begin, end = key, (INF if range_end == b"\x00" else range_end)
    if not begin or not _lt(begin, end):
        return None  # begin = +inf, or empty/inverted
    return begin, end


class IntervalSet:
    """A union of half-open byte intervals, kept as disjoint sorted runs.

    # Invariant: begins strictly increase, and end[i] < begin[i+1] (runs
    # that touch or overlap are merged), so at most one run can hold a key.
    """

    __slots__ = ("_begins", "_ends")

    def __init__(self, intervals: Iterable[tuple[bytes, bytes | None]] = ()) -> None:
        runs: list[list] = []
        for b, e in sorted(intervals, key=lambda iv: iv[0]):
            if runs and _le(b, runs[-1][1]):  # touches or overlaps the last run
                if _lt(runs[-1][1], e):
                    runs[-1][1] = e
            else:
                runs.append([b, e])
        self._begins = [r[0] for r in runs]
        self._ends = [r[1] for r in runs]

    def __len__(self) -> int:
        return len(self._begins)

    def runs(self) -> list[tuple[bytes, bytes | None]]:
        return list(zip(self._begins, self._ends))

    def _run_at(self, key: bytes) -> int:
        """Index of the last run beginning at or before key, or -1."""
        return bisect_right(self._begins, key) - 1

    def contains_key(self, key: bytes) -> bool:
        """etcd's Intersects(point(key)): some run holds key."""
        if not key:
            return False  # the empty key is +inf: nothing begins after it
        i = self._run_at(key)
        return i >= 0 and _lt(key, self._ends[i])

    def covers(self, begin: bytes, end: bytes | None) -> bool:
        """etcd's Contains([begin, end)): one run holds all of it (runs are
        merged, so that is the same as "the union covers it")."""
        if not begin:
            return False
        i = self._run_at(begin)
        # begin inside the run too: an inverted request [m, c) with m > c
        # is covered only by a run holding m, as in etcd's tree.
        return i >= 0 and _lt(begin, self._ends[i]) and _le(end or INF, self._ends[i])


class UnifiedPerms:
    """One user's merged read and write permissions."""

    __slots__ = ("read", "write")

    def __init__(self, perms: Iterable) -> None:
        """perms: authpb.Permission messages of all the user's roles."""
        read, write = [], []
        for p in perms:
            iv = perm_interval(p.key, p.range_end)
            if iv is None:
                continue
            if p.permType in (0, 2):  # READ, READWRITE
                read.append(iv)
            if p.permType in (1, 2):  # WRITE, READWRITE
                write.append(iv)
        self.read = IntervalSet(read)
        self.write = IntervalSet(write)

    def permitted(self, key: bytes, range_end: bytes, write: bool) -> bool:
        """etcd's isRangeOpPermitted: a key alone when range_end is empty,
        else [key, range_end) with "\\x00" meaning to the end."""
        s = self.write if write else self.read
        if not range_end:
            return s.contains_key(key)
        return s.covers(key, INF if range_end == b"\x00" else range_end)
