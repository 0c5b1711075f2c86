"""Watch: many watchers on one stream, per-stream ids, cancel, history,
compaction, progress; the real etcdctl watch; no-leader cancellation."""
from __future__ import annotations

import asyncio
import os
import select
import subprocess
import time

import grpc
from engine.proto import rpc_pb2, rpc_pb2_grpc
from tests.support import etcd as support_etcd
from tests.support.require import etcdctl_path

from .conftest import PROGRESS_INTERVAL, ok, run

WCR = rpc_pb2.WatchCreateRequest


def create(key: bytes, **kw) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=WCR(key=key, **kw))


class Stream:
    """One Watch call and a KV stub on the same channel."""

    def __init__(self, endpoint: str, metadata=None) -> None:
        self.ch = grpc.aio.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.ch)
        self.call = rpc_pb2_grpc.WatchStub(self.ch).Watch(metadata=metadata)

    async def send(self, req: rpc_pb2.WatchRequest) -> None:
        await self.call.write(req)

    async def recv(self, timeout: float = 5.0) -> rpc_pb2.WatchResponse:
        resp = await asyncio.wait_for(self.call.read(), timeout)
        assert resp is not grpc.aio.EOF
        return resp

    async def put(self, key: bytes, value: bytes) -> int:
        return (await self.kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)).header.revision

    async def close(self) -> None:
        self.call.cancel()
        await self.ch.close()


def test_many_watchers_on_one_stream(cluster3):
    async def go():
        s = Stream(cluster3.endpoints[1])  # a follower or the leader: both serve watches
        try:
            await s.send(create(b"w/a"))
            await s.send(create(b"w/", range_end=b"w0"))
            await s.send(create(b"w/b", watch_id=7, prev_kv=True))
            await s.send(create(b"w/c", watch_id=7))
            got = [await s.recv() for _ in range(4)]
            assert [(r.watch_id, r.created, r.canceled) for r in got] == \
                [(0, True, False), (1, True, False), (7, True, False), (-1, True, True)]
            assert got[3].cancel_reason == "mvcc: duplicate watch ID provided on the WatchStream"
            assert all(r.header.member_id and r.header.cluster_id and r.header.raft_term for r in got)
            rev_a = await s.put(b"w/a", b"1")
            rev_b = await s.put(b"w/b", b"2")
            await s.put(b"w/b", b"3")
            events: dict[int, list] = {0: [], 1: [], 7: []}
            while sum(map(len, events.values())) < 1 + 3 + 2:
                r = await s.recv()
                events[r.watch_id].extend(r.events)
                assert r.header.revision >= r.events[-1].kv.mod_revision
            assert [e.kv.mod_revision for e in events[0]] == [rev_a]
            assert [e.kv.value for e in events[1]] == [b"1", b"2", b"3"]
            assert [(e.kv.value, e.prev_kv.value) for e in events[7]] == [(b"2", b""), (b"3", b"2")]
            assert events[7][0].kv.mod_revision == rev_b
            await s.send(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=1)))
            r = await s.recv()
            assert (r.watch_id, r.canceled) == (1, True)
            await s.put(b"w/a", b"4")
            r = await s.recv()
            assert r.watch_id == 0 and r.events[0].kv.value == b"4"
            await s.send(create(b"w/d"))
            assert (await s.recv()).watch_id == 2  # etcd counts on; it does not reuse 1
        finally:
            await s.close()
    run(go())


