"""Our store's SQLite file <-> etcd 3.4's bbolt file (its backend buckets).

``to_bbolt`` turns a store db (one the backend wrote, e.g. a snapshot copy)
into the file ``etcdctl snapshot save`` gets from etcd: etcdctl's ``snapshot
status`` reads it and ``snapshot restore`` makes a data dir real etcd starts
on. ``from_bbolt`` turns etcd's file (a snapshot, or a member's
``member/snap/db``) into a store db that the backend's untrusted-snapshot
check (``backend.load_checked``) then copies like one of our own.

The rows are etcd's own encodings where the tables keep them, so most of the
work is renaming::

    bucket           key -> value (etcd 3.4)                   our table
    key              revision (8 BE main, '_', 8 BE sub[, 't'])  kv (same bytes)
                     -> mvccpb.KeyValue
    meta             consistent_index -> u64 BE                  meta consistent_index
                     scheduledCompactRev, finishedCompactRev     meta scheduled_/finished_compact_rev
                     -> revision bytes (main, sub 0)             (main only; -1: none)
                     term -> u64 BE (3.5 only)                   meta term
                     (none)                                      meta current_rev (the largest main
                                                                 revision, as etcd computes it)
    lease            id (8 BE) -> leasepb.Lease{ID, TTL,          lease (id, ttl, remaining_ttl)
                     RemainingTTL}
    alarm            AlarmMember{MemberID, Alarm} -> ""           alarm (member_id, alarm)
    members          id as hex text -> JSON {id, peerURLs,        members: id (8 BE) -> JSON
                     name, clientURLs, isLearner}                 {id, name, peer_urls,
                                                                 client_urls, is_learner}
    members_removed  id as hex text -> "removed"                 members: id -> {"removed": true}
    cluster          clusterVersion -> "3.4.0"                   (none)
    auth             authEnabled -> 1 byte, authRevision -> u64   auth_meta enabled, revision
    authUsers        name -> authpb.User                         auth_users (same bytes)
    authRoles        name -> authpb.Role                         auth_roles (same bytes)

Both directions read and write files only (no server): any thread.
"""
from __future__ import annotations

import json
import os
import sqlite3
import struct
from typing import Iterator

from engine.proto import rpc_pb2

from . import backend as _backend
from . import bbolt

CLUSTER_VERSION = b"3.4.0"

_U64BE = struct.Struct(">Q")
_I64BE = struct.Struct(">q")


def _rev_bytes(main: int) -> bytes:
    return _U64BE.pack(main) + b"_" + _U64BE.pack(0)


# -- leasepb.Lease: three int64 varint fields ----------------------------------

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1           # int64 as protobuf writes it (negative: ten bytes)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _encode_lease(lease_id: int, ttl: int, remaining: int) -> bytes:
    out = b""
    for field, v in ((1, lease_id), (2, ttl), (3, remaining)):
        if v:
            out += bytes([field << 3]) + _varint(v)
    return out


