"""The revision scrubber's reads: a key or prefix as it was at one revision,
and what that revision changed in it.

One revision R is two Ranges at once (R and R-1, each with its own
deadline): the keys at R, and the diff from R-1 (added, changed, deleted
at R). Revisions below the compacted one are gone: etcd answers "required
revision has been compacted", and the view says so instead of failing; so
does a diff whose R-1 is compacted while R is not. No UI here.
"""
from __future__ import annotations

import asyncio
import dataclasses

import grpc

from engine.proto import rpc_pb2

from . import errors
from .actions import ACTION_DEADLINE, _kv, prefix_end
from .codec import encode
from .connection import Stubs
from .model import KeyValue

SCRUB_LIMIT = 1000           # keys read at one revision (the count says how many there were)
COMPACTED = "required revision has been compacted"
FUTURE = "required revision is a future revision"


@dataclasses.dataclass(frozen=True)
class Change:
    kind: str                          # "added", "changed", "deleted"
    key: str
    value: str                         # the value at R ("" when deleted)
    before: str = ""                   # the value at R-1 ("" when added)


@dataclasses.dataclass(frozen=True)
class RevisionView:
    key: str
    prefix: bool
    revision: int
    head: int                          # the cluster's current revision, as the read's header said
    kvs: tuple[KeyValue, ...] = ()
    count: int = 0                     # keys at R (Range's count: exact even beyond SCRUB_LIMIT)
    changes: tuple[Change, ...] = ()
    compacted: bool = False            # R itself is compacted away
    diff_compacted: bool = False       # R-1 is (R is the oldest revision left)
    error: str = ""

    @property
    def what(self) -> str:
        return f"{self.key}{'*' if self.prefix else ''}"


async def _range(stubs: Stubs, key: bytes, end: bytes, revision: int) -> rpc_pb2.RangeResponse:
    return await stubs.kv.Range(rpc_pb2.RangeRequest(key=key, range_end=end, revision=revision,
                                                     limit=SCRUB_LIMIT), timeout=ACTION_DEADLINE)


def diff(before: tuple[KeyValue, ...], after: tuple[KeyValue, ...], revision: int) -> tuple[Change, ...]:
    """What revision `revision` changed: keys added, changed (modified at it) or deleted, by key."""
    old = {kv.key: kv for kv in before}
    new = {kv.key: kv for kv in after}
    out = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if b is None:
            out.append(Change("deleted", key, "", a.value))
        elif a is None:
            out.append(Change("added", key, b.value))
        elif b.mod_revision == revision:
            # A put of the same value is a change too (the version moved).
            out.append(Change("changed", key, b.value, a.value))
    return tuple(out)


async def revision_view(stubs: Stubs, key: str, prefix: bool, revision: int) -> RevisionView:
    """`key` (every key starting with it if `prefix`) at `revision` (0: the
    head), with the diff from the revision before. Never raises for etcd's
    answers: compacted revisions are marked, other failures are in `error`."""
    k = encode(key)
    start = (k or b"\x00") if prefix else k
    end = (prefix_end(k) if k else b"\x00") if prefix else b""
    try:
        if revision <= 0:
            head = await stubs.kv.Range(rpc_pb2.RangeRequest(key=start, range_end=end, count_only=True),
                                        timeout=ACTION_DEADLINE)
            revision = head.header.revision
        at, before = await asyncio.gather(_range(stubs, start, end, revision),
                                          _range(stubs, start, end, revision - 1) if revision > 1
                                          else _empty(), return_exceptions=True)
    except grpc.aio.AioRpcError as exc:
        return RevisionView(key, prefix, revision, 0, error=errors.describe(exc))
    if isinstance(at, BaseException):
        text = errors.describe(at)
        if COMPACTED in text:
            return RevisionView(key, prefix, revision, 0, compacted=True)
        return RevisionView(key, prefix, revision, 0, error=text if FUTURE not in text
                            else f"revision {revision} is in the future")
    kvs = tuple(_kv(kv) for kv in at.kvs)
    view = RevisionView(key, prefix, revision, at.header.revision, kvs, at.count)
    if isinstance(before, BaseException):
        text = errors.describe(before)
        if COMPACTED in text:
            return dataclasses.replace(view, diff_compacted=True)
        return dataclasses.replace(view, error=f"revision {revision - 1}: {text}")
    previous = tuple(_kv(kv) for kv in before.kvs) if before is not None else ()
    return dataclasses.replace(view, changes=diff(previous, kvs, revision))