def test_history_compaction_and_progress(cluster1):
    async def go():
        s = Stream(cluster1.endpoints[0])
        try:
            first = await s.put(b"h/k", b"1")
            await s.put(b"h/k", b"2")
            await s.send(create(b"h/k", start_revision=first))
            assert (await s.recv()).created
            r = await s.recv()
            assert [e.kv.value for e in r.events] == [b"1", b"2"]
            await s.send(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
            r = await s.recv()
            assert r.watch_id == -1 and not r.events and r.header.revision >= first + 1
            await s.kv.Compact(rpc_pb2.CompactionRequest(revision=first + 1), timeout=5)
            await s.send(create(b"h/k", start_revision=first))
            created = await s.recv()
            assert created.created and created.watch_id == 1
            r = await s.recv()
            assert (r.watch_id, r.canceled, r.compact_revision) == (1, True, first + 1)
            await s.send(create(b"h/quiet", progress_notify=True))
            wid = (await s.recv()).watch_id
            t0 = time.monotonic()
            r = await s.recv(timeout=5 * PROGRESS_INTERVAL + 2)
            assert r.watch_id == wid and not r.events and r.header.revision
            assert time.monotonic() - t0 < 3 * PROGRESS_INTERVAL + 1
        finally:
            await s.close()
    run(go())


def _watch_proc(endpoint: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([etcdctl_path(), f"--endpoints={endpoint}", "watch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=support_etcd._clean_env({"ETCDCTL_API": "3"}))


def _stop(p: subprocess.Popen) -> tuple[str, str]:
    if p.poll() is None:
        p.terminate()
    return p.communicate(timeout=10)


def _read_until(p: subprocess.Popen, want: str, timeout: float) -> str:
    """Read the child's stdout until it holds `want` (or EOF, or the deadline)."""
    fd = p.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < len(want.encode()) and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out.decode()


def test_etcdctl_watch_prefix_prev_kv_and_rev(cluster3):
    eps = cluster3.endpoints
    rev = int(ok(eps, "put", "ew/a", "1", "-w", "fields").split('"Revision" : ')[1].split()[0])
    ok(eps, "put", "ew/a", "2")
    p = _watch_proc(eps[2], "--prefix", "ew/", "--prev-kv", f"--rev={rev}")
    try:
        ok(eps, "put", "ew/b", "3")
        ok(eps, "del", "ew/a")
        want = "PUT\new/a\n1\nPUT\new/a\n1\new/a\n2\nPUT\new/b\n3\nDELETE\new/a\n2\new/a\n\n"
        out = _read_until(p, want, timeout=10)
    finally:
        _, err = _stop(p)
    assert out == want, err


def test_no_leader_ends_required_leader_watches(cluster_factory):
    c = cluster_factory(3)
    leader = c.wait_leader(10)
    lone = (leader + 1) % 3
    ep = c.endpoints[lone]
    p = _watch_proc(ep, "nl/k")
    time.sleep(0.5)
    ok([c.endpoints[leader]], "put", "nl/k", "v")
    for i in range(3):
        if i != lone:
            c.stop_member(i)
    try:
        out, err = p.communicate(timeout=15)
    finally:
        _stop(p)
    # What real etcd 3.4.23 makes etcdctl print in the same situation.
    assert out == "PUT\nnl/k\nv\n"
    assert err.splitlines()[-2:] == ["watch was canceled (etcdserver: no leader)",
                                     "Error: watch is canceled by the server"]
    r = support_etcd.etcdctl([ep], "watch", "nl/k", timeout=15)
    assert r.stderr.splitlines()[-2:] == ["watch was canceled (etcdserver: no leader)",
                                          "Error: watch is canceled by the server"]
    status = ok([ep], "endpoint", "status", "-w", "json")
    assert '"errors":["etcdserver: no leader"]' in status


def test_fragmented_watch_response(cluster1):
    """One revision bigger than max-request-bytes + 512 KiB reaches a
    `fragment` watcher split over several responses, the last unflagged."""
    async def go():
        s = Stream(cluster1.endpoints[0])
        try:
            keys = [b"frag/%02d" % i for i in range(14)]
            for k in keys:
                await s.put(k, b"a" * 100_000)
            await s.send(create(b"frag/", range_end=b"frag0", prev_kv=True, fragment=True))
            assert (await s.recv()).created
            txn = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(
                request_put=rpc_pb2.PutRequest(key=k, value=b"b" * 100_000)) for k in keys])
            await s.kv.Txn(txn, timeout=10)
            parts = []
            while not parts or parts[-1].fragment:
                parts.append(await s.recv())
            assert len(parts) >= 2 and all(p.fragment for p in parts[:-1])
            events = [e for p in parts for e in p.events]
            assert [e.kv.key for e in events] == keys
            assert all(e.prev_kv.value == b"a" * 100_000 for e in events)
        finally:
            await s.close()
    run(go())