def _decode_lease(data: bytes) -> tuple[int, int, int]:
    """(ID, TTL, RemainingTTL) of a leasepb.Lease; ValueError if malformed."""
    fields = {1: 0, 2: 0, 3: 0}
    i = 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _read_varint(data, i)
            if v >= 1 << 63:
                v -= 1 << 64
            if field in fields:
                fields[field] = v
        elif wire == 2:
            n, i = _read_varint(data, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("lease record: bad wire type")
        if i > len(data):
            raise ValueError("lease record: truncated")
    return fields[1], fields[2], fields[3]


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("lease record: bad varint")
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n & ((1 << 64) - 1), i


# -- ours -> etcd -----------------------------------------------------------------

def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _rows(db: sqlite3.Connection, have: set[str], table: str, sql: str) -> list:
    return db.execute(sql).fetchall() if table in have else []


def _etcd_member(record: dict) -> bytes:
    m = {"id": record["id"], "peerURLs": record.get("peer_urls") or [], "name": record.get("name", "")}
    if record.get("client_urls"):
        m["clientURLs"] = record["client_urls"]
    if record.get("is_learner"):
        m["isLearner"] = True
    return json.dumps(m, separators=(",", ":")).encode()


def to_bbolt(sqlite_path: str, out_path: str) -> int:
    """Write the etcd 3.4 backend file holding the store db at
    ``sqlite_path`` (one of ours: nothing is checked) to ``out_path``;
    its size in bytes."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.abspath(sqlite_path), uri=True)
    try:
        have = _tables(db)
        meta = dict(_rows(db, have, "meta", "SELECT name, value FROM meta"))
        auth_meta = dict(_rows(db, have, "auth_meta", "SELECT name, value FROM auth_meta"))

        metas = [(b"consistent_index", _U64BE.pack(max(0, meta.get("consistent_index", 0))))]
        for ours, theirs in (("finished_compact_rev", b"finishedCompactRev"),
                             ("scheduled_compact_rev", b"scheduledCompactRev")):
            if meta.get(ours, -1) > 0:
                metas.append((theirs, _rev_bytes(meta[ours])))
        leases = [(_I64BE.pack(i), _encode_lease(i, ttl, rem))
                  for i, ttl, rem in _rows(db, have, "lease", "SELECT id, ttl, remaining_ttl FROM lease")]
        alarms = [(rpc_pb2.AlarmMember(memberID=_backend._to_u64(m), alarm=a).SerializeToString(), b"")
                  for m, a in _rows(db, have, "alarm", "SELECT member_id, alarm FROM alarm")]
        members, removed = [], []
        for mid, text in _rows(db, have, "members", "SELECT id, record FROM members"):
            key = b"%x" % int.from_bytes(mid, "big")
            try:
                rec = json.loads(text)
                if rec.get("removed"):
                    removed.append((key, b"removed"))
                else:
                    members.append((key, _etcd_member(rec)))
            except (ValueError, TypeError, AttributeError, KeyError):
                continue   # not a member record: the membership ignores it too
        auth = []
        if "enabled" in auth_meta:
            auth.append((b"authEnabled", b"\x01" if auth_meta["enabled"] else b"\x00"))
        if "revision" in auth_meta:
            auth.append((b"authRevision", _U64BE.pack(auth_meta["revision"])))
        users = _rows(db, have, "auth_users", "SELECT name, user FROM auth_users")
        roles = _rows(db, have, "auth_roles", "SELECT name, role FROM auth_roles")

        buckets = {
            b"alarm": sorted(alarms),
            b"auth": sorted(auth),
            b"authRoles": sorted(roles),
            b"authUsers": sorted(users),
            b"cluster": [(b"clusterVersion", CLUSTER_VERSION)],
            b"key": _backend.file_rows(sqlite_path) if "kv" in have else [],
            b"lease": sorted(leases),
            b"members": sorted(members),
            b"members_removed": sorted(removed),
            b"meta": sorted(metas),
        }
        # What is coming, so the writer stops if the row iterator does not
        # end, and its size bound is the one of this input (never the disk).
        expected = sum(bbolt.ELEM + len(k) + len(v) for name, items in buckets.items()
                       if name != b"key" for k, v in items)
        if "kv" in have:
            rows, row_bytes = db.execute(
                "SELECT count(*), coalesce(sum(length(rev) + length(kv)), 0) FROM kv").fetchone()
            expected += rows * bbolt.ELEM + row_bytes
        return bbolt.write(out_path, sorted(buckets.items()), expected_input=expected)
    finally:
        db.close()


def reader_to_bbolt(reader: "_backend.Reader", out_path: str) -> int:
    """The state a backend Reader is pinned at, as an etcd 3.4 backend file
    at ``out_path`` (through a SQLite copy beside it, removed); its size.
    For Maintenance.Snapshot: run it on a worker."""
    tmp = out_path + ".sqlite"
    try:
        reader.backup_to(tmp)
        return to_bbolt(tmp, out_path)
    finally:
        _backend.unlink_db(tmp)


# -- etcd -> ours -----------------------------------------------------------------

def _main_rev(b: bytes) -> int:
    if len(b) < 8:
        raise bbolt.BoltError("meta: malformed revision")
    return _U64BE.unpack_from(b)[0]


def _u64(b: bytes, what: str) -> int:
    if len(b) != 8:
        raise bbolt.BoltError(f"meta: malformed {what}")
    return _U64BE.unpack(b)[0]


def _schema(db: sqlite3.Connection) -> None:
    for typ, _tbl, sql in _backend.expected_schema().values():
        if typ == "table" and sql:
            db.execute(sql)


def from_bbolt(bbolt_path: str, out_sqlite_path: str) -> int:
    """Write a store db (our schema) holding the etcd backend file at
    ``bbolt_path`` to ``out_sqlite_path``; the store's revision. Raises
    bbolt.BoltError (a ValueError) when the file cannot be read; rows that
    are not what etcd writes are left for the backend's check
    (load_checked) to refuse."""
    _backend.unlink_db(out_sqlite_path)
    os.close(os.open(out_sqlite_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
    db = sqlite3.connect(out_sqlite_path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA synchronous=OFF")   # the caller's copy (load_checked) is fsynced
        _schema(db)
        db.execute("BEGIN")
        with bbolt.Reader(bbolt_path) as r:
            names = set(r.buckets())
            if b"key" not in names or b"meta" not in names:
                raise bbolt.BoltError("not an etcd backend (no key or meta bucket)")
            cur = 1
            batch: list[tuple[bytes, bytes]] = []
            for k, v in r.items(b"key"):
                if len(k) >= 8:
                    cur = max(cur, _U64BE.unpack_from(k)[0])
                batch.append((k, v))
                if len(batch) >= 5000:
                    db.executemany("INSERT INTO kv (rev, kv) VALUES (?, ?)", batch)
                    batch = []
            db.executemany("INSERT INTO kv (rev, kv) VALUES (?, ?)", batch)

            meta = dict(r.items(b"meta"))
            out = {"consistent_index": 0, "term": 0}
            if b"consistent_index" in meta:
                out["consistent_index"] = _u64(meta[b"consistent_index"], "consistent_index")
            if b"term" in meta:
                out["term"] = _u64(meta[b"term"], "term")
            for theirs, ours in ((b"finishedCompactRev", "finished_compact_rev"),
                                 (b"scheduledCompactRev", "scheduled_compact_rev")):
                if theirs in meta:
                    out[ours] = _main_rev(meta[theirs])
                    cur = max(cur, out[ours])
            out["current_rev"] = cur
            db.executemany("INSERT INTO meta (name, value) VALUES (?, ?)",
                           [(n, _backend._to_i64(v)) for n, v in out.items()])

            leases = []
            for _k, v in r.items(b"lease"):
                try:
                    leases.append(_decode_lease(v))
                except ValueError as e:
                    raise bbolt.BoltError(str(e)) from None
            db.executemany("INSERT OR REPLACE INTO lease (id, ttl, remaining_ttl) VALUES (?, ?, ?)", leases)

            alarms = []
            for k, _v in r.items(b"alarm"):
                try:
                    a = rpc_pb2.AlarmMember.FromString(k)
                except Exception:
                    raise bbolt.BoltError("alarm: malformed record") from None
                alarms.append((_backend._to_i64(a.memberID), a.alarm))
            db.executemany("INSERT OR IGNORE INTO alarm (member_id, alarm) VALUES (?, ?)", alarms)

            db.executemany("INSERT OR REPLACE INTO members (id, record) VALUES (?, ?)",
                           list(_members(r)))

            auth = dict(r.items(b"auth"))
            auth_rows = []
            if b"authEnabled" in auth:
                auth_rows.append(("enabled", 1 if auth[b"authEnabled"][:1] == b"\x01" else 0))
            if b"authRevision" in auth:
                auth_rows.append(("revision", _backend._to_i64(_u64(auth[b"authRevision"], "authRevision"))))
            db.executemany("INSERT INTO auth_meta (name, value) VALUES (?, ?)", auth_rows)
            db.executemany("INSERT INTO auth_users (name, user) VALUES (?, ?)", list(r.items(b"authUsers")))
            db.executemany("INSERT INTO auth_roles (name, role) VALUES (?, ?)", list(r.items(b"authRoles")))
        db.execute("COMMIT")
    except sqlite3.Error as e:
        raise bbolt.BoltError(f"cannot convert: {e}") from None
    finally:
        db.close()
    return cur


def _members(r: bbolt.Reader) -> Iterator[tuple[bytes, str]]:
    for k, v in r.items(b"members"):
        try:
            mid = int(k, 16)
            m = json.loads(v)
            rec = {"id": mid, "name": str(m.get("name", "")),
                   "peer_urls": [str(u) for u in m.get("peerURLs") or []],
                   "client_urls": [str(u) for u in m.get("clientURLs") or []],
                   "is_learner": bool(m.get("isLearner", False))}
        except (ValueError, TypeError, AttributeError):
            continue   # not a member record: left out, as the membership would
        if 0 <= mid < 1 << 64:
            yield mid.to_bytes(8, "big"), json.dumps(rec, sort_keys=True)
    for k, _v in r.items(b"members_removed"):
        try:
            mid = int(k, 16)
        except ValueError:
            continue
        if 0 <= mid < 1 << 64:
            yield mid.to_bytes(8, "big"), json.dumps({"removed": True})
