"""etcd's v3 JSON gateway (grpc-gateway, as etcd 3.4 serves it on the client URL).

    POST /v3/kv/range        {"key":"Zm9v"}             -> RangeResponse as JSON
    POST /v3/kv/put          {"key":"Zm9v","value":"YmFy"}
    ... every unary method etcd 3.4 binds (ROUTES: kv, lease, cluster/member,
    maintenance, auth), and /v3/lease/keepalive with its one request;
    /v3beta/... too, as etcd 3.4 serves both prefixes.

A request is the JSON form of the gRPC request (proto field names or their
lowerCamelCase; bytes in standard base64, int64 as strings or numbers, enums
by name or number; unknown fields ignored; an empty body or `null` is the
empty request). It is answered by the same servicer the gRPC server runs
(engine/api: the same checks, errors and permission checks, the token from
the Authorization header as grpc-gateway forwards it), and the response is
the gRPC response in etcd's JSON: proto field names, int64 as strings,
bytes in base64, enums by name, fields at their default left out, no
spaces. An error is `{"error":msg,"message":msg,"code":grpc code}` with
grpc-gateway's HTTP status for the code (InvalidArgument and OutOfRange
400, NotFound 404, FailedPrecondition 412, ResourceExhausted 429,
Unavailable 503, ...). A streamed answer is one `{"result":...}` line per
message. Anything but POST gets 405; an unknown path under /v3/ gets
grpc-gateway's 404 "Not Found". /v3/watch streams (chunked) until the
client goes away; /v3/maintenance/snapshot streams the snapshot's chunks. Checked side by side with etcd
3.4.23 in tests/http/test_http_gateway.py.

Work proportional to a request's size (decoding a 2 MiB body, encoding a
big Range answer) runs on a worker thread.
"""
from __future__ import annotations

import asyncio
import binascii
import base64
import json
import logging
import re
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor

from engine.api.auth import AuthServicer
from engine.api.cluster import ClusterServicer
from engine.api.forward import LeaderLink
from engine.api.kv import KVServicer
from engine.api.lease import LeaseServicer
from engine.api.maintenance import MaintenanceServicer
from engine.api.stats import Counters
from engine.api.watch import WatchRegistry, WatchServicer
from engine.proto import rpc_pb2
from engine.server.kvserver import KVServer

from .server import REASONS, Request, Response

log = logging.getLogger("engine.http")

# Bodies and answers bigger than this are (de)coded on a worker thread.
OFFLOOP_BYTES = 64 * 1024

# grpc-gateway v1's runtime.HTTPStatusFromCode, as etcd 3.4.23 answers.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.CANCELLED: 408, grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DATA_LOSS: 500,
}

# path after /v3/ (or /v3beta/) -> (service, method): etcd 3.4's google.api.http
# bindings for the unary methods, and LeaseKeepAlive (one request, one answer).
ROUTES = {
    "kv/range": ("KV", "Range"), "kv/put": ("KV", "Put"), "kv/deleterange": ("KV", "DeleteRange"),
    "kv/txn": ("KV", "Txn"), "kv/compaction": ("KV", "Compact"),
    "lease/grant": ("Lease", "LeaseGrant"), "lease/revoke": ("Lease", "LeaseRevoke"),
    "kv/lease/revoke": ("Lease", "LeaseRevoke"), "lease/keepalive": ("Lease", "LeaseKeepAlive"),
    "lease/timetolive": ("Lease", "LeaseTimeToLive"), "kv/lease/timetolive": ("Lease", "LeaseTimeToLive"),
    "lease/leases": ("Lease", "LeaseLeases"), "kv/lease/leases": ("Lease", "LeaseLeases"),
    "cluster/member/add": ("Cluster", "MemberAdd"), "cluster/member/remove": ("Cluster", "MemberRemove"),
    "cluster/member/update": ("Cluster", "MemberUpdate"), "cluster/member/list": ("Cluster", "MemberList"),
    "cluster/member/promote": ("Cluster", "MemberPromote"),
    "maintenance/alarm": ("Maintenance", "Alarm"), "maintenance/status": ("Maintenance", "Status"),
    "maintenance/defragment": ("Maintenance", "Defragment"), "maintenance/hash": ("Maintenance", "Hash"),
    "maintenance/transfer-leadership": ("Maintenance", "MoveLeader"),
    "auth/enable": ("Auth", "AuthEnable"), "auth/disable": ("Auth", "AuthDisable"),
    "auth/authenticate": ("Auth", "Authenticate"), "auth/user/add": ("Auth", "UserAdd"),
    "auth/user/get": ("Auth", "UserGet"), "auth/user/list": ("Auth", "UserList"),
    "auth/user/delete": ("Auth", "UserDelete"), "auth/user/changepw": ("Auth", "UserChangePassword"),
    "auth/user/grant": ("Auth", "UserGrantRole"), "auth/user/revoke": ("Auth", "UserRevokeRole"),
    "auth/role/add": ("Auth", "RoleAdd"), "auth/role/get": ("Auth", "RoleGet"),
    "auth/role/list": ("Auth", "RoleList"), "auth/role/delete": ("Auth", "RoleDelete"),
    "auth/role/grant": ("Auth", "RoleGrantPermission"), "auth/role/revoke": ("Auth", "RoleRevokePermission"),
    "watch": ("Watch", "Watch"),
    "maintenance/snapshot": ("Maintenance", "Snapshot"),
}
# Answers a watch may have queued for a slow HTTP client before the watch waits.
WATCH_QUEUE = 64
PREFIXES = ("/v3/", "/v3beta/")


