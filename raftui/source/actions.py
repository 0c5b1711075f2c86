"""The operator's actions as single etcd v3 calls (or short sequences).

Each function takes the stubs of the endpoint to talk to and returns an
ActionResult; it never raises for an etcd error -- the operator reads etcd's
own message instead. Which endpoint to use is the ClusterSource's choice.
"""
from __future__ import annotations

import hashlib
import os
import pathlib

import grpc

from engine.proto import rpc_pb2

from . import errors
from .codec import decode, encode
from .connection import Stubs
from .model import ActionResult, KeyPage, KeyValue

ACTION_DEADLINE = 5.0        # etcdctl's default --command-timeout
SLOW_DEADLINE = 60.0         # defrag, snapshot: proportional to the db size
HISTORY_LIMIT = 100
SHA256_LEN = 32


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix" (clientv3.GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # every key


def _kv(kv) -> KeyValue:
    return KeyValue(
        key=decode(kv.key),
        value=decode(kv.value),
        create_revision=kv.create_revision, mod_revision=kv.mod_revision,
        version=kv.version, lease=kv.lease,
    )


async def put(stubs: Stubs, key: str, value: str, lease_ttl: int | None = None) -> ActionResult:
    try:
        lease_id = 0
        if lease_ttl:
            grant = await stubs.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=lease_ttl),
                                                 timeout=ACTION_DEADLINE)
            lease_id = grant.ID
        resp = await stubs.kv.Put(
            rpc_pb2.PutRequest(key=encode(key), value=encode(value), lease=lease_id),
            timeout=ACTION_DEADLINE,
        )
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"put {key}: {errors.describe(exc)}")
    lease = f" with lease {lease_id:x} ({lease_ttl}s)" if lease_id else ""
    return ActionResult(True, f"put {key} at revision {resp.header.revision}{lease}", resp.header.revision)


async def delete(stubs: Stubs, key: str, prefix: bool = False) -> ActionResult:
    k = encode(key)
    # An empty prefix is every key: etcd wants key \0 for that (etcdctl del "" --prefix).
    req = rpc_pb2.DeleteRangeRequest(key=(k or b"\x00") if prefix else k,
                                     range_end=(prefix_end(k) if k else b"\x00") if prefix else b"")
    try:
        resp = await stubs.kv.DeleteRange(req, timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"delete {key}: {errors.describe(exc)}")
    what = f"prefix {key}" if prefix else key
    return ActionResult(True, f"deleted {resp.deleted} key(s) at {what}, revision {resp.header.revision}",
                        resp.deleted)


async def get(stubs: Stubs, key: str, revision: int = 0, prefix: bool = False,
              limit: int = 1000) -> ActionResult:
    """Read a key or prefix, at `revision` (0: the latest). data: list[KeyValue]."""
    k = encode(key)
    req = rpc_pb2.RangeRequest(key=k, range_end=prefix_end(k) if prefix else b"",
                               revision=revision, limit=limit)
    try:
        resp = await stubs.kv.Range(req, timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"get {key} at revision {revision or 'latest'}: {errors.describe(exc)}")
    kvs = [_kv(kv) for kv in resp.kvs]
    at = f"revision {revision}" if revision else f"latest (revision {resp.header.revision})"
    return ActionResult(True, f"get {key}{'*' if prefix else ''} at {at}: {resp.count} key(s)", kvs)


async def count(stubs: Stubs, key: str, prefix: bool = False) -> ActionResult:
    """How many keys `key` (or every key with that prefix) names now: data = the count."""
    k = encode(key)
    req = rpc_pb2.RangeRequest(key=k or b"\x00", range_end=(prefix_end(k) if k else b"\x00") if prefix else b"",
                               count_only=True)
    try:
        resp = await stubs.kv.Range(req, timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"count {key}: {errors.describe(exc)}")
    return ActionResult(True, f"{resp.count} key(s)", resp.count)


