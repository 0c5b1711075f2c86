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
    auth_meta, auth_users, auth_roles          etcd's auth buckets (engine/auth/schema.py):
                                              written by the auth store inside the apply
                                              batch, restored and defragged like the rest

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

The main connection is not thread-safe: one caller at a time (the loop).
Work proportional to the db's size runs elsewhere, on read-only connections
of its own (``reader()``): a ``Reader`` pins a read transaction where it is
created (WAL mode gives it a consistent snapshot while the main connection
goes on committing) and may then be used from one worker thread.

Snapshots from outside are untrusted (``load_checked``): the file is opened
read-only and immutable with ``trusted_schema=OFF``, its sqlite_master must
hold only our own tables with our own SQL, every row is type-checked and
copied into a FRESH database made with our schema; nothing of theirs is ever
executed, attached or kept.

Files are private: the db is created 0600 (SQLite gives its -wal/-shm the
db's mode), its directory 0700.
"""
from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
import urllib.parse
from typing import Callable, Iterable, Iterator

from engine.auth import schema as auth_schema
from engine.proto import kv_pb2
from engine.wal import fsutil

from .errors import InvalidSnapshot

log = logging.getLogger("engine.mvcc")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (rev BLOB PRIMARY KEY, kv BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL,
                                  remaining_ttl INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS alarm (member_id INTEGER NOT NULL, alarm INTEGER NOT NULL,
                                  PRIMARY KEY (member_id, alarm)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS members (id BLOB PRIMARY KEY, record TEXT NOT NULL) WITHOUT ROWID;
""" + auth_schema.SCHEMA


def _norm_sql(sql: str | None) -> str:
    return " ".join((sql or "").split())


_expected: dict[str, tuple[str, str, str]] | None = None


def expected_schema() -> dict[str, tuple[str, str, str]]:
    """name -> (type, tbl_name, sql) of every sqlite_master row our schema makes."""
    global _expected
    if _expected is None:
        db = sqlite3.connect(":memory:")
        try:
            db.executescript(_SCHEMA)
            _expected = {n: (t, tn, _norm_sql(q))
                         for t, n, tn, q in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")}
        finally:
            db.close()
    return _expected


# Tables a snapshot must have; the others may be absent (older versions).
_REQUIRED = ("kv", "meta")
_COPY_BATCH = 5000

# SQLite integers are signed 64-bit; etcd member ids are unsigned 64-bit.
_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


def _to_i64(u: int) -> int:
    return u - _U64 if u > _I64_MAX else u


def _to_u64(i: int) -> int:
    return i + _U64 if i < 0 else i



# SQLite checkpoints (copying the -wal into the db file, then an fsync) run
# on a worker thread with a connection of their own once about this much
# was written since the last one, never inside a commit on the event loop: with SQLite's automatic
# checkpoint, a commit that crossed 1000 pages copied megabytes and fsynced
# on the loop (100-300 ms stalls under disk contention, after big writes).
CHECKPOINT_WAL_BYTES = 4 << 20

# Called with the seconds each commit took (etcd's
# etcd_disk_backend_commit_duration_seconds; engine/http sets it). None: not
# measured.
commit_observer: Callable[[float], None] | None = None


def _read_only_uri(path: str, *, immutable: bool = False) -> str:
    """SQLite's URI for opening ``path`` read-only (it can never write,
    checkpoint or delete the -wal); ``immutable`` for a file we do not
    trust and nobody writes (no locks, no -wal read)."""
    uri = "file:%s?mode=ro" % urllib.parse.quote(os.path.abspath(path))
    return uri + "&immutable=1" if immutable else uri

class Backend:
    def __init__(self, path: str) -> None:
        self.path = path
        d = os.path.dirname(os.path.abspath(path))
        fsutil.makedirs_durable(d)  # 0700 for every directory it creates
        _remove_leftovers(d)
        self._db = self._connect(path)
        self._in_txn = False
        # Bumped whenever the file is replaced: pooled readers of the old
        # file are closed instead of reused.
        self._generation = 0
        self._pool: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        # While an off-loop defrag copies the db: the kv row writes committed
        # since it started, replayed on the copy before it is swapped in.
        self._tracking: list[tuple[str, list]] | None = None
        self._txn_ops: list[tuple[str, list]] = []
        # The checkpointer's connection, used by one thread at a time under
        # the lock, which a swap of the file (install) also holds: a
        # read-write connection to a replaced file would checkpoint the new
        # file's -wal (found by name) into the old one.
        self._ckpt_lock = threading.RLock()
        self._ckpt_db: sqlite3.Connection | None = None
        self._ckpt_running = False
        self._unfolded = 0   # about how many bytes were written since the last checkpoint started
        self._size: int | None = None   # db_size() until the file changes (a commit, rollback, swap)

    @staticmethod
    def _connect(path: str) -> sqlite3.Connection:
        # Created private before SQLite sees it: its -wal and -shm get the
        # db file's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        # A db an older version left readable by others is made private too.
        for p in (path, path + "-wal", path + "-shm"):
            try:
                if os.stat(p).st_mode & 0o077:
                    os.chmod(p, 0o600)
            except FileNotFoundError:
                pass
        # isolation_level=None: no implicit BEGINs; transactions are explicit.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint() does it, off the loop
        # Deleted rows go to the freelist (size_in_use < size) until defrag.
        db.execute("PRAGMA auto_vacuum=NONE")
        db.executescript(_SCHEMA)
        return db

    def close(self) -> None:
        self._drain_pool()
        with self._ckpt_lock:
            if self._ckpt_db is not None:
                self._ckpt_db.close()
                self._ckpt_db = None
        if self._db is not None:
            if self._in_txn:
                self.rollback()
            self._db.close()
            self._db = None  # type: ignore[assignment]

    # -- readers (consistent snapshots for worker threads) -------------------

    def reader(self) -> "Reader":
        """A read-only connection pinned at the current committed state.

        Call it where the state is the one wanted (the loop, between apply
        batches); then use the Reader from any ONE thread and release() it.
        """
        with self._pool_lock:
            db = self._pool.pop() if self._pool else None
        if db is None:
            uri = _read_only_uri(self.path)
            # Read-only: it can never checkpoint or delete the -wal, even
            # when it outlives a swap of the db file (restore, defrag).
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only=ON")
        db.execute("BEGIN")
        db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()  # the read txn starts here
        return Reader(self, db, self._generation)

    def _return(self, db: sqlite3.Connection, generation: int) -> None:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        with self._pool_lock:
            if generation == self._generation and self._db is not None and len(self._pool) < 4:
                self._pool.append(db)
                return
        db.close()

    def _drain_pool(self) -> None:
        with self._pool_lock:
            self._generation += 1
            pool, self._pool = self._pool, []
        for db in pool:
            db.close()

    # -- transactions -----------------------------------------------------

    def begin(self) -> None:
        # IMMEDIATE: take the write lock now, not at the first write.
        self._db.execute("BEGIN IMMEDIATE")
        self._in_txn = True

    def commit(self) -> None:
        t0 = time.perf_counter()
        self._size = None
        self._db.execute("COMMIT")
        if commit_observer is not None:
            commit_observer(time.perf_counter() - t0)
        self._in_txn = False
        if self._txn_ops:
            if self._tracking is not None:
                self._tracking.extend(self._txn_ops)
            self._txn_ops = []
        if self._unfolded >= CHECKPOINT_WAL_BYTES and not self._ckpt_running:
            self._unfolded = 0
            self._ckpt_running = True
            threading.Thread(target=self._checkpoint_in_background, name="sqlite-checkpoint",
                             daemon=True).start()

    def _checkpoint_in_background(self) -> None:
        try:
            self.checkpoint()
        except Exception as e:  # the -wal only grows meanwhile; the next commit tries again
            log.warning("SQLite checkpoint failed: %r", e)
        finally:
            self._ckpt_running = False

    def checkpoint(self) -> None:
        """A PASSIVE checkpoint (copies what no reader still needs, waits
        for nobody) on the checkpointer's own connection. Any thread."""
        with self._ckpt_lock:
            if self._db is None:
                return  # closed, or being swapped
            if self._ckpt_db is None:
                self._ckpt_db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._ckpt_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def rollback(self) -> None:
        self._size = None
        self._txn_ops = []
        if self._in_txn:
            self._db.execute("ROLLBACK")
            self._in_txn = False

    def _track(self, op: str, rows: list) -> None:
        (self._txn_ops if self._in_txn else self._tracking).append((op, rows))  # type: ignore[union-attr]

    @property
    def connection(self) -> sqlite3.Connection:
        """The main connection as it is NOW (install() reconnects): for the
        auth store, which writes inside this connection's transactions."""
        return self._db

    @property
    def in_txn(self) -> bool:
        return self._in_txn

    def sync(self) -> None:
        """Make every committed transaction durable.

        Everything committed is in the db file or the -wal; fsync both. (A
        FULL checkpoint would do it too but waits for every reader, and a
        snapshot or hash being read on a worker is one: the loop would hang
        in SQLite's busy handler.) Then a PASSIVE checkpoint folds what it
        can without waiting, so the -wal does not grow for ever. Any thread
        (the server runs it on a worker while it goes on applying: what was
        committed before the call is durable after it).
        """
        for p in (self.path, self.path + "-wal"):
            try:
                fsutil.fsync_file(p)
            except FileNotFoundError:
                continue
        self.checkpoint()

    # -- kv rows ----------------------------------------------------------

    def put_rows(self, rows: list[tuple[bytes, bytes]]) -> None:
        self._unfolded += sum([len(v) for _, v in rows]) + 32 * len(rows)
        if self._tracking is not None:
            rows = list(rows)
            self._track("put", rows)
        self._db.executemany("INSERT OR REPLACE INTO kv (rev, kv) VALUES (?, ?)", rows)

    def get_row(self, rev: bytes) -> bytes | None:
        r = self._db.execute("SELECT kv FROM kv WHERE rev = ?", (rev,)).fetchone()
        return r[0] if r is not None else None

    def get_rows(self, revs: list[bytes]) -> dict[bytes, bytes]:
        """rev -> kv blob for the given revision keys (missing ones absent)."""
        return _get_rows(self._db, revs)

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

    def range_rev_sizes(self, lo: bytes, hi: bytes, limit: int = -1) -> list[tuple[bytes, int]]:
        """(rev, size of its row) for lo <= rev < hi, in revision order.
        SQLite answers length() of a blob from the record header, without
        reading the blob's overflow pages."""
        q = "SELECT rev, length(kv) FROM kv WHERE rev >= ? AND rev < ? ORDER BY rev LIMIT ?"
        return self._db.execute(q, (lo, hi, limit)).fetchall()

    def iter_rows(self, batch: int = 10000) -> Iterator[tuple[bytes, bytes]]:
        """Every row in revision order, read in bounded chunks."""
        return _iter_rows(self._db, batch)

    def delete_rows(self, revs: Iterable[bytes]) -> None:
        revs = list(revs)
        self._unfolded += 64 * len(revs)   # (pages freed: a rough share)
        if self._tracking is not None:
            self._track("del", revs)
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
        """Bytes the database occupies (pages, WAL content included). Read
        once per transaction at most (the quota check asks for it on every
        write request: two PRAGMAs each were 4-6 % of a member's CPU under
        puts), like etcd's backend size, which moves with its commits."""
        size = self._size
        if size is None:
            size = self._size = self._pragma("page_count") * self._pragma("page_size")
        return size

    def db_size_in_use(self) -> int:
        """Bytes in pages that hold data (free pages excluded)."""
        return (self._pragma("page_count") - self._pragma("freelist_count")) * self._pragma("page_size")

    def defrag(self) -> None:
        """Rewrite the file without free pages (etcd's defrag)."""
        if self._in_txn:
            raise RuntimeError("defrag inside a transaction")
        self._size = None
        self._db.execute("VACUUM")
        # Fold the WAL back and truncate it so the file on disk shrinks too.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def defrag_begin(self):
        """An off-loop defrag, in three steps: this call (main thread) starts
        recording kv writes and returns ``(copy, token)``; ``copy()`` (any
        thread) writes a compact copy with VACUUM INTO on a read-only
        connection of its own, never blocking the main connection; then
        ``defrag_finish(token)`` (main thread, between transactions) replays
        the writes committed meanwhile and the small tables onto the copy and
        swaps it in. ``defrag_abort(token)`` drops it."""
        if self._tracking is not None:
            raise RuntimeError("a defrag is already running")
        if self._in_txn:
            raise RuntimeError("defrag inside a transaction")
        d = os.path.dirname(os.path.abspath(self.path))
        fd, tmp = tempfile.mkstemp(prefix=".defrag-", dir=d)  # 0600, empty
        os.close(fd)
        self._tracking = []
        token = (tmp, self._generation)
        src = _read_only_uri(self.path)

        def copy() -> None:
            db = sqlite3.connect(src, uri=True, isolation_level=None)
            try:
                db.execute("VACUUM INTO ?", (tmp,))
            finally:
                db.close()
            # Flushed here, so the swap's fsync on the loop has little left.
            fsutil.fsync_file(tmp)

        return copy, token

    def defrag_abort(self, token) -> None:
        self._tracking = None
        unlink_db(token[0])

    def defrag_finish(self, token) -> bool:
        """See defrag_begin; False (and nothing changed) if the store was
        replaced meanwhile."""
        tmp, generation = token
        ops, self._tracking = self._tracking or [], None
        if generation != self._generation or self._in_txn:
            unlink_db(tmp)
            return False
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=DELETE")
                # One fsync below, after the replay (the file is not live yet).
                db.execute("PRAGMA synchronous=OFF")
                db.execute("BEGIN")
                for op, rows in ops:
                    if op == "put":
                        db.executemany("INSERT OR REPLACE INTO kv (rev, kv) VALUES (?, ?)", rows)
                    else:
                        db.executemany("DELETE FROM kv WHERE rev = ?", ((r,) for r in rows))
                for table, (cols, _) in _TABLES.items():
                    if table == "kv":
                        continue
                    db.execute(f"DELETE FROM {table}")
                    marks = ", ".join("?" * (cols.count(",") + 1))
                    db.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})",
                                   self._db.execute(f"SELECT {cols} FROM {table}").fetchall())
                db.execute("COMMIT")
            finally:
                db.close()
            fsutil.fsync_file(tmp)
        except BaseException:
            unlink_db(tmp)
            raise
        self.install(tmp)
        return True

    def snapshot_to(self, path: str) -> int:
        """A consistent copy of the committed database into a new file at
        path (0600, fsynced); returns its size. Any thread."""
        r = self.reader()
        try:
            return r.backup_to(path)
        finally:
            r.release()

    def snapshot_bytes(self) -> bytes:
        fd, tmp = tempfile.mkstemp(prefix=".snap-", dir=os.path.dirname(os.path.abspath(self.path)))
        os.close(fd)
        try:
            self.snapshot_to(tmp)
            with open(tmp, "rb") as f:
                return f.read()
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def replace_with_file(self, src: str) -> None:
        """Replace the database with the snapshot file ``src`` (left in
        place) and reopen. Raises InvalidSnapshot, the live db untouched,
        unless ``src`` passes load_checked."""
        self.install(self.prepare(src))

    def prepare(self, src: str) -> str:
        """Check ``src`` and copy it into a fresh db file beside ours; the
        path of that file, for install(). Pure file work: any thread."""
        d = os.path.dirname(os.path.abspath(self.path))
        fd, fresh = tempfile.mkstemp(prefix=".restore-", dir=d)
        os.close(fd)
        try:
            load_checked(src, fresh)
        except BaseException:
            unlink_db(fresh)
            raise
        return fresh

    def install(self, fresh: str) -> None:
        """Swap the prepared file ``fresh`` in for the database and reopen
        (on the main connection's thread, outside a transaction)."""
        if self._in_txn:
            raise RuntimeError("install inside a transaction")
        with self._ckpt_lock:   # no checkpoint on either file meanwhile
            self._install(fresh)

    def _install(self, fresh: str) -> None:
        self._size = None
        # A read-only connection kept open while the main one closes: the
        # last connection to close checkpoints the whole -wal into the file
        # (on this thread, the loop) and deletes it, all wasted on a file
        # about to be replaced. With another open, closing is instant; a
        # read-only one never checkpoints or deletes anything itself.
        try:
            guard = sqlite3.connect(_read_only_uri(self.path),
                                    uri=True, isolation_level=None)
            guard.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error:
            guard = None
        try:
            self.close()
            for suffix in ("-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.unlink(self.path + suffix)
            os.replace(fresh, self.path)
            fsutil.fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        finally:
            unlink_db(fresh)
            if guard is not None:
                guard.close()
            self._db = self._connect(self.path)
            self._in_txn = False


# Temporary files made beside the db (snapshots being sent, restores and
# defrags being prepared): db-sized, and garbage after a crash.
_TEMP_PREFIXES = (".snapshot-send-", ".snap-", ".incoming-", ".restore-", ".defrag-")


def _remove_leftovers(d: str) -> None:
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        if n.startswith(_TEMP_PREFIXES):
            try:
                os.unlink(os.path.join(d, n))
            except OSError:
                pass


def unlink_db(path: str) -> None:
    """Remove a SQLite file and its side files (those missing are fine)."""
    for p in (path, path + "-journal", path + "-wal", path + "-shm"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


class Reader:
    """A read-only connection pinned at one committed state (see
    Backend.reader). One thread at a time; release() when done."""

    def __init__(self, backend: Backend, db: sqlite3.Connection, generation: int) -> None:
        self._backend = backend
        self._db = db
        self._generation = generation
        self.consistent_index = self.get_meta("consistent_index")

    def release(self) -> None:
        if self._db is not None:
            self._backend._return(self._db, self._generation)
            self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def get_meta(self, name: str, default: int = 0) -> int:
        r = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return r[0] if r is not None else default

    def get_rows(self, revs: list[bytes]) -> dict[bytes, bytes]:
        return _get_rows(self._db, revs)

    def iter_rows(self, batch: int = 10000) -> Iterator[tuple[bytes, bytes]]:
        return _iter_rows(self._db, batch)

    def backup_to(self, path: str) -> int:
        """Write the pinned state to a new single-file db at path (0600,
        fsynced); its size."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        dst = sqlite3.connect(path, isolation_level=None)
        try:
            # The backup reads inside this connection's read transaction:
            # exactly the pinned state, whatever was committed since.
            self._db.backup(dst)
            # A single file: the copy must not depend on a -wal beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        return fsutil.fsync_file(path)


def file_rows(path: str, batch: int = 10000) -> Iterator[tuple[bytes, bytes]]:
    """Every kv row of OUR db file at path (e.g. one prepare() made), in
    revision order, through a read-only connection of its own."""
    db = sqlite3.connect(_read_only_uri(path), uri=True, isolation_level=None)
    try:
        yield from _iter_rows(db, batch)
    finally:
        db.close()


# -- untrusted snapshots ------------------------------------------------------

def _bad(msg: str) -> InvalidSnapshot:
    return InvalidSnapshot(f"invalid snapshot: {msg}")


def _check_kv(rev, blob) -> tuple[bytes, bytes]:
    if type(rev) is not bytes or type(blob) is not bytes:
        raise _bad("kv row of the wrong type")
    if not (len(rev) == 17 or (len(rev) == 18 and rev[17:] == b"t")) or rev[8:9] != b"_":
        raise _bad("kv row with a malformed revision")
    try:
        kv_pb2.KeyValue.FromString(blob)
    except Exception:
        raise _bad("kv row that is not a KeyValue") from None
    return rev, blob


def _check_meta(name, value):
    if type(name) is not str or type(value) is not int:
        raise _bad("meta row of the wrong type")
    return name, value


def _check_ints(*row):
    if any(type(v) is not int for v in row):
        raise _bad("row of the wrong type")
    return row


def _check_member(mid, record):
    if type(mid) is not bytes or len(mid) != 8 or type(record) is not str:
        raise _bad("member row of the wrong type")
    try:
        ok = isinstance(json.loads(record), dict)
    except ValueError:
        ok = False
    if not ok:
        raise _bad("member record is not a JSON object")
    return mid, record


# table -> (columns we read, row check)
_TABLES = {
    "kv": ("rev, kv", _check_kv),
    "meta": ("name, value", _check_meta),
    "lease": ("id, ttl, remaining_ttl", _check_ints),
    "alarm": ("member_id, alarm", _check_ints),
    "members": ("id, record", _check_member),
}


# The auth store's tables: same shape, their row checks raise auth_schema.BadRow.
_TABLES.update(auth_schema.TABLES)


def open_untrusted(path: str) -> sqlite3.Connection:
    """A read-only, immutable connection to a file we do not trust, with the
    schema it declares refused unless it is exactly (a subset of) ours."""
    if not os.path.isfile(path):
        raise _bad(f"{path}: no such file")
    uri = _read_only_uri(path, immutable=True)
    try:
        db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise _bad(str(e)) from None
    try:
        # Nothing in their schema may call functions or virtual tables; we
        # never write, so no trigger can fire; and we read no view.
        db.execute("PRAGMA trusted_schema=OFF")
        db.execute("PRAGMA query_only=ON")
        db.execute("PRAGMA cell_size_check=ON")
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        want = expected_schema()
        seen = set()
        for typ, name, tbl, sql in rows:
            if want.get(name) != (typ, tbl, _norm_sql(sql)):
                raise _bad(f"unexpected schema object {typ} {name!r}")
            seen.add(name)
        missing = [t for t in _REQUIRED if t not in seen]
        if missing:
            raise _bad(f"missing table(s) {', '.join(missing)}")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise _bad("database check failed")
    except sqlite3.Error as e:
        db.close()
        raise _bad(f"not a store database ({e})") from None
    except BaseException:
        db.close()
        raise
    return db


def load_checked(src: str, dst: str, *, fresh_meta: dict[str, int] | None = None,
                 skip_tables: tuple[str, ...] = ()) -> None:
    """Copy the untrusted snapshot ``src`` into a new database ``dst`` made
    with our own schema, row by row, each row type-checked; fsync dst.
    Raises InvalidSnapshot (dst then holds nothing useful). ``fresh_meta``
    overrides meta values; ``skip_tables`` are left empty."""
    sdb = open_untrusted(src)
    unlink_db(dst)
    os.close(os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600))
    ddb = sqlite3.connect(dst, isolation_level=None)
    try:
        ddb.execute("PRAGMA journal_mode=DELETE")
        ddb.executescript(_SCHEMA)
        ddb.execute("BEGIN")
        have = {r[0] for r in sdb.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, (cols, check) in _TABLES.items():
            if table not in have or table in skip_tables:
                continue
            cur = sdb.execute(f"SELECT {cols} FROM {table}")
            ins = f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * (cols.count(',') + 1))})"
            while True:
                rows = cur.fetchmany(_COPY_BATCH)
                if not rows:
                    break
                try:
                    ddb.executemany(ins, [check(*r) for r in rows])
                except auth_schema.BadRow as e:
                    raise _bad(str(e)) from None
        if fresh_meta:
            ddb.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", fresh_meta.items())
        ddb.execute("COMMIT")
    except sqlite3.Error as e:
        raise _bad(f"copy failed ({e})") from None
    finally:
        sdb.close()
        ddb.close()
    fsutil.fsync_file(dst)


def _get_rows(db: sqlite3.Connection, revs: list[bytes]) -> dict[bytes, bytes]:
    """rev -> kv blob for the given revision keys (missing ones absent)."""
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


def _iter_rows(db: sqlite3.Connection, batch: int) -> Iterator[tuple[bytes, bytes]]:
    """Every row in revision order, read in bounded chunks."""
    lo = b""
    while True:
        rows = db.execute("SELECT rev, kv FROM kv WHERE rev > ? ORDER BY rev LIMIT ?", (lo, batch)).fetchall()
        if not rows:
            return
        yield from rows
        lo = rows[-1][0]
