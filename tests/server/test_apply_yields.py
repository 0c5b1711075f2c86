"""What others see while the apply task is inside a long request (it yields
to the event loop every few ms there, its chunk half done): only states
that exist before or after a request, never one in between. Found by the
review of the apply task (lease attachments and watcher revisions ran
ahead); tests/hardening/test_storage_loop.py has the loop-lag side."""
from __future__ import annotations

import asyncio
import time

from engine.proto import internal_pb2, rpc_pb2
from tests.server.inproc import InProcCluster, run

IR = internal_pb2.InternalRequest
N = 20_000   # puts in one txn: long enough for many yield points


def _big_txn(lease: int = 0) -> rpc_pb2.TxnRequest:
    txn = rpc_pb2.TxnRequest()
    for i in range(N):
        txn.success.add().request_put.CopyFrom(rpc_pb2.PutRequest(key=b"k%06d" % i, value=b"v", lease=lease))
    return txn


def test_mid_request_reads_see_whole_requests_only(tmp_path):
    async def main():
        c = InProcCluster(str(tmp_path), 1)
        await c.start_all()
        try:
            node = await c.leader()
            await node.propose(IR(lease_grant=rpc_pb2.LeaseGrantRequest(ID=77, TTL=60)), 5)
            hub, kv, lessor = node.applier.hub, node.applier.kv, node.applier.lessor
            w = hub.watch(b"a")
            put_rev = kv.current_rev + 1   # the first write of the chunk below
            # One Ready, one chunk: a put of "a", then the big txn.
            put = asyncio.ensure_future(node.propose(IR(put=rpc_pb2.PutRequest(key=b"a", value=b"1")), 10))
            big = asyncio.ensure_future(node.propose(IR(txn=_big_txn(lease=77)), 60))
            samples = 0
            while not big.done():
                await asyncio.sleep(0)
                if not (node.apply_lock.locked() and kv.in_batch):
                    continue
                samples += 1
                # The lessor agrees with a Range at current_rev.
                _, _, keys = lessor.time_to_live(77, time.monotonic(), keys=True)
                seen = kv.range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l", count_only=True)).count
                assert len(keys) == seen, (len(keys), seen)
                # A synced watcher (whose revision heads its events' response,
                # and a progress notification) never claims the put's revision
                # before it was given the put's event.
                given = {e.kv.mod_revision for e in w.buffer}
                assert w.revision < put_rev or put_rev in given, (w.revision, put_rev, given)
                progress = hub.progress_all([w])
                assert progress is None or progress < put_rev or put_rev in given
            assert (await put).header.revision == put_rev
            await big
            assert samples > 0, "the apply task never yielded inside the txn"
            assert put_rev in {e.kv.mod_revision for e in w.buffer} and w.revision >= put_rev
            _, _, keys = lessor.time_to_live(77, time.monotonic(), keys=True)
            assert len(keys) == N
        finally:
            await c.stop_all()
    run(main())
