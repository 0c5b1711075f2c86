"""Review of cba8af3 (apply one by one, skip the culprit): the skip is only
safe when the exception comes from the entry's content, the same on every
member. An error that comes from THIS member's disk or db is not: skipping
there makes this member diverge for good while it keeps serving.

sqlite3 maps SQLITE_CORRUPT / SQLITE_NOTADB ("database disk image is
malformed") to sqlite3.DatabaseError, SQLITE_CONSTRAINT to IntegrityError,
a closed connection to ProgrammingError: none of them is in
_FATAL_APPLY_ERRORS (only OperationalError and InternalError of sqlite3's),
so Node._apply_one_by_one skips the entry on the corrupt member alone and
moves its applied index past it.
"""
from __future__ import annotations

import sqlite3

import pytest

from engine.mvcc.apply import Applier, ApplyRejected
from engine.proto import internal_pb2, rpc_pb2
from tests.server.inproc import InProcCluster, eventually, get, put, run


def _put(key: bytes) -> internal_pb2.InternalRequest:
    return internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=b"v"))


@pytest.mark.parametrize("exc", [sqlite3.DatabaseError("database disk image is malformed"),
                                 sqlite3.IntegrityError("UNIQUE constraint failed"),
                                 sqlite3.ProgrammingError("Cannot operate on a closed database."),
                                 OSError(28, "No space left on device"), MemoryError()])
def test_a_local_error_inside_one_request_is_not_the_entrys_fault(tmp_path, exc):
    """Only a request's own semantics may be rejected (and skipped alike
    everywhere): the member's db, disk or memory failing inside it propagates
    as itself, which the server treats as fatal."""
    a = Applier(str(tmp_path / "db"))
    try:
        def handler(req):
            raise exc
        a.register("member_attributes", handler)
        with pytest.raises(type(exc)) as got:
            a.apply_batch(2, [_put(b"a"), internal_pb2.InternalRequest(member_attributes=rpc_pb2.Member(ID=1))],
                          indexes=[1, 2])
        assert not isinstance(got.value, ApplyRejected)
        assert a.consistent_index == 0  # rolled back

        def bug(req):
            raise KeyError("a bug its content triggers")
        a.register("member_attributes", bug)
        with pytest.raises(ApplyRejected) as rej:
            a.apply_batch(2, [_put(b"a"), internal_pb2.InternalRequest(member_attributes=rpc_pb2.Member(ID=1))],
                          indexes=[1, 2])
        assert rej.value.position == 1 and isinstance(rej.value.cause, KeyError)
    finally:
        a.close()


def test_failures_after_the_requests_are_not_the_entrys_fault(tmp_path):
    """Committing (a compaction step runs with it) and notifying watchers
    are this member's work, whatever the entries: not ApplyRejected."""
    a = Applier(str(tmp_path / "db"))
    try:
        orig = a.kv.commit_batch

        def failing_commit(meta=None):
            raise RuntimeError("compaction step failed")
        a.kv.commit_batch = failing_commit
        with pytest.raises(RuntimeError):
            a.apply_batch(1, [_put(b"a")], indexes=[1])
        a.kv.commit_batch = orig

        def failing_notify(changes):
            raise RuntimeError("notify failed")
        a.hub.notify = failing_notify
        with pytest.raises(RuntimeError) as got:
            a.apply_batch(2, [_put(b"b")], indexes=[2])
        assert not isinstance(got.value, ApplyRejected)
    finally:
        a.close()


def test_a_failed_notify_on_one_member_is_fatal(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            victim = next(x for x in c.nodes.values() if x is not lead)
            orig = victim.applier.hub.notify

            def notify(changes, _orig=orig):
                if any(b"victim-key" in repr(ch).encode() for ch in changes):
                    raise RuntimeError("a watcher bug on this member")
                return _orig(changes)
            victim.applier.hub.notify = notify
            await put(lead, b"victim-key", b"v")
            await eventually(lambda: victim.failed.is_set(), 10, "the victim to fail")
            assert all(not x.failed.is_set() for x in c.nodes.values() if x is not victim)
        finally:
            await c.stop_all()
    run(main())


def test_corrupt_db_on_one_member_is_fatal_not_a_skip(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            await put(lead, b"before", b"1")
            victim_name, victim = next((n, x) for n, x in c.nodes.items() if x is not lead)
            backend = victim.applier.backend
            orig_put_rows = backend.put_rows

            def corrupt_put_rows(rows, _orig=orig_put_rows):
                rows = list(rows)
                if any(b"victim-key" in bytes(v) for _, v in rows):
                    # What sqlite3 raises for SQLITE_CORRUPT on this member's file.
                    raise sqlite3.DatabaseError("database disk image is malformed")
                return _orig(rows)
            backend.put_rows = corrupt_put_rows
            await put(lead, b"victim-key", b"v")
            await put(lead, b"after", b"1")
            for x in c.nodes.values():
                if x is not victim:
                    assert await get(x, b"victim-key") == b"v"
            # Give the victim time to apply (or to fail).
            await eventually(lambda: victim.failed.is_set()
                             or victim.applier.consistent_index >= lead.applier.consistent_index,
                             10, "the victim to apply or fail")
            if victim.failed.is_set():
                return  # fatal means exit: the supervisor restarts it, replay re-applies
            # Still serving: then it must hold what every other member holds.
            got = await get(victim, b"victim-key")
            assert got == b"v", (f"{victim_name} skipped a committed put because of its own db error "
                                 f"and keeps serving (applied {victim.applier.consistent_index}, "
                                 f"leader {lead.applier.consistent_index}): diverged")
        finally:
            await c.stop_all()
    run(main())
