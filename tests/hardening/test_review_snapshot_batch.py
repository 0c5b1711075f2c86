"""Review of 6c8a8bc (peer snapshots as files): Node._feed_core calls
_drop_unused_snapshots() after EACH stepped MsgSnap, and that deletes every
prepared (checked) snapshot raft is not taking right now -- including one
whose MsgSnap is later in the same batch and not stepped yet. When raft
then takes that later, newer snapshot, _install_snapshot finds no prepared
file, falls back to restore_file() on the spooled file, which
_check_incoming_snapshot already deleted: FileNotFoundError in the raft
loop, and the member exits (fatal).

Two checked snapshots land in one batch when both checks finish while the
loop is busy (a slow fsync): e.g. the leader re-sends a snapshot (probe
after MsgSnapStatus, next index still compacted) while the first one is
still being checked, and the leader has applied more in between.
"""
from __future__ import annotations


from engine.proto import raft_pb2 as pb
from engine.transport import snapfile
from tests.server.inproc import InProcCluster, eventually, put, run


def _snapshot_msg(lead, follower, path: str) -> pb.Message:
    reader = lead.applier.pin()
    try:
        index = reader.consistent_index
        reader.backup_to(path)
    finally:
        reader.release()
    m = pb.Message(type=pb.MsgSnap, to=follower.member_id, term=lead.term)
    m.from_ = lead.member_id
    m.snapshot.data = snapfile.file_ref(path)
    m.snapshot.metadata.index = index
    m.snapshot.metadata.term = lead.rn.raft.log.term(index)
    m.snapshot.metadata.conf_state.CopyFrom(lead.rn.raft.conf_state())
    return m


def test_two_checked_snapshots_in_one_batch(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            f = next(x for x in c.nodes.values() if x is not lead)
            others = {x.member_id for x in c.nodes.values() if x is not f}
            f.faults.cut(others)                    # f falls behind
            for x in c.nodes.values():
                if x is not f:
                    x.faults.cut({f.member_id})
            await put(lead, b"a", b"1")
            m1 = _snapshot_msg(lead, f, str(tmp_path / "snap1"))
            await put(lead, b"b", b"2")
            m2 = _snapshot_msg(lead, f, str(tmp_path / "snap2"))
            assert f.rn.raft.log.committed < m1.snapshot.metadata.index < m2.snapshot.metadata.index
            # What _check_incoming_snapshot does for each, both finishing while
            # the loop is busy: prepared, spooled file discarded, queued.
            for m in (m1, m2):
                fresh = f.applier.prepare_restore(snapfile.ref_path(m.snapshot.data))
                snapfile.discard(m.snapshot.data)
                f._prepared[bytes(m.snapshot.data)] = fresh
            f._incoming.extend([m1, m2])
            f._wake.set()
            await eventually(lambda: f.failed.is_set()
                             or f.applier.consistent_index >= m2.snapshot.metadata.index, 10,
                             "the follower to install the newer snapshot (or fail)")
            assert not f.failed.is_set(), f"the follower failed: {f._fatal!r}"
        finally:
            await c.stop_all()
    run(main())
