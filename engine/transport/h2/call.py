"""One gRPC call: its stream state, the coroutine that runs interceptors,
handler and status, and the driver that runs it without a Task when it
never suspends.

Why the driver: a Task costs ~10 µs per call (bench/bench_h2_floor.py,
"Task per call"), and most of etcd's unary handlers (serializable Range,
Status, auth checks) finish without ever waiting. Python 3.11 has no eager
task factory, so `drive()` sends the first step itself and only when the
coroutine suspends hands it, with the future it is waiting on, to a Task.
While that first step runs, asyncio.current_task() is not this call's Task
(a handler that needs one, e.g. for asyncio.timeout(), must first await
something that suspends).
"""
from __future__ import annotations

import asyncio
import collections
import collections.abc
import contextvars
import logging
import types
from time import perf_counter

from grpc.aio import AbortError

from .context import RequestIterator, ServicerContext
from .status import CODE_OF, DEADLINE_EXCEEDED, INTERNAL, OK, RESOURCE_EXHAUSTED, UNIMPLEMENTED, UNKNOWN

log = logging.getLogger(__name__)

_CORO = types.CoroutineType
EAGER_BUDGET = 0.005              # seconds of handler steps run inside one data_received


class HandlerCallDetails(collections.namedtuple("HandlerCallDetails", ("method", "invocation_metadata"))):
    """What interceptors and generic handlers get (grpc.HandlerCallDetails)."""


class Stream:
    """One HTTP/2 stream carrying one call. Receive side: `inbuf` holds a
    partial gRPC message, `msgs` complete ones the handler has not read
    (bounded by our stream window: their bytes are credited back only as
    they are read). Send side: `out` holds framed message bytes the client's
    windows do not admit yet; `trailers` the final HEADERS frame to send
    after them."""
    __slots__ = ("sid", "path", "meta", "deadline", "handler", "ctx", "inbuf", "msgs", "queued", "unacked",
                 "rwin", "remote_closed", "reader", "headers_sent", "out", "trailers", "swin", "writer",
                 "task", "timer", "closed", "cancelled", "aborted", "dispatched", "seen_data", "deferred")

    def __init__(self, sid: int, path: str, meta: tuple, deadline, handler, swin: int, rwin: int) -> None:
        self.sid = sid
        self.path = path
        self.meta = meta
        self.deadline = deadline      # loop time, or None
        self.handler = handler        # the registered grpc.RpcMethodHandler, or None (interceptors decide)
        self.ctx = None
        self.inbuf = None             # bytearray: the partial message being received
        self.msgs = collections.deque()
        self.queued = 0               # bytes (with prefixes) of msgs
        self.unacked = 0              # DATA bytes received on this stream not yet credited back
        self.rwin = rwin              # what the client may still send on this stream
        self.remote_closed = False    # END_STREAM received
        self.reader = None            # future a read() waits on
        self.headers_sent = False
        self.out = None               # bytearray of DATA payload waiting for window
        self.trailers = None          # frame bytes to send once `out` is empty
        self.swin = swin              # what we may still send on this stream
        self.writer = None            # future a write() waits on
        self.task = None
        self.timer = None
        self.closed = False
        self.cancelled = False
        self.aborted = False
        self.dispatched = False
        self.seen_data = False        # a DATA frame arrived on this stream
        self.deferred = False         # `trailers` is an early status held back (connection.finish)


class _Resumed(collections.abc.Coroutine):
    """What the Task runs once a call's first step (run outside any Task)
    suspended: its first send() hands the Task the future the coroutine
    waits on; everything else goes to the coroutine. A cancellation that
    arrives before the Task's first step is thrown into the coroutine too
    (an unstarted `async def` wrapper would swallow it: the handler's
    cleanup would never run), and the future it waited on is cancelled, as
    a Task's cancel() does."""
    __slots__ = ("_coro", "_first")

    def __init__(self, coro, first) -> None:
        self._coro = coro
        self._first = first            # None once handed over

    def send(self, value):
        first = self._first
        if first is not None:
            self._first = None
            return first
        return self._coro.send(value)

    def throw(self, typ, val=None, tb=None):
        first = self._first
        if first is not None:
            self._first = None
            if isinstance(first, asyncio.Future):
                first.cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._coro.close()

    def __await__(self):
        return self._coro.__await__()


