"""Issue 8 item 7, "snapshot install is not durable": a Ready carrying a
snapshot must be fully synced (etcd #10219), or a power cut right after the
install leaves the WAL's snapshot marker without the hard state whose commit
it moved, and the member refuses to start ("commit out of range").

In-process members with real peer gRPC and real data dirs. The power cut is
simulated faithfully: every fdatasync of the WAL is recorded (file, size),
and the crash image of the member's data dir, taken right after the Ready
that carried the snapshot, keeps of each WAL file only what was synced.
"""
from __future__ import annotations

import os
import shutil

from engine.cli.flags import parse_args
from engine.proto import rpc_pb2
from engine.raft.rawnode import RawNode
from engine.server.node import Node
from engine.wal import layout
from engine.wal import wal as wal_mod
from tests.server.inproc import InProcCluster, eventually, put, run


class SyncTracker:
    """What a power cut would keep of each WAL file: its size at the last fsync."""

    def __init__(self) -> None:
        self.synced: dict[str, int] = {}

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)
        path = os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
        self.synced[path] = os.fstat(fd).st_size

    def write_file_atomic(self, orig):
        def wrapped(path, data, **kw):
            out = orig(path, data, **kw)
            self.synced[os.path.realpath(path)] = os.path.getsize(path)
            return out
        return wrapped

    def crash_image(self, data_dir: str, image: str) -> None:
        shutil.copytree(data_dir, image)
        wal_dir = layout.wal_dir(data_dir)
        for name in os.listdir(wal_dir):
            src = os.path.realpath(os.path.join(wal_dir, name))
            dst = os.path.join(layout.wal_dir(image), name)
            if src in self.synced:
                with open(dst, "r+b") as f:
                    f.truncate(self.synced[src])
            elif name.endswith(".wal"):
                os.remove(dst)    # never synced: a power cut loses it


def test_member_starts_after_a_power_cut_right_after_a_snapshot_install(tmp_path, monkeypatch):
    tracker = SyncTracker()
    monkeypatch.setattr(wal_mod, "fdatasync", tracker.fdatasync)
    monkeypatch.setattr(wal_mod, "write_file_atomic", tracker.write_file_atomic(wal_mod.write_file_atomic))
    images: list[tuple[str, int]] = []     # (crash image dir, snapshot index)
    victim = {"id": None}
    orig_advance = RawNode.advance

    def advance(self, rd):
        if rd.snapshot is not None and self.raft.id == victim["id"] and not images:
            image = str(tmp_path / "crash-image")
            tracker.crash_image(str(tmp_path / "n3"), image)
            images.append((image, rd.snapshot.metadata.index))
        return orig_advance(self, rd)
    monkeypatch.setattr(RawNode, "advance", advance)

    c = InProcCluster(str(tmp_path), 3, extra=("--snapshot-count", "20", "--experimental-snapshot-catchup-entries", "20"))

    async def main():
        await c.start_all()
        try:
            lead = await c.leader()
            victim["id"] = c.nodes["n3"].member_id
            if lead is c.nodes["n3"]:
                other = next(n for n in c.nodes.values() if n is not lead)
                await lead.transfer_leadership(other.member_id, 5.0)
                lead = await c.leader()
            await c.stop("n3")
            for i in range(120):
                await put(lead, b"k%03d" % i, b"v")
            assert lead.raftlog.storage.first_index() > 30, "the leader did not compact its log"
            await c.start("n3")
            await eventually(lambda: bool(images), 20, "n3 to install a snapshot from the leader")
        finally:
            await c.stop_all()

        # The power cut: restart n3 from what its disk had synced right after
        # the install.
        image, snap_index = images[0]
        args = c.args("n3")
        args[args.index("--data-dir") + 1] = image
        node = Node(parse_args(args))
        await node.start()      # 407b693: AssertionError "state.commit ... is out of range"
        try:
            assert node.rn.raft.log.committed >= snap_index
            assert node.applier.kv.range(rpc_pb2.RangeRequest(key=b"k000")).count == 1
        finally:
            await node.stop()
    run(main())