class GatewayError(Exception):
    """A request answered with a gRPC status, before or by the servicer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Context:
    """The part of grpc.aio.ServicerContext a unary servicer uses, for a
    request that came over HTTP. abort() raises GatewayError."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], queue: asyncio.Queue | None = None) -> None:
        self._metadata = metadata
        self.queue = queue          # where a streaming method's writes go, if given
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self.written: list = []     # what a streaming method wrote

    async def write(self, message) -> None:
        if self.queue is not None:
            await self.queue.put(message)   # waits while a slow client has WATCH_QUEUE unread
        else:
            self.written.append(message)

    def invocation_metadata(self):
        return self._metadata

    def time_remaining(self):
        return None

    def peer(self) -> str:
        return "http"

    def auth_context(self) -> dict:
        return {}

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        raise GatewayError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self):
        return self._code

    def details(self) -> str:
        return self._details


def go_json(obj) -> bytes:
    """JSON as Go's encoding/json writes it: compact, UTF-8 as is, but <, >, &
    and U+2028/U+2029 escaped (HTML-safe)."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text.encode()


def error_response(code: grpc.StatusCode, message: str) -> Response:
    body = go_json({"error": message, "message": message, "code": code.value[0]})
    return Response(HTTP_STATUS.get(code, 500), body, [("Content-Type", "application/json")])


def _types(service: str, method: str):
    m = rpc_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    return (getattr(rpc_pb2, m.input_type.name), getattr(rpc_pb2, m.output_type.name),
            m.client_streaming)


class Gateway:
    def __init__(self, kvs: KVServer) -> None:
        self.kvs = kvs
        link = LeaderLink(kvs)
        # Servicers of our own, made as engine.api.add_services makes them.
        self.servicers = {"KV": KVServicer(kvs, Counters()), "Lease": LeaseServicer(kvs, link),
                          "Cluster": ClusterServicer(kvs, link), "Maintenance": MaintenanceServicer(kvs),
                          "Auth": AuthServicer(kvs),
                          "Watch": WatchServicer(kvs, Counters(), WatchRegistry())}

    async def handle(self, req: Request) -> Response:
        path = req.path
        route = None
        for prefix in PREFIXES:
            if path.startswith(prefix):
                route = ROUTES.get(path[len(prefix):])
        if route is None:
            return Response.text(404, "Not Found")
        if req.method != "POST":
            return Response.text(405, "Method Not Allowed")
        service, method = route
        req_type, resp_type, streaming = _types(service, method)
        handler = getattr(self.servicers[service], method)
        if service == "Watch":
            return await self._watch(handler, req)
        if method == "Snapshot":
            try:
                request = parse_request(req.body, req_type)
            except GatewayError as e:
                return error_response(e.code, e.message)
            return _streamed(handler, request, _Context(_metadata(req), queue=asyncio.Queue(WATCH_QUEUE)),
                             resp_type, None)
        try:
            if len(req.body) > OFFLOOP_BYTES:
                request = await asyncio.to_thread(parse_request, req.body, req_type)
            else:
                request = parse_request(req.body, req_type)
            ctx = _Context(_metadata(req))
            if streaming:
                return await self._stream(handler, request, ctx, resp_type)
            result = await handler(request, ctx)
            if isinstance(result, (bytes, bytearray)) and len(result) > OFFLOOP_BYTES:
                body = await asyncio.to_thread(encode_response, result, resp_type)
            else:
                body = encode_response(result, resp_type)
        except GatewayError as e:
            return error_response(e.code, e.message)
        return Response(200, body, _OK_HEADERS)

    @staticmethod
    async def _stream(handler, request, ctx: "_Context", resp_type) -> Response:
        """A client-streaming method sent one request: grpc-gateway answers
        each message as {"result": ...} on a line of its own; an error after
        them as {"error": {...}}."""
        async def one():
            yield request
        error = None
        try:
            await handler(one(), ctx)
        except GatewayError as e:
            error = e
        lines = [b'{"result":' + encode_response(m, resp_type) + b"}\n" for m in ctx.written]
        if error is not None:
            if not lines:
                return error_response(error.code, error.message)
            lines.append(_stream_error(error))
        return Response(200, b"".join(lines), _OK_HEADERS)


    @staticmethod
    async def _watch(handler, req: Request) -> Response:
        """/v3/watch: the body's JSON values are the stream's requests; the
        answer streams {"result":...} lines until the client goes away (as
        with etcd, the end of the body does not end the watch)."""
        try:
            requests = parse_requests(req.body, rpc_pb2.WatchRequest)
        except GatewayError as e:
            # etcd's gateway fails the first request's decoding as Unknown (500).
            return error_response(grpc.StatusCode.UNKNOWN, e.message)
        ctx = _Context(_metadata(req), queue=asyncio.Queue(WATCH_QUEUE))
        gone = asyncio.Event()

        async def request_stream():
            for r in requests:
                yield r
            await gone.wait()     # the client's side of the stream stays open

        return _streamed(handler, request_stream(), ctx, rpc_pb2.WatchResponse, gone)


def _streamed(handler, arg, ctx: _Context, resp_type, gone: asyncio.Event | None) -> Response:
    """Run a server-streaming servicer method; its writes go out as
    {"result":...} lines, an error as an {"error":{...}} line; the method is
    cancelled when the client goes away."""
    async def run() -> None:
        try:
            await handler(arg, ctx)
        except GatewayError as e:
            await ctx.queue.put(e)
        except Exception:
            log.exception("gateway stream failed")
        finally:
            await ctx.queue.put(None)

    task = asyncio.get_running_loop().create_task(run())

    async def chunks():
        try:
            while True:
                item = await ctx.queue.get()
                if item is None:
                    return
                if isinstance(item, GatewayError):
                    yield _stream_error(item)
                    return
                yield b'{"result":' + encode_response(item, resp_type) + b"}\n"
        finally:
            if gone is not None:
                gone.set()
            task.cancel()

    return Response(200, b"", list(_OK_HEADERS), stream=chunks())


def _stream_error(e: GatewayError) -> bytes:
    status = HTTP_STATUS.get(e.code, 500)
    error = {"grpc_code": e.code.value[0], "http_code": status, "message": e.message,
             "http_status": REASONS.get(status, "")}
    return go_json({"error": error}) + b"\n"


_OK_HEADERS = [("Content-Type", "application/json"), ("Grpc-Metadata-Content-Type", "application/grpc")]


def _metadata(req: Request) -> tuple[tuple[str, str], ...]:
    """grpc-gateway's incoming metadata: the Authorization header (etcd
    takes its token from it) and the marker of a proxied request."""
    md = [("grpcgateway-accept", req.headers.get("accept", "*/*"))]
    if "authorization" in req.headers:
        md.append(("authorization", req.headers["authorization"]))
    return tuple(md)


# -- JSON <-> protobuf ------------------------------------------------------------------

def encode_response(result: Any, resp_type) -> bytes:
    msg = resp_type.FromString(bytes(result)) if isinstance(result, (bytes, bytearray)) else result
    return go_json(json_format.MessageToDict(msg, preserving_proto_field_name=True))


def parse_requests(body: bytes, req_type) -> list:
    """A stream's requests: the body's JSON values one after another. A value
    that does not decode ends the list there (GatewayError if it is the first)."""
    text = body.decode("utf-8", errors="replace")
    decoder, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            return out
        try:
            _, end = decoder.raw_decode(text, pos)
            out.append(parse_request(text[pos:end].encode(), req_type))
        except RecursionError:
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "exceeded max depth") from None
        except (json.JSONDecodeError, GatewayError) as e:
            if out:
                return out
            if isinstance(e, GatewayError):
                raise
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"invalid character {text[pos]!r} looking for beginning of value") from None
        pos = end


def parse_request(body: bytes, req_type):
    """The request message for a JSON body; GatewayError(INVALID_ARGUMENT) with
    Go's wording where it can be matched."""
    msg = req_type()
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        return msg
    try:
        obj, _ = json.JSONDecoder().raw_decode(text.lstrip())   # Go reads one value, ignores the rest
    except RecursionError:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "exceeded max depth") from None
    except json.JSONDecodeError as e:
        rest = text.lstrip()[e.pos:]
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "unexpected EOF" if not rest.strip() else
                           f"invalid character {rest[0]!r} looking for beginning of value") from None
    if obj is None:
        return msg
    if not isinstance(obj, dict):
        kind = {list: "array", str: "string", bool: "bool"}.get(type(obj), "number")
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"json: cannot unmarshal {kind} into Go value of type map[string]json.RawMessage")
    _check_bytes(obj, msg.DESCRIPTOR, depth=0)
    try:
        json_format.ParseDict(obj, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
    return msg


def _go_enum_name(enum) -> str:
    """Go's name of an enum type: etcdserverpb.RangeRequest_SortOrder for a nested one."""
    name = enum.name
    outer = enum.containing_type
    while outer is not None:
        name = f"{outer.name}_{name}"
        outer = outer.containing_type
    return f"{enum.file.package}.{name}"


MAX_DEPTH = 100


def _check_bytes(obj: dict, descriptor, depth: int) -> None:
    """What Go's decoder refuses and the protobuf runtime would let by
    (bytes not in strict standard base64, enum names it does not know, as
    unknown fields are ignored), with Go's error text; recursing into messages."""
    if depth > MAX_DEPTH:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "exceeded max recursion depth")
    for key, value in obj.items():
        field = descriptor.fields_by_name.get(key) or _by_json_name(descriptor, key)
        if field is None or value is None:
            continue
        values = value if field.is_repeated and isinstance(value, list) else [value]
        for v in values:
            if field.type == FieldDescriptor.TYPE_BYTES:
                if not isinstance(v, str):
                    kind = {list: "array", dict: "object", bool: "bool"}.get(type(v), "number")
                    raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"json: cannot unmarshal {kind} into Go value of type []uint8")
                go_b64decode(v)
            elif field.type == FieldDescriptor.TYPE_ENUM and isinstance(v, str):
                if field.enum_type.values_by_name.get(v) is None:
                    raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f'unknown value "{v}" for enum {_go_enum_name(field.enum_type)}')
            elif field.type == FieldDescriptor.TYPE_MESSAGE and isinstance(v, dict):
                _check_bytes(v, field.message_type, depth + 1)


def _by_json_name(descriptor, key: str):
    for f in descriptor.fields:
        if f.json_name == key:
            return f
    return None


_VALID_B64 = re.compile(r"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def go_b64decode(text: str) -> bytes:
    """Go's base64.StdEncoding.Decode: padding required, CR/LF ignored;
    GatewayError "illegal base64 data at input byte N" otherwise."""
    def bad(at: int) -> GatewayError:
        return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"illegal base64 data at input byte {at}")

    if len(text) % 4 == 0 and _VALID_B64.fullmatch(text):   # the usual case, in C
        return base64.b64decode(text)

    chars = [(i, c) for i, c in enumerate(text) if c not in "\r\n"]
    for n, (i, c) in enumerate(chars):
        if c == "=":
            tail = "".join(ch for _, ch in chars[n:])
            if (n % 4, tail) not in ((2, "=="), (3, "=")):
                raise bad(i)
            break
        if c not in _B64:
            raise bad(i)
    if len(chars) % 4:
        start = len(chars) - len(chars) % 4
        raise bad(chars[start][0] if start < len(chars) else len(text))
    try:
        return base64.b64decode("".join(c for _, c in chars), validate=True)
    except (binascii.Error, ValueError):
        raise bad(0) from None