def drive(conn, st: Stream) -> None:
    """Run the call; a Task only if it suspends. Once this read's handlers
    have run EAGER_BUDGET seconds, the rest start as Tasks: many requests in
    one read must not make one long callback (the member's loop lag;
    grpc.aio runs each call as its own Task). Each call runs in its own
    copy of the contextvars context, as a Task would (nothing set by one
    call may be seen by the next on the connection)."""
    coro = run_call(conn, st)
    context = contextvars.copy_context()
    if perf_counter() > conn.eager_until:
        st.task = conn.loop.create_task(coro, context=context)
    else:
        try:
            waiting_on = context.run(coro.send, None)
        except StopIteration:
            return
        except asyncio.CancelledError:
            return                    # run_call reset the stream already
        st.task = conn.loop.create_task(_Resumed(coro, waiting_on), context=context)
    if st.deadline is not None and st.timer is None and not st.closed:
        st.timer = conn.loop.call_at(st.deadline, conn.deadline_passed, st)


async def run_call(conn, st: Stream) -> None:
    ctx = st.ctx
    server = conn.server
    try:
        handler = st.handler
        if server.intercepted is not None:
            handler = await server.intercepted(HandlerCallDetails(st.path, st.meta))
        if handler is None:
            conn.finish(st, UNIMPLEMENTED, "Method not found!")
            return
        ctx._deser = handler.request_deserializer
        ctx._ser = handler.response_serializer
        if handler.request_streaming:
            request = RequestIterator(ctx)
        elif st.remote_closed and len(st.msgs) == 1:
            # The usual unary request: complete before dispatch (no extra coroutine).
            deser = ctx._deser
            raw = conn.take_message(st)
            request = deser(raw) if deser is not None else raw
        else:
            request = await _unary_request(conn, st, ctx)
            if request is None:
                return
        if handler.response_streaming:
            fn = handler.stream_stream if handler.request_streaming else handler.unary_stream
            result = fn(request, ctx)
            if hasattr(result, "__anext__"):
                try:
                    async for msg in result:
                        await ctx.write(msg)
                finally:
                    # Cancelled while the generator waits at a yield (we were
                    # in write()): close it now, so its cleanup runs now
                    # (GeneratorExit at the yield), not whenever GC finds it.
                    aclose = getattr(result, "aclose", None)
                    if aclose is not None:
                        await aclose()
            elif result is not None and hasattr(result, "__await__"):
                await result
            code = ctx._code
            conn.finish(st, OK if code is None else CODE_OF.get(code, UNKNOWN), ctx._details, ctx._trailing)
            return
        fn = handler.stream_unary if handler.request_streaming else handler.unary_unary
        response = fn(request, ctx)
        if type(response) is _CORO or hasattr(response, "__await__"):
            response = await response
        code = ctx._code
        if code is not None and code.value[0] != OK:
            # As grpc.aio: a non-OK status discards the response.
            conn.finish(st, code.value[0], ctx._details, ctx._trailing)
            return
        ser = handler.response_serializer
        payload = ser(response) if ser is not None else response
        if len(payload) > server.max_send:
            conn.finish(st, RESOURCE_EXHAUSTED,
                        f"SERVER: Sent message larger than max ({len(payload)} vs. {server.max_send})")
            return
        if ctx._details or ctx._trailing or st.headers_sent:
            waiter = conn.send_message(st, payload)
            if waiter is not None:
                await waiter
            conn.finish(st, OK, ctx._details, ctx._trailing)
        else:
            conn.respond_unary(st, payload)
    except AbortError:
        pass                      # abort() sent the status
    except asyncio.CancelledError:
        conn.handler_cancelled(st)
        raise
    except Exception as e:
        if not st.closed:
            log.exception("Unexpected [%s] raised by servicer method [%s]", type(e).__name__, st.path)
        code = ctx._code
        code = UNKNOWN if code is None or code.value[0] == OK else code.value[0]
        conn.finish(st, code, f"Unexpected {type(e)}: {e}", ctx._trailing)


async def _unary_request(conn, st: Stream, ctx: ServicerContext):
    """The one request message of a unary-request call, deserialized; None
    when the call was answered instead."""
    while not st.remote_closed and not st.closed:
        await conn.wait_readable(st)
    if st.closed:
        return None
    if len(st.msgs) != 1:
        conn.finish(st, INTERNAL, "Missing request message" if not st.msgs else "Too many request messages")
        return None
    raw = conn.take_message(st)
    deser = ctx._deser
    return deser(raw) if deser is not None else raw


__all__ = ["Stream", "drive", "run_call", "HandlerCallDetails", "DEADLINE_EXCEEDED"]