async def _empty() -> None:
    return None


# ---------------------------------------------------------- the next / previous change

CHANGE_DEADLINE = 2.0        # seconds a search for a change waits (a watch that sees nothing ends here)
CHANGE_EVENTS = 10_000       # events looked at, at most, in one search


async def _change_revisions(stubs: Stubs, key: str, prefix: bool, start: int, below: int,
                            first: bool = False) -> list[int] | str:
    """The revisions >= `start` and < `below` at which `key` (or the prefix)
    changed, from a Watch started at `start` (history first, as etcd sends it);
    `first`: only the first. Stops at an event at or past `below`, at a
    response of events complete up to `below` - 1 (its header revision: etcd
    sends a catching-up watcher's history up to it in that response), after
    CHANGE_EVENTS events, or at CHANGE_DEADLINE (nothing more in history: a
    watch with nothing to send sends nothing). A string: why it could not look."""
    k = encode(key)
    create = rpc_pb2.WatchCreateRequest(key=(k or b"\x00") if prefix else k,
                                        range_end=(prefix_end(k) if k else b"\x00") if prefix else b"",
                                        start_revision=start)
    call = stubs.watch.Watch()
    found: list[int] = []
    seen = 0

    async def read() -> str:
        nonlocal seen
        await call.write(rpc_pb2.WatchRequest(create_request=create))
        async for resp in call:
            if resp.compact_revision:
                return f"history before {resp.compact_revision} is compacted"
            if resp.canceled:
                return resp.cancel_reason or "the watch was cancelled"
            for e in resp.events:
                seen += 1
                if e.kv.mod_revision >= below or seen > CHANGE_EVENTS:
                    return ""
                if not found or found[-1] != e.kv.mod_revision:
                    found.append(e.kv.mod_revision)
                if first:
                    return ""
            if resp.events and resp.header.revision >= below - 1:
                return ""
        return ""

    try:
        why = await asyncio.wait_for(read(), CHANGE_DEADLINE)
    except asyncio.TimeoutError:
        why = ""                 # history exhausted: nothing more before `below`
    except grpc.aio.AioRpcError as exc:
        why = errors.describe(exc)
    finally:
        call.cancel()
    return why if why and not found else found


async def next_change(stubs: Stubs, key: str, prefix: bool, revision: int, head: int) -> int | str:
    """The first revision after `revision` (up to `head`) that changed the key or
    prefix; a string when there is none (or it could not be read)."""
    if revision >= head:
        return f"revision {revision} is the head"
    got = await _change_revisions(stubs, key, prefix, revision + 1, head + 1, first=True)
    if isinstance(got, str):
        return got
    return got[0] if got else f"no change after revision {revision} up to the head ({head})"


async def previous_change(stubs: Stubs, key: str, prefix: bool, revision: int, compacted: int) -> int | str:
    """The last revision before `revision` that changed the key or prefix: the
    newest put among the keys as they were at `revision` - 1, then any delete
    after it (a watch from there), so deletions are not skipped."""
    if revision <= max(1, compacted):
        return f"nothing before revision {revision} (compacted at {compacted})"
    view = await revision_view(stubs, key, prefix, revision - 1)
    if view.compacted:
        return f"revision {revision - 1} is compacted"
    if view.error:
        return view.error
    latest = max((kv.mod_revision for kv in view.kvs), default=0)
    got = await _change_revisions(stubs, key, prefix, max(latest, compacted) + 1, revision)
    if isinstance(got, str):
        return got
    if got:
        return got[-1]
    if latest and latest >= compacted:
        return latest
    return f"no change before revision {revision} since the compacted revision {compacted}"
