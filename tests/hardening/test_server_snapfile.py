"""Peer snapshots as files (contract 2, server side; issue 8 "the snapshot
streamed from a file", "a snapshot arriving from a peer ... verified, then
installed"), on in-process members with real peer gRPC and data dirs:

* the leader writes the store to a file off the loop and hands the
  transport a file reference (never the whole db in RAM as bytes); the
  receiver checks the spooled file off the loop before raft sees it and
  installs the checked copy; no snapshot file is left behind on either side;
* a snapshot that is not a store of ours is logged and refused: raft never
  sees it, nothing changes, the file is deleted.
"""
from __future__ import annotations

import logging
import os
import sqlite3

from engine.mvcc.apply import Applier
from engine.proto import raft_pb2 as pb
from engine.transport import snapfile
from tests.server.inproc import InProcCluster, eventually, get, put, run


def _leftovers(node) -> list[str]:
    return sorted(os.listdir(node._snap_dir))


def test_lagging_member_catches_up_from_a_snapshot_file(tmp_path, monkeypatch):
    def no_bytes(self, *a, **kw):
        raise AssertionError("a peer snapshot went through bytes in RAM")
    monkeypatch.setattr(Applier, "snapshot_bytes", no_bytes)
    monkeypatch.setattr(Applier, "restore", no_bytes)
    c = InProcCluster(str(tmp_path), 3, extra=("--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "20"))

    async def main():
        await c.start_all()
        try:
            lead = await c.leader()
            lagging = next(n for n, node in c.nodes.items() if node is not lead)
            await c.stop(lagging)
            for i in range(150):
                await put(lead, b"k%03d" % i, b"v%d" % i)
            assert lead.raftlog.storage.first_index() > 30
            node = await c.start(lagging)
            await eventually(lambda: node.applier.consistent_index >= lead.applier.consistent_index - 1, 20,
                             "the lagging member to catch up")
            assert await get(node, b"k000") == b"v0"
            assert await get(node, b"k149") == b"v149"
            assert any(e.kind == "snapshot" and "installed snapshot" in e.text for e in node.events)
            assert any(e.kind == "snapshot" and "sending snapshot" in e.text for e in lead.events)
            await eventually(lambda: not _leftovers(lead) and not _leftovers(node), 10,
                             "the snapshot files to be deleted")
            assert not node._prepared
        finally:
            await c.stop_all()
    run(main())


def test_invalid_snapshot_from_a_peer_is_refused(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="engine.server")
    c = InProcCluster(str(tmp_path), 3)

    async def main():
        await c.start_all()
        try:
            lead = await c.leader()
            follower = next(n for n in c.nodes.values() if n is not lead)
            await put(lead, b"k", b"v")
            await get(follower, b"k")
            applied = follower.applier.consistent_index
            # A SQLite file with a trigger: not a store of ours.
            bad = os.path.join(follower._snap_dir, "peer-snap-evil.part")
            db = sqlite3.connect(bad)
            db.executescript("CREATE TABLE meta(k TEXT, v INTEGER); CREATE TABLE t(x);"
                             "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM meta; END;")
            db.close()
            m = pb.Message(type=pb.MsgSnap, to=follower.member_id, from_=lead.member_id, term=lead.term)
            m.snapshot.data = snapfile.file_ref(bad)
            m.snapshot.metadata.index = applied + 1000
            m.snapshot.metadata.term = lead.term
            m.snapshot.metadata.conf_state.voters.extend(lead.rn.raft.voters)
            follower._on_messages([m])
            await eventually(lambda: not os.path.exists(bad), 10, "the refused file to be deleted")
            await eventually(lambda: any("refused, not installed" in r.getMessage() for r in caplog.records),
                             5, "the refusal to be logged")
            assert follower._fatal is None
            assert follower.rn.raft.log.committed < applied + 1000
            assert not follower._prepared
            await put(lead, b"k2", b"v2")
            assert await get(follower, b"k2") == b"v2"
            assert follower.applier.consistent_index < applied + 1000
        finally:
            await c.stop_all()
    run(main())
