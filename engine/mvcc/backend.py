"""The SQLite backend: durable rows under the in-memory index.

Tables (the server passes ``<data-dir>/member/snap/db`` as the path)::

    kv     rev BLOB PRIMARY KEY -> kv BLOB    etcd's "key" bucket: 17-byte revision
                                              (+ 't' for a deletion) -> serialized
                                              mvccpb.KeyValue ({key} only for a deletion)
    meta   name TEXT PRIMARY KEY -> value     consistent_index, term, current_rev,
                                              scheduled_compact_rev, finished_compact_rev
    lease  id INTEGER PRIMARY KEY, ttl, remaining_ttl
    alarm  (member_id, alarm) PRIMARY KEY
    members id BLOB PRIMARY KEY -> record     the server's member table (JSON), so it
                                              travels in snapshots with the data

Durability choice: WAL journal with ``synchronous=NORMAL``. A commit then
survives a process crash but may be lost on power failure; the database
itself stays consistent either way (SQLite guarantees that in WAL mode).
That is enough because the Raft WAL, fsynced before anything is applied, is
the durability source: the applied (consistent) index is written in the same
transaction as the data, so after a power loss the store is simply at an
older index and the server re-applies the missing committed entries, each
exactly once. The one thing that must be durable first is the store itself
before the Raft log below its index is thrown away: the server calls
``sync()`` (a checkpoint, which fsyncs) before compacting its log, as etcd
force-commits its backend before a snapshot. Rollback journal + FULL would
fsync twice per apply batch for no gain.

Not thread-safe: one caller at a time (the connection is created with
``check_same_thread=False`` so that caller may be an executor thread).
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
from typing import Iterable, Iterator

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (rev BLOB PRIMARY KEY, kv BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL,
                                  remaining_ttl INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS alarm (member_id INTEGER NOT NULL, alarm INTEGER NOT NULL,
                                  PRIMARY KEY (member_id, alarm)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (id BLOB PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
"""

# SQLite integers are signed 64-bit; etcd member ids are unsigned 64-bit.
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def _to_i64(u: int) -> int:
    return u - _U64 if u > _I64_MAX else u


def _to_u64(i: int) -> int:
    return i + _U64 if i < 0 else i