async def history(stubs: Stubs, key: str) -> ActionResult:
    """The key's versions in its current generation, newest first: each
    version's mod_revision - 1 is a revision at which the previous one was
    live. Stops at a revision compacted away or where the key did not exist."""
    versions: list[KeyValue] = []
    revision = 0
    note = ""
    try:
        while len(versions) < HISTORY_LIMIT:
            resp = await stubs.kv.Range(rpc_pb2.RangeRequest(key=encode(key), revision=revision),
                                        timeout=ACTION_DEADLINE)
            if not resp.kvs:
                break
            kv = _kv(resp.kvs[0])
            versions.append(kv)
            if kv.version <= 1 or kv.mod_revision <= 1:
                break
            revision = kv.mod_revision - 1
    except grpc.aio.AioRpcError as exc:
        if not versions:
            return ActionResult.fail(f"history {key}: {errors.describe(exc)}")
        note = f" (older: {errors.describe(exc)})"
    return ActionResult(True, f"history {key}: {len(versions)} version(s){note}", versions)


async def list_keys(stubs: Stubs, prefix: str, limit: int = 1000, after: str | None = None,
                    before: str | None = None, last: bool = False) -> ActionResult:
    """One page of keys (keys_only) under `prefix`; data: a KeyPage.

    From the start, or `after` a key; `last`: the last page (one descending
    read, so `end` is one step over any number of keys); `before` a key: the
    page just before it (descending too). The page's count is etcd's exact
    count of the range read: from the start or the end, every key under the prefix."""
    p = encode(prefix)
    start = (encode(after) + b"\x00") if after is not None else (p or b"\x00")
    end = encode(before) if before is not None else (prefix_end(p) if p else b"\x00")
    descending = last or before is not None
    req = rpc_pb2.RangeRequest(key=start, range_end=end, keys_only=True, limit=limit)
    if descending:
        req.sort_order, req.sort_target = rpc_pb2.RangeRequest.DESCEND, rpc_pb2.RangeRequest.KEY
    try:
        resp = await stubs.kv.Range(req, timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"list {prefix or '(all)'}: {errors.describe(exc)}")
    keys = [_kv(kv) for kv in resp.kvs]
    if descending:
        keys.reverse()
    return ActionResult(True, f"{len(keys)} keys", KeyPage(tuple(keys), resp.more, resp.count))


async def compact(stubs: Stubs, revision: int, physical: bool = False) -> ActionResult:
    try:
        await stubs.kv.Compact(rpc_pb2.CompactionRequest(revision=revision, physical=physical),
                               timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"compact to {revision}: {errors.describe(exc)}")
    return ActionResult(True, f"compacted to revision {revision}")


async def defrag(stubs: Stubs, name: str) -> ActionResult:
    try:
        before = await stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=ACTION_DEADLINE)
        await stubs.maintenance.Defragment(rpc_pb2.DefragmentRequest(), timeout=SLOW_DEADLINE)
        after = await stubs.maintenance.Status(rpc_pb2.StatusRequest(), timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"defrag {name}: {errors.describe(exc)}")
    return ActionResult(True, f"defragmented {name}: db {human_bytes(before.dbSize)} -> "
                              f"{human_bytes(after.dbSize)}", (before.dbSize, after.dbSize))


async def move_leader(leader: Stubs, target_id: int, target_name: str) -> ActionResult:
    try:
        await leader.maintenance.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target_id),
                                            timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"move leader to {target_name}: {errors.describe(exc)}")
    return ActionResult(True, f"leadership moved to {target_name}")


async def add_learner(stubs: Stubs, peer_url: str) -> ActionResult:
    try:
        resp = await stubs.cluster.MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=[peer_url], isLearner=True), timeout=ACTION_DEADLINE
        )
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"add learner {peer_url}: {errors.describe(exc)}")
    # data: the new id, and the cluster's (name, first peer URL) list -- what
    # the new member's --initial-cluster must say.
    members = [(m.name, m.peerURLs[0] if m.peerURLs else "") for m in resp.members]
    return ActionResult(True, f"added learner {resp.member.ID:x} at {peer_url}", (resp.member.ID, members))


