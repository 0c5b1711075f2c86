"""etcd's KV service: validate -> read locally or propose -> header."""
from __future__ import annotations

import asyncio

from engine.auth.errors import AuthOldRevision
from engine.auth.tokens import AuthInfo
from engine.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from engine.server.kvserver import KVServer

from . import decode, validate
from .auth import auth_info
from .errors import abort
from .gate import check, request_timeout
from .stats import Counters
from .submit import submit

IR = internal_pb2.InternalRequest
# A txn bigger than this is checked on a worker thread (a small one costs
# less than the thread hop).
OFFLOOP_CHECK_BYTES = 64 * 1024


def _raw_responses() -> bool:
    """May a unary handler answer with bytes already serialized? (the
    server's registration, decode.guarded, passes bytes through its
    response serializer)."""
    return decode.RAW_RESPONSES


def _finish_range(resp: rpc_pb2.RangeResponse, job) -> bytes | None:
    """On a worker: fetch the range's values; for a raw job, the whole
    answer's bytes (the response with its header, then the values)."""
    wire = job()
    return None if wire is None else resp.SerializeToString() + wire


def check_auth_revision(store, info: AuthInfo | None) -> None:
    """Raise AuthOldRevision if the auth store changed since `info` was
    checked against it (etcd: `ai.Revision != 0 && ai.Revision !=
    authStore.Revision()`)."""
    if store is not None and info is not None and info.revision != 0 and info.revision != store.revision:
        raise AuthOldRevision()


class KVServicer(rpc_pb2_grpc.KVServicer):
    def __init__(self, server: KVServer, counters: Counters) -> None:
        self.server = server
        self.counters = counters

    async def Range(self, request: rpc_pb2.RangeRequest, context):
        server = self.server
        try:
            check(server, context, learner_ok=request.serializable)
            validate.check_range(request)
            self.counters.bump("range")
            if not request.serializable:
                # ReadIndex: after this, the local store has everything
                # committed before the request came in.
                await server.read_barrier(request_timeout(server, context))
            store = server.auth_store
            info = None
            if store is not None and store.enabled:  # etcd's doSerialize
                info = await auth_info(server, context)
                store.is_range_permitted(info or AuthInfo("", 0), request.key, request.range_end)
            # The index lookup here; a big fetch of values on a worker,
            # from a reader pinned at this moment.
            raw = _raw_responses()
            steps = server.range_steps(request, raw=raw)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    resp, job = done.value
                    break
                await asyncio.sleep(0)  # a big index walk, a slice per loop turn
            server.fill_header(resp.header)
            wire = None
            if job is not None:
                wire = await asyncio.to_thread(_finish_range, resp, job)
            # etcd's doSerialize, after the read: had the auth store changed
            # while it ran (a revoked permission, auth disabled), the answer
            # is not given ("revision of auth store is old"; clientv3
            # authenticates again and retries).
            check_auth_revision(store, info)
            if wire is not None:
                # Already on the wire: the values were never parsed, and
                # neither grpc nor the concatenation copies 50 MiB on the loop.
                return wire
        except Exception as e:
            await abort(context, e)
        return resp

    async def Put(self, request: rpc_pb2.PutRequest, context):
        try:
            check(self.server, context)
            validate.check_put(request)
            self.counters.bump("put")
            resp = await submit(self.server, context, IR(put=request), admit=True)
        except Exception as e:
            await abort(context, e)
        self.server.fill_header(resp.header)
        return resp

    async def DeleteRange(self, request: rpc_pb2.DeleteRangeRequest, context):
        try:
            check(self.server, context)
            validate.check_delete(request)
            self.counters.bump("delete")
            resp = await submit(self.server, context, IR(delete_range=request))
        except Exception as e:
            await abort(context, e)
        self.server.fill_header(resp.header)
        return resp

    async def Txn(self, request: rpc_pb2.TxnRequest, context):
        try:
            check(self.server, context)
            if request.ByteSize() > OFFLOOP_CHECK_BYTES:
                # Pure work proportional to the request (~0.1 s for the
                # largest legal nested txn): a worker thread, not the loop.
                await asyncio.to_thread(validate.check_txn, request, self.server.config.max_txn_ops)
            else:
                validate.check_txn(request, self.server.config.max_txn_ops)
            self.counters.bump("txn")
            # Read-only txns go through the log too (etcd answers them
            # locally after a ReadIndex): same answer, one more log entry.
            resp = await submit(self.server, context, IR(txn=request), admit=True)
        except Exception as e:
            await abort(context, e)
        self.server.fill_header(resp.header)
        return resp

    async def Compact(self, request: rpc_pb2.CompactionRequest, context):
        server = self.server
        try:
            check(server, context)
            self.counters.bump("compact")
            resp = await submit(server, context, IR(compaction=request))
            if request.physical:
                await finish_compaction(server, request_timeout(server, context))
        except Exception as e:
            await abort(context, e)
        # etcd answers with the store's revision after the compaction.
        resp.header.revision = server.current_revision
        server.fill_header(resp.header)
        return resp


async def finish_compaction(server: KVServer, timeout: float) -> None:
    """Wait until the physical part of the compaction is done here.

    The store deletes compacted rows a slice per apply batch; to answer a
    `physical` compaction promptly, run slices now, yielding to the loop
    between them so no request waits behind the whole deletion.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while server.compaction_pending:
        if loop.time() > deadline:
            raise asyncio.TimeoutError()
        async with server.between_batches():
            server.compact_step()
        await asyncio.sleep(0)
