"""A follower prepares only the newest of the peer snapshots queued for its
one preparing thread (found by the 200-cycle crash soak: preparing every
queued snapshot in turn, ~1 s each while the leader sent a new one every
0.1-0.5 s, installed older and older snapshots and the member never caught
up). Here: the preparing thread is held busy, two checked-to-be snapshots
arrive (older, then newer); when it is free, only the newer is prepared and
installed, and the older one's spooled file is gone too."""
from __future__ import annotations

import os
import threading

from engine.transport import snapfile
from tests.server.inproc import InProcCluster, eventually, put, run

from .test_review_snapshot_batch import _snapshot_msg


def test_a_superseded_snapshot_is_not_prepared(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 3)
        await c.start_all()
        try:
            lead = await c.leader()
            f = next(x for x in c.nodes.values() if x is not lead)
            others = {x.member_id for x in c.nodes.values() if x is not f}
            f.faults.cut(others)
            for x in c.nodes.values():
                if x is not f:
                    x.faults.cut({f.member_id})
            await put(lead, b"a", b"1")
            m1 = _snapshot_msg(lead, f, str(tmp_path / "snap1"))
            await put(lead, b"b", b"2")
            m2 = _snapshot_msg(lead, f, str(tmp_path / "snap2"))
            assert m1.snapshot.metadata.index < m2.snapshot.metadata.index

            prepared: list[str] = []
            real = f.applier.prepare_restore

            def counting(path):
                prepared.append(path)
                return real(path)
            f.applier.prepare_restore = counting
            gate = threading.Event()
            busy = f._snap_io.submit(gate.wait, 10)   # the preparing thread is busy
            f._on_messages([m1])
            f._on_messages([m2])
            gate.set()
            busy.result(5)
            await eventually(lambda: f.applier.consistent_index >= m2.snapshot.metadata.index, 10,
                             "the follower to install the newer snapshot")
            assert prepared == [snapfile.ref_path(m2.snapshot.data)], prepared
            assert not os.path.exists(snapfile.ref_path(m1.snapshot.data))
            assert not f.failed.is_set(), f._fatal
        finally:
            await c.stop_all()
    run(main())