class Backend:
    def __init__(self, path: str) -> None:
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self._db = self._connect(path)
        self._in_txn = False

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGINs; transactions are explicit.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows go to the freelist (size_in_use < size) until defrag.
        db.execute("PRAGMA auto_vacuum=NONE")
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        if self._db is not None:
            if self._in_txn:
                self.rollback()
            self._db.close()
            self._db = None  # type: ignore[assignment]

    # -- transactions -----------------------------------------------------

    def begin(self) -> None:
        # IMMEDIATE: take the write lock now, not at the first write.
        self._db.execute("BEGIN IMMEDIATE")
        self._in_txn = True

    def commit(self) -> None:
        self._db.execute("COMMIT")
        self._in_txn = False

    def rollback(self) -> None:
        if self._in_txn:
            self._db.execute("ROLLBACK")
            self._in_txn = False

    @property
    def in_txn(self) -> bool:
        return self._in_txn

    def sync(self) -> None:
        """Make every committed transaction durable (checkpoint + fsync)."""
        self._db.execute("PRAGMA wal_checkpoint(FULL)")

    # -- kv rows ----------------------------------------------------------

    def put_rows(self, rows: list[tuple[bytes, bytes]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO kv (rev, kv) VALUES (?, ?)", rows)

    def get_row(self, rev: bytes) -> bytes | None:
        r = self._db.execute("SELECT kv FROM kv WHERE rev = ?", (rev,)).fetchone()
        return r[0] if r is not None else None

    def get_rows(self, revs: list[bytes]) -> dict[bytes, bytes]:
        """rev -> kv blob for the given revision keys (missing ones absent)."""
        db = self._db
        if len(revs) == 1:
            r = db.execute("SELECT kv FROM kv WHERE rev = ?", revs).fetchone()
            return {revs[0]: r[0]} if r is not None else {}
        out: dict[bytes, bytes] = {}
        # One statement per chunk instead of one per key.
        for i in range(0, len(revs), 500):
            chunk = revs[i:i + 500]
            q = "SELECT rev, kv FROM kv WHERE rev IN (%s)" % ",".join("?" * len(chunk))
            out.update(db.execute(q, chunk))
        return out

    def range_rows(self, lo: bytes, hi: bytes | None = None, limit: int = -1) -> list[tuple[bytes, bytes]]:
        """Rows with lo <= rev < hi in revision order."""
        if hi is None:
            q = "SELECT rev, kv FROM kv WHERE rev >= ? ORDER BY rev LIMIT ?"
            return self._db.execute(q, (lo, limit)).fetchall()
        q = "SELECT rev, kv FROM kv WHERE rev >= ? AND rev < ? ORDER BY rev LIMIT ?"
        return self._db.execute(q, (lo, hi, limit)).fetchall()

    def range_revs(self, lo: bytes, hi: bytes, limit: int = -1) -> list[bytes]:
        q = "SELECT rev FROM kv WHERE rev >= ? AND rev < ? ORDER BY rev LIMIT ?"
        return [r[0] for r in self._db.execute(q, (lo, hi, limit))]

    def iter_rows(self, batch: int = 10000) -> Iterator[tuple[bytes, bytes]]:
        """Every row in revision order, read in bounded chunks."""
        lo = b""
        while True:
            rows = self._db.execute(
                "SELECT rev, kv FROM kv WHERE rev > ? ORDER BY rev LIMIT ?", (lo, batch)
            ).fetchall()
            if not rows:
                return
            yield from rows
            lo = rows[-1][0]

    def delete_rows(self, revs: Iterable[bytes]) -> None:
        self._db.executemany("DELETE FROM kv WHERE rev = ?", ((r,) for r in revs))

    def row_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]

    # -- meta -------------------------------------------------------------

    def get_meta(self, name: str, default: int = 0) -> int:
        r = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return r[0] if r is not None else default

    def set_meta(self, items: Iterable[tuple[str, int]]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", items)

    # -- leases -----------------------------------------------------------

    def leases(self) -> list[tuple[int, int, int]]:
        return self._db.execute("SELECT id, ttl, remaining_ttl FROM lease ORDER BY id").fetchall()

    def put_lease(self, lease_id: int, ttl: int, remaining_ttl: int = 0) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO lease (id, ttl, remaining_ttl) VALUES (?, ?, ?)",
            (lease_id, ttl, remaining_ttl),
        )

    def delete_lease(self, lease_id: int) -> None:
        self._db.execute("DELETE FROM lease WHERE id = ?", (lease_id,))

    # -- alarms -----------------------------------------------------------

    def alarms(self) -> list[tuple[int, int]]:
        rows = self._db.execute("SELECT member_id, alarm FROM alarm").fetchall()
        return sorted((_to_u64(m), a) for m, a in rows)

    def put_alarm(self, member_id: int, alarm: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO alarm (member_id, alarm) VALUES (?, ?)", (_to_i64(member_id), alarm)
        )

    def delete_alarm(self, member_id: int, alarm: int) -> None:
        self._db.execute("DELETE FROM alarm WHERE member_id = ? AND alarm = ?", (_to_i64(member_id), alarm))

    # -- members (the server's member table: id -> JSON record) -------------

    def members(self) -> list[tuple[int, str]]:
        return [(int.from_bytes(i, "big"), r) for i, r in self._db.execute("SELECT id, record FROM members")]

    def put_member(self, member_id: int, record: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO members (id, record) VALUES (?, ?)",
                         (member_id.to_bytes(8, "big"), record))

    # -- size, defrag, snapshot ---------------------------------------------

    def _pragma(self, name: str) -> int:
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    def db_size(self) -> int:
        """Bytes the database occupies (pages, WAL content included)."""
        return self._pragma("page_count") * self._pragma("page_size")

    def db_size_in_use(self) -> int:
        """Bytes in pages that hold data (free pages excluded)."""
        return (self._pragma("page_count") - self._pragma("freelist_count")) * self._pragma("page_size")

    def defrag(self) -> None:
        """Rewrite the file without free pages (etcd's defrag)."""
        if self._in_txn:
            raise RuntimeError("defrag inside a transaction")
        self._db.execute("VACUUM")
        # Fold the WAL back and truncate it so the file on disk shrinks too.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def snapshot_to(self, path: str) -> None:
        """A consistent copy of the committed database into a new file at path."""
        dst = sqlite3.connect(path)
        try:
            self._db.backup(dst)
            # A single file: the copy must not depend on a -wal beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()

    def snapshot_bytes(self) -> bytes:
        fd, tmp = tempfile.mkstemp(prefix=".snap-", dir=os.path.dirname(os.path.abspath(self.path)))
        os.close(fd)
        try:
            os.unlink(tmp)
            self.snapshot_to(tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def replace_with(self, data: bytes) -> None:
        """Replace the database file with the snapshot ``data`` and reopen.

        write + fsync a temp file, close this connection, drop the old WAL
        files, rename over the database, fsync the directory.
        """
        d = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".restore-", dir=d)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            check = sqlite3.connect(tmp)
            try:
                ok = check.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                ok = ok and check.execute(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('kv', 'meta')").fetchone()[0] == 2
            except sqlite3.DatabaseError:
                ok = False
            finally:
                check.close()
            if not ok:
                raise ValueError("snapshot is not a sound store database")
            self.close()
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.unlink(self.path + suffix)
            os.replace(tmp, self.path)
            dfd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._db = self._connect(self.path)
        self._in_txn = False
