"""SQLite checkpoints (copying the -wal into the db file, with an fsync) run
on a worker thread with their own connection, never inside a commit on the
caller's thread (the member's event loop): SQLite's automatic checkpoint
did, on the commit that crossed 1000 pages."""
from __future__ import annotations

import os
import threading
import time

from engine.mvcc.backend import Backend


def test_commits_never_checkpoint_and_a_worker_does(tmp_path, monkeypatch):
    b = Backend(str(tmp_path / "db"))
    assert b._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    ran: list[str] = []
    orig = Backend.checkpoint

    def spy(self):
        ran.append(threading.current_thread().name)
        return orig(self)
    monkeypatch.setattr(Backend, "checkpoint", spy)
    value = os.urandom(256 << 10)
    for i in range(40):   # 10 MiB through the -wal
        b.begin()
        b.put_rows([(b"%08d" % i, value)])
        b.commit()
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the worker's effect
    assert ran and all(name == "sqlite-checkpoint" for name in ran), ran
    while b._ckpt_running and time.monotonic() < deadline:
        time.sleep(0.01)
    # The worker's checkpoint folded the -wal into the file: the rows are there.
    assert os.path.getsize(b.path) > 3 << 20
    b.close()
