"""Requests grpc cannot decode get a status, not a Python exception's text.

grpc's Python server turns a request deserializer that raises into
``UNKNOWN: Unexpected <class 'google.protobuf.message.DecodeError'>: ...``,
leaking the implementation. That happens to valid etcd requests too: the
protobuf runtime refuses messages nested more than 100 levels deep (a Txn
nested ~50 deep), which etcd's Go decoder would parse.

``guarded(server)`` is a stand-in for the grpc server that the generated
``add_*Servicer_to_server`` functions register with: every method's
deserializer is wrapped so that a failure yields an ``Undecodable`` marker,
and every behaviour checks for it first and answers what grpc-go (etcd)
answers for a request it cannot unmarshal: ``INTERNAL: grpc: error
unmarshalling request: <reason>``. For client-streaming methods (Watch,
LeaseKeepAlive) the check sits in the request iterator: the stream ends
with that status at the undecodable message.
"""
from __future__ import annotations

import inspect
import logging

import grpc

log = logging.getLogger("engine.api")

_PREFIX = "grpc: error unmarshalling request: "

# Unary handlers may return an already serialized response (bytes): KV.Range
# builds a big answer on a worker thread, so grpc's serialization does not
# run on the member's loop. engine/api/kv.py checks this flag.
RAW_RESPONSES = True


class Undecodable:
    """What a guarded deserializer returns for bytes it cannot parse."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class UndecodableRequest(Exception):
    """Raised inside a stream handler when the client sent an undecodable message."""


def _safe(deserializer):
    def parse(raw: bytes):
        try:
            return deserializer(raw)
        except Exception as e:  # DecodeError, RecursionError, ...
            return Undecodable(str(e) or type(e).__name__)
    return parse


async def _refuse(context, bad: Undecodable) -> None:
    log.warning("refused an undecodable request: %s", bad.reason)
    await context.abort(grpc.StatusCode.INTERNAL, _PREFIX + bad.reason)


def _checked_iterator(iterator, context):
    async def checked():
        async for req in iterator:
            if isinstance(req, Undecodable):
                log.warning("refused an undecodable stream message: %s", req.reason)
                context.set_code(grpc.StatusCode.INTERNAL)
                context.set_details(_PREFIX + req.reason)
                raise UndecodableRequest(req.reason)
            yield req
    return checked()


def _wrap_unary_request(behavior):
    if inspect.isasyncgenfunction(behavior):
        async def gen(request, context):
            if isinstance(request, Undecodable):
                await _refuse(context, request)
            async for item in behavior(request, context):
                yield item
        return gen

    async def call(request, context):
        if isinstance(request, Undecodable):
            await _refuse(context, request)
        return await behavior(request, context)
    return call


def _wrap_stream_request(behavior):
    if inspect.isasyncgenfunction(behavior):
        async def gen(request_iterator, context):
            async for item in behavior(_checked_iterator(request_iterator, context), context):
                yield item
        return gen

    async def call(request_iterator, context):
        try:
            return await behavior(_checked_iterator(request_iterator, context), context)
        except UndecodableRequest:
            return None
    return call


def _passing_bytes(serializer):
    def serialize(message):
        return message if type(message) is bytes else serializer(message)
    return serialize


def guard_handler(h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    wrap = _wrap_stream_request if h.request_streaming else _wrap_unary_request
    behaviors = {name: wrap(getattr(h, name)) for name in
                 ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
                 if getattr(h, name) is not None}
    extra = {}
    if not h.response_streaming:
        extra["response_serializer"] = _passing_bytes(h.response_serializer)
    return h._replace(request_deserializer=_safe(h.request_deserializer), **behaviors, **extra)


class guarded:
    """Wraps a grpc.aio.Server for the generated add_*Servicer_to_server."""

    def __init__(self, server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers) -> None:
        # Registered below from the guarded method table instead.
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        safe = {name: guard_handler(h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, safe),))
        self._server.add_registered_method_handlers(service, safe)
