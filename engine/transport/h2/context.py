"""The servicer context handlers get: grpc.aio.ServicerContext's methods, same
semantics, on top of one HTTP/2 stream (engine/transport/h2/call.Stream)."""
from __future__ import annotations

import asyncio
import logging

import grpc
from grpc.aio import AbortError, EOF, UsageError

from .status import CODE_OF, RESOURCE_EXHAUSTED, UNKNOWN

log = logging.getLogger(__name__)


class ServicerContext:
    __slots__ = ("_st", "_conn", "_code", "_details", "_trailing", "_callbacks", "_deser", "_ser")

    def __init__(self, st, conn) -> None:
        self._st = st
        self._conn = conn
        self._code = None          # grpc.StatusCode set by set_code/abort, or None
        self._details = ""
        self._trailing = ()
        self._callbacks = None
        self._deser = None         # the method's request deserializer (set when the handler is known)
        self._ser = None

    # -- what the call carries ------------------------------------------------------
    def invocation_metadata(self):
        return self._st.meta

    def peer(self) -> str:
        return self._conn.peer

    def auth_context(self) -> dict:
        return self._conn.auth_context()

    def peer_identities(self):
        auth = self._conn.auth_context()
        return auth.get("x509_subject_alternative_name") or auth.get("x509_common_name")

    def peer_identity_key(self):
        auth = self._conn.auth_context()
        for key in ("x509_subject_alternative_name", "x509_common_name"):
            if auth.get(key):
                return key
        return None

    def time_remaining(self) -> float | None:
        deadline = self._st.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - self._conn.loop.time())

    # -- status -----------------------------------------------------------------------
    def set_code(self, code) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self):
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, metadata) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self):
        return self._trailing

    def set_compression(self, compression) -> None:
        pass   # responses go out uncompressed; grpc allows that

    def disable_next_message_compression(self) -> None:
        pass

    async def abort(self, code, details: str = "", trailing_metadata=()):
        """As grpc.aio: the status goes out now, then AbortError unwinds the handler."""
        if self._st.aborted:
            raise UsageError("Abort was already called!")
        self._st.aborted = True
        if code == grpc.StatusCode.OK:
            log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code, details = grpc.StatusCode.UNKNOWN, ""
        self._code, self._details = code, details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        self._conn.finish(self._st, CODE_OF.get(code, UNKNOWN), details, self._trailing)
        raise AbortError()

    # -- streams ----------------------------------------------------------------------
    async def send_initial_metadata(self, metadata) -> None:
        if self._st.headers_sent:
            raise UsageError("Send initial metadata failed!")
        self._conn.send_headers(self._st, metadata)

    async def write(self, message) -> None:
        ser = self._ser
        payload = ser(message) if ser is not None else message
        limit = self._conn.server.max_send
        if len(payload) > limit:
            self._st.aborted = True
            self._conn.finish(self._st, RESOURCE_EXHAUSTED,
                              f"SERVER: Sent message larger than max ({len(payload)} vs. {limit})")
            raise AbortError()
        conn = self._conn
        waiter = conn.send_message(self._st, payload)
        if waiter is not None:
            await waiter
        elif conn.owes_yield(len(payload)):
            # The windows took it all: nothing made us wait. A handler
            # streaming a large answer (Snapshot) would otherwise hold the
            # loop for all of it (grpc.aio suspends on every write).
            await asyncio.sleep(0)

    async def read(self):
        """The next request message, or grpc.aio.EOF after the client's half-close."""
        st = self._st
        while True:
            if st.msgs:
                raw = self._conn.take_message(st)
                deser = self._deser
                return deser(raw) if deser is not None else raw
            if st.remote_closed or st.closed:
                return EOF
            await self._conn.wait_readable(st)

    # -- lifetime ----------------------------------------------------------------------
    def cancelled(self) -> bool:
        return self._st.cancelled

    def done(self) -> bool:
        return self._st.closed

    def add_done_callback(self, callback) -> None:
        if self._st.closed:
            callback(self)
            return
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def _run_callbacks(self) -> None:
        cbs, self._callbacks = self._callbacks, None
        for cb in cbs or ():
            try:
                cb(self)
            except Exception:
                log.exception("servicer context done callback failed")


class RequestIterator:
    """The request_iterator a stream_unary / stream_stream handler gets."""
    __slots__ = ("_ctx",)

    def __init__(self, ctx: ServicerContext) -> None:
        self._ctx = ctx

    def __aiter__(self):
        return self

    async def __anext__(self):
        msg = await self._ctx.read()
        if msg is EOF:
            raise StopAsyncIteration
        return msg
