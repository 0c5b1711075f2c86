"""A live etcd Watch on a key or prefix, as an async iterator of event batches.

The stream carries etcd's `hasleader` metadata like etcdctl, so a member that
loses its leader cancels the watch ("etcdserver: no leader") instead of
silently going quiet. The caller reopens on another endpoint if it wants.
"""
from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import grpc

from engine.proto import kv_pb2, rpc_pb2

from . import errors
from .actions import prefix_end
from .codec import decode, encode
from .connection import Stubs
from .model import WatchEvent

REQUIRE_LEADER = (("hasleader", "true"),)
PROGRESS_EVERY = 1.0         # seconds between the stream's progress requests (how far behind it is)
REVISION = "REVISION"        # a marker after each response: its header revision, the stream's progress


async def stream(stubs: Stubs, key: str, prefix: bool = False,
                 start_revision: int = 0) -> AsyncIterator[list[WatchEvent]]:
    """Yield batches of events; the first batch is a CREATED marker.

    Every response ends with a REVISION marker carrying its header revision:
    what the stream is complete up to. A progress request goes out every
    PROGRESS_EVERY seconds; the member answers it only once the watch is
    synced (etcd 3.4's RequestProgress), so a watch catching up shows as
    behind the head and a synced one on a quiet key does not.

    Ends (after yielding a CANCELED marker) when the server cancels or the
    stream fails; the caller's cancellation closes the call."""
    k = encode(key)
    create = rpc_pb2.WatchCreateRequest(key=k, range_end=prefix_end(k) if prefix else b"",
                                        start_revision=start_revision)
    call = stubs.watch.Watch(metadata=REQUIRE_LEADER)
    progress = None
    try:
        await call.write(rpc_pb2.WatchRequest(create_request=create))
        async for resp in call:
            now = time.time()
            if resp.created:
                yield [WatchEvent(now, "CREATED", key, f"watch {resp.watch_id} on {stubs.endpoint}",
                                  resp.header.revision)]
                if progress is None:
                    progress = asyncio.create_task(_ask_progress(call))
            if resp.events:
                yield [_event(now, e) for e in resp.events]
            if resp.compact_revision:
                yield [WatchEvent(now, "COMPACTED", key, f"compacted at {resp.compact_revision}",
                                  resp.compact_revision)]
            if resp.canceled:
                yield [WatchEvent(now, "CANCELED", key, resp.cancel_reason or "canceled by server", 0)]
                return
            if resp.header.revision:
                yield [WatchEvent(now, REVISION, key, "", resp.header.revision)]
        yield [WatchEvent(time.time(), "CANCELED", key, "stream ended", 0)]
    except grpc.aio.AioRpcError as exc:
        yield [WatchEvent(time.time(), "CANCELED", key, errors.describe(exc), 0)]
    finally:
        if progress is not None:
            progress.cancel()
        call.cancel()


async def _ask_progress(call) -> None:
    """A progress request every PROGRESS_EVERY seconds until the stream ends."""
    request = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
    try:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)     # a period, not a wait for something
            await call.write(request)
    except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError):
        return      # the stream ended: its reader says why


def _event(now: float, e) -> WatchEvent:
    kind = "DELETE" if e.type == kv_pb2.Event.DELETE else "PUT"
    return WatchEvent(now, kind, decode(e.kv.key),
                      decode(e.kv.value), e.kv.mod_revision)