async def promote(stubs: Stubs, member_id: int, name: str) -> ActionResult:
    try:
        await stubs.cluster.MemberPromote(rpc_pb2.MemberPromoteRequest(ID=member_id),
                                          timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"promote {name}: {errors.describe(exc)}")
    return ActionResult(True, f"promoted {name} to voter")


async def remove_member(stubs: Stubs, member_id: int, name: str) -> ActionResult:
    try:
        await stubs.cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=member_id),
                                         timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"remove {name}: {errors.describe(exc)}")
    return ActionResult(True, f"removed member {name}")


async def alarm_list(stubs: Stubs, name_of: dict[int, str] | None = None) -> ActionResult:
    """Every alarm, by member name (`name_of`; the hex id for a member not known) and what it means."""
    try:
        resp = await stubs.maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET),
                                             timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"alarm list: {errors.describe(exc)}")
    from .summary import ALARM_MEANING, ALARM_REMEDY

    items = []
    for a in resp.alarms:
        alarm = rpc_pb2.AlarmType.Name(a.alarm)
        meaning = "; ".join(t for t in (ALARM_MEANING.get(alarm), ALARM_REMEDY.get(alarm)) if t)
        items.append(f"{alarm} on {(name_of or {}).get(a.memberID) or f'{a.memberID:x}'}"
                     + (f": {meaning}" if meaning else ""))
    return ActionResult(True, "alarms: " + ("; ".join(items) if items else "none"), items)


async def alarm_disarm(stubs: Stubs) -> ActionResult:
    """Disarm every active alarm, like `etcdctl alarm disarm`."""
    try:
        listed = await stubs.maintenance.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET),
                                               timeout=ACTION_DEADLINE)
        for a in listed.alarms:
            await stubs.maintenance.Alarm(
                rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=a.memberID,
                                     alarm=a.alarm),
                timeout=ACTION_DEADLINE,
            )
    except grpc.aio.AioRpcError as exc:
        return ActionResult.fail(f"alarm disarm: {errors.describe(exc)}")
    return ActionResult(True, f"disarmed {len(listed.alarms)} alarm(s)")


async def snapshot_save(stubs: Stubs, path: str, name: str) -> ActionResult:
    """Stream a snapshot to `path`, like `etcdctl snapshot save`: the file keeps
    the trailing sha256 (so etcdctl snapshot status/restore accept it), and the
    sha256 is checked before the file is renamed into place."""
    target = pathlib.Path(path).expanduser()
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            call = stubs.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), timeout=SLOW_DEADLINE)
            tail = b""
            async for resp in call:
                # The last SHA256_LEN bytes of the stream are the checksum of
                # everything before them; hold them back until the stream ends.
                data = tail + resp.blob
                body, tail = data[:-SHA256_LEN], data[-SHA256_LEN:]
                digest.update(body)
                size += len(body)
                f.write(resp.blob)
            f.flush()
            os.fsync(f.fileno())
        if digest.digest() != tail:
            partial.unlink(missing_ok=True)
            return ActionResult.fail(f"snapshot from {name}: sha256 checksum mismatch")
        os.replace(partial, target)
    except grpc.aio.AioRpcError as exc:
        partial.unlink(missing_ok=True)
        return ActionResult.fail(f"snapshot from {name}: {errors.describe(exc)}")
    except OSError as exc:
        partial.unlink(missing_ok=True)
        return ActionResult.fail(f"snapshot to {target}: {exc.strerror or exc}")
    return ActionResult(True, f"snapshot of {name} saved to {target} ({human_bytes(size)}, sha256 ok)",
                        str(target))


def human_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
