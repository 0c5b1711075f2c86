"""Peer snapshots as files (TEAM contract 2, issue 8 items 7/8).

Sender: a MsgSnap whose data is a file reference is streamed from disk in
chunks, followed by its sha256, and the file is deleted afterwards whatever
the outcome. Receiver: chunks are spooled to a temporary file in
snapshot_dir under a size cap, the checksum is verified, the file fsynced,
and the core gets snapshot.data = file_ref(path). Over-cap, lying,
cut-short and bad-checksum streams are refused, leave no file behind, and
the sender reports the snapshot as failed.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import random

import grpc
import grpc.aio

from engine.proto import peer_pb2, peer_pb2_grpc
from engine.proto import raft_pb2 as raftpb
from engine.transport import PeerTransport, snapfile
from engine.transport.transport import SNAPSHOT_CHUNK_BYTES
from tests.support.ports import free_port
from tests.transport.helpers import CLUSTER, HOST, Member, close_all, msg, run, wait_until


def snap_msg(data: bytes, to: int = 2, frm: int = 1, index: int = 42) -> raftpb.Message:
    snap = raftpb.Snapshot(data=data, metadata=raftpb.SnapshotMetadata(
        index=index, term=3, conf_state=raftpb.ConfState(voters=[1, 2])))
    return msg(to, frm, 0, raftpb.MsgSnap, term=3, snapshot=snap)


async def pair(tmp_path, max_bytes: int | None = None, receiver_dir: bool = True):
    """a (1) sends to b (2); b spools into tmp_path/b-snap."""
    a = await Member(1).start()
    b = Member(2)
    kw = {}
    if receiver_dir:
        d = tmp_path / "b-snap"
        d.mkdir(exist_ok=True)
        kw["snapshot_dir"] = str(d)
    if max_bytes is not None:
        kw["max_snapshot_bytes"] = max_bytes
    b.transport = PeerTransport(2, CLUSTER, b.batches.append, b.unreachable.append,
                                lambda p, ok: b.snap_status.append((p, ok)), **kw)
    await b.start()
    a.transport.add_peer(2, [b.url])
    b.transport.add_peer(1, [a.url])
    return a, b


def spool_files(tmp_path) -> list[str]:
    d = tmp_path / "b-snap"
    return sorted(os.listdir(d)) if d.exists() else []


def test_file_ref_roundtrip(tmp_path) -> None:
    p = str(tmp_path / "x.snap")
    ref = snapfile.file_ref(p)
    assert snapfile.ref_path(ref) == p
    assert snapfile.ref_path(b"SQLite format 3\x00" + b"x" * 100) is None
    assert snapfile.ref_path(b"") is None
    open(p, "wb").close()
    snapfile.discard(ref)
    assert not os.path.exists(p)
    snapfile.discard(ref)            # already gone: fine
    snapfile.discard(b"plain bytes")  # not a reference: nothing happens


def test_file_snapshot_is_streamed_verified_and_handed_over_as_a_file(tmp_path) -> None:
    data = random.Random(3).randbytes(3 * SNAPSHOT_CHUNK_BYTES + 777)
    src = tmp_path / "outgoing.snap"
    src.write_bytes(data)

    async def main():
        a, b = await pair(tmp_path)
        try:
            a.transport.send([snap_msg(snapfile.file_ref(str(src)))])
            await wait_until(lambda: a.snap_status, what="snapshot status")
            assert a.snap_status == [(2, True)]
            await wait_until(lambda: b.received, what="delivery")
            got = b.received[0]
            path = snapfile.ref_path(got.snapshot.data)
            assert path is not None and os.path.dirname(path) == str(tmp_path / "b-snap")
            with open(path, "rb") as f:
                assert f.read() == data
            assert got.snapshot.metadata.index == 42 and got.from_ == 1
            assert not src.exists(), "the sender deletes its file after sending"
            assert os.stat(path).st_mode & 0o077 == 0, "spooled file is private"
        finally:
            await close_all([a, b])
    run(main())


def test_bytes_snapshot_still_works_and_arrives_as_bytes_without_a_dir(tmp_path) -> None:
    data = random.Random(4).randbytes(SNAPSHOT_CHUNK_BYTES + 5)

    async def main():
        a, b = await pair(tmp_path, receiver_dir=False)
        try:
            a.transport.send([snap_msg(data)])
            await wait_until(lambda: a.snap_status == [(2, True)] and b.received,
                             what="snapshot sent and delivered")
            assert b.received[0].snapshot.data == data
        finally:
            await close_all([a, b])
    run(main())


def test_file_is_deleted_when_the_send_fails(tmp_path) -> None:
    src = tmp_path / "outgoing.snap"
    src.write_bytes(b"x" * 1000)

    async def main():
        a = await Member(1).start()
        try:
            a.transport.add_peer(2, [f"http://{HOST}:{free_port()}"])  # nobody listens
            a.transport.send([snap_msg(snapfile.file_ref(str(src)))])
            await wait_until(lambda: a.snap_status, what="snapshot status")
            assert a.snap_status == [(2, False)]
            assert not src.exists()
            # Lost before it was even sent (unknown peer): deleted as well.
            src.write_bytes(b"y")
            a.transport.send([snap_msg(snapfile.file_ref(str(src)), to=5)])
            await wait_until(lambda: (5, False) in a.snap_status, what="lost snapshot reported")
            assert not src.exists()
        finally:
            await a.close()
    run(main())


def test_over_the_cap_is_refused_and_reported_failed(tmp_path) -> None:
    async def main():
        a, b = await pair(tmp_path, max_bytes=100_000)
        try:
            a.transport.send([snap_msg(b"z" * 100_001)])
            await wait_until(lambda: a.snap_status, what="snapshot status")
            assert a.snap_status == [(2, False)]
            assert b.received == []
            assert spool_files(tmp_path) == []
            a.transport.send([snap_msg(b"z" * 100_000, index=43)])   # at the cap: fine
            await wait_until(lambda: len(a.snap_status) == 2, what="second status")
            assert a.snap_status[1] == (2, True)
        finally:
            await close_all([a, b])
    run(main())


async def raw_snapshot(port: int, chunks: list[peer_pb2.SnapshotChunk]) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as ch:
        call = peer_pb2_grpc.PeerStub(ch).SendSnapshot(timeout=10)
        try:
            for c in chunks:
                await call.write(c)
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass
        try:
            await call
            return grpc.StatusCode.OK
        except grpc.aio.AioRpcError as e:
            return e.code()


def header(size: int, frm: int = 1, to: int = 2, m: raftpb.Message | None = None) -> peer_pb2.SnapshotChunk:
    head = m if m is not None else snap_msg(b"", to=to, frm=frm)
    return peer_pb2.SnapshotChunk(header=peer_pb2.SnapshotHeader(
        from_member=frm, cluster_id=CLUSTER, to_member=to, msg=head, total_size=size))


def data(b: bytes) -> peer_pb2.SnapshotChunk:
    return peer_pb2.SnapshotChunk(data=b)


def test_hostile_snapshot_streams_leave_nothing(tmp_path) -> None:
    payload = b"p" * 5000
    good_sum = hashlib.sha256(payload).digest()
    cases = {
        "bad checksum": ([header(5000), data(payload), data(b"\x00" * 32)], grpc.StatusCode.DATA_LOSS),
        "no checksum": ([header(5000), data(payload)], grpc.StatusCode.DATA_LOSS),
        "cut short": ([header(5000), data(payload[:10])], grpc.StatusCode.DATA_LOSS),
        "more than announced": ([header(10), data(payload), data(good_sum)],
                                grpc.StatusCode.INVALID_ARGUMENT),
        "absurd size": ([header(1 << 40), data(b"x")], grpc.StatusCode.RESOURCE_EXHAUSTED),
        "non-member": ([header(5000, frm=9, m=snap_msg(b"", frm=9)), data(payload), data(good_sum)],
                       grpc.StatusCode.FAILED_PRECONDITION),
        "wrong from inside": ([header(5000, m=snap_msg(b"", frm=3)), data(payload), data(good_sum)],
                              grpc.StatusCode.INVALID_ARGUMENT),
        "no header": ([data(payload)], grpc.StatusCode.INVALID_ARGUMENT),
        "endless empty chunks": ([header(5000)] + [data(b"")] * 100 + [data(payload), data(good_sum)],
                                 grpc.StatusCode.INVALID_ARGUMENT),
        "two headers": ([header(5000), header(5000)], grpc.StatusCode.INVALID_ARGUMENT),
        "header with data": ([header(1, m=snap_msg(b"inline")), data(b"x"),
                              data(hashlib.sha256(b"x").digest())],
                             grpc.StatusCode.INVALID_ARGUMENT),
        "not a MsgSnap": ([header(5000, m=msg(2, 1, 0, raftpb.MsgApp)), data(payload)],
                          grpc.StatusCode.INVALID_ARGUMENT),
    }

    async def main():
        a, b = await pair(tmp_path, max_bytes=1 << 20)
        try:
            for name, (chunks, want) in cases.items():
                got = await raw_snapshot(b.port, chunks)
                assert got == want, name
                assert spool_files(tmp_path) == [], name
            assert b.received == []
            # Well-formed streams go through, also in small chunks.
            assert await raw_snapshot(b.port, [header(5000), data(payload), data(good_sum)]) == \
                grpc.StatusCode.OK
            small = [data(payload[i:i + 1000]) for i in range(0, 5000, 1000)]
            assert await raw_snapshot(b.port, [header(5000), *small, data(good_sum[:5]),
                                               data(good_sum[5:])]) == grpc.StatusCode.OK
            assert len(b.received) == 2
            assert len(spool_files(tmp_path)) == 2
        finally:
            await close_all([a, b])
    run(main())


def test_in_memory_receiver_refuses_a_file_reference(tmp_path) -> None:
    evil = snapfile.file_ref("/etc/passwd")

    async def main():
        a, b = await pair(tmp_path, receiver_dir=False)
        try:
            got = await raw_snapshot(b.port, [header(len(evil)), data(evil),
                                              data(hashlib.sha256(evil).digest())])
            assert got == grpc.StatusCode.INVALID_ARGUMENT
            assert b.received == []
        finally:
            await close_all([a, b])
    run(main())


def test_leftover_spool_files_are_removed_at_start(tmp_path) -> None:
    d = tmp_path / "b-snap"
    d.mkdir()
    (d / "peer-snap-1-42-abc.part").write_bytes(b"half")
    (d / "keep.snap").write_bytes(b"not ours")

    async def main():
        t = PeerTransport(2, CLUSTER, lambda m: None, lambda p: None, lambda p, ok: None,
                          snapshot_dir=str(d))
        await t.close()
    run(main())
    assert sorted(os.listdir(d)) == ["keep.snap"]


def test_slow_snapshot_streams_are_cut_and_slots_are_bounded(tmp_path, monkeypatch) -> None:
    """A peer trickling a snapshot cannot hold a receive slot for ever, and at
    most MAX_SNAPSHOT_RECEIVES streams are received at once."""
    from engine.transport import transport as tr
    monkeypatch.setattr(tr, "SNAPSHOT_TIMEOUT_BASE", 1.0)
    monkeypatch.setattr(tr, "SNAPSHOT_TIMEOUT_PER_MIB", 0.0)

    async def stalled(port: int, first: list[peer_pb2.SnapshotChunk], gate: asyncio.Event):
        async def chunks():
            for c in first:
                yield c
            await gate.wait()
        async with grpc.aio.insecure_channel(f"{HOST}:{port}") as ch:
            try:
                await peer_pb2_grpc.PeerStub(ch).SendSnapshot(chunks(), timeout=10)
                return grpc.StatusCode.OK
            except grpc.aio.AioRpcError as e:
                return e.code()

    async def main():
        a, b = await pair(tmp_path)
        gate = asyncio.Event()
        try:
            # No header at all, then a header and no data: both cut.
            codes = await asyncio.gather(
                stalled(b.port, [], gate),
                stalled(b.port, [header(5000), data(b"x" * 10)], gate))
            assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
            assert spool_files(tmp_path) == []
            # Two held streams fill the slots; a third is refused at once.
            held = [asyncio.ensure_future(stalled(b.port, [header(5000)], gate)) for _ in range(2)]
            await wait_until(lambda: b.transport._snapshot_receives == tr.MAX_SNAPSHOT_RECEIVES,
                             what="slots taken")
            assert await raw_snapshot(b.port, [header(1), data(b"x")]) == \
                grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await asyncio.gather(*held) == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
            assert b.transport._snapshot_receives == 0
            assert b.received == [] and spool_files(tmp_path) == []
        finally:
            gate.set()
            await close_all([a, b])
    run(main())


def test_a_delayed_file_snapshot_is_deleted_on_close(tmp_path) -> None:
    src = tmp_path / "outgoing.snap"
    src.write_bytes(b"x" * 100)

    async def main():
        a, b = await pair(tmp_path)
        a.transport.faults.delay(60_000, peers={2})
        a.transport.send([snap_msg(snapfile.file_ref(str(src)))])
        assert src.exists()
        await close_all([a, b])
    run(main())
    assert not src.exists()
