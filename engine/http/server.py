"""A small HTTP/1.1 server on asyncio streams, for a member's HTTP surface.

It serves what etcd serves over HTTP (engine/http/service.py routes it):
short requests with small bodies, answered from memory or through the
member's KVServer. Everything a client sends is bounded before it is read:

  * the request line and headers together: at most MAX_HEAD_BYTES (else 431),
    at most MAX_HEADERS header lines (else 431);
  * the body: Content-Length or chunked, at most `max_body` bytes (else 413);
  * time: the head must arrive within HEAD_TIMEOUT and the body within
    BODY_TIMEOUT (else the connection is closed), an idle kept-alive
    connection is closed after IDLE_TIMEOUT;
  * connections: at most MAX_CONNECTIONS at once (more are closed at once).

Anything malformed gets a clean 400 and the connection is closed; a
handler that raises gets a 500 without its traceback (which is logged). No
blocking work runs here: a handler that has some takes it to a worker.
Connections are kept alive as HTTP/1.1 says (`Connection: close` and
HTTP/1.0 without keep-alive end them after the answer).
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import ssl as _ssl
import time
import urllib.parse
from typing import AsyncIterator, Awaitable, Callable

from engine.transport.certcheck import peer_chain_der

log = logging.getLogger("engine.http")

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
HEAD_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
WRITE_TIMEOUT = 30.0
MAX_CONNECTIONS = 512

REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    411: "Length Required", 412: "Precondition Failed", 413: "Request Entity Too Large",
    416: "Requested Range Not Satisfiable", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 499: "Client Closed Request",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadRequest(Exception):
    """The request cannot be read; answer `status` and close."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


@dataclasses.dataclass
class Request:
    method: str
    target: str          # as sent: path and query
    version: str         # "HTTP/1.1"
    headers: dict[str, str]   # lower-case names; a repeated header's values joined by ", "
    body: bytes = b""

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(urllib.parse.urlsplit(self.target).query, keep_blank_values=True)


@dataclasses.dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # A streamed answer (chunked, then the connection closes): its chunks, in
    # place of body. The iterator is closed when the client goes away.
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def text(cls, status: int, text: str, *extra: tuple[str, str]) -> "Response":
        """Go's http.Error: text/plain, nosniff, a newline after the text."""
        return cls(status, (text + "\n").encode(),
                   [("Content-Type", "text/plain; charset=utf-8"),
                    ("X-Content-Type-Options", "nosniff"), *extra])


Handler = Callable[[Request], Awaitable[Response]]


def encode_response(resp: Response, *, close: bool, head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Status')}"]
    names = set()
    for name, value in resp.headers:
        lines.append(f"{name}: {value}")
        names.add(name.lower())
    if "date" not in names:
        lines.append("Date: " + email.utils.formatdate(usegmt=True))
    if resp.stream is not None:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {len(resp.body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + resp.body


def parse_head(data: bytes) -> Request:
    """The request line and headers (without the final blank line). Raises BadRequest."""
    lines = data.decode("latin-1").split("\r\n")   # latin-1: every byte is a character
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed HTTP request line")
    method, target, version = parts
    if not method or not set(method.encode()) <= _TOKEN:
        raise BadRequest(400, "malformed HTTP method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            raise BadRequest(505, "unsupported HTTP version")
        raise BadRequest(400, "malformed HTTP version")
    if not target.startswith("/") or any(c in target for c in "\x00\r\n\t "):
        raise BadRequest(400, "malformed request target")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, "too many header fields")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name.encode()) <= _TOKEN:
            raise BadRequest(400, "malformed header line")
        if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in value):
            raise BadRequest(400, "invalid header value")
        key, value = name.lower(), value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if version == "HTTP/1.1" and "host" not in headers:
        raise BadRequest(400, "missing required Host header")
    return Request(method, target, version, headers)


async def read_body(reader: asyncio.StreamReader, req: Request, max_body: int) -> bytes:
    """The body as the headers frame it, bounded by max_body. Raises BadRequest."""
    te = req.headers.get("transfer-encoding")
    cl = req.headers.get("content-length")
    if te is not None:
        if te.lower() != "chunked" or cl is not None:
            raise BadRequest(400 if te.lower() == "chunked" else 501, "unsupported transfer encoding")
        return await _read_chunked(reader, max_body)
    if cl is None:
        return b""
    if not cl.isdigit() or len(cl) > 18:
        raise BadRequest(400, "bad Content-Length")
    n = int(cl)
    if n > max_body:
        raise BadRequest(413, "request body too large")
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise BadRequest(400, "unexpected EOF") from None


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    out = bytearray()
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise BadRequest(400, "malformed chunked encoding") from None
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 16:
            raise BadRequest(400, "malformed chunked encoding")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequest(400, "malformed chunked encoding") from None
        if size == 0:
            break
        if len(out) + size > max_body:
            raise BadRequest(413, "request body too large")
        try:
            out += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise BadRequest(400, "malformed chunked encoding")
        except asyncio.IncompleteReadError:
            raise BadRequest(400, "unexpected EOF") from None
    # Trailers: read and ignore, bounded like the head.
    seen = 0
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise BadRequest(400, "malformed chunked trailer") from None
        seen += len(line)
        if line == b"\r\n":
            return bytes(out)
        if seen > MAX_HEAD_BYTES:
            raise BadRequest(431, "trailer too large")


class HttpServer:
    """Listeners on one or more addresses, all answered by `handler`."""

    def __init__(self, handler: Handler, *, max_body: int,
                 refuse_peer: Callable[[bytes | None, list[bytes]], str | None] | None = None) -> None:
        """`refuse_peer(der, chain_der)`: on a TLS connection, once its handshake is done,
        why the client's certificate (DER, None without one) is refused, or
        None; a refused connection is closed before anything is read, as
        etcd's TLS listener closes it (its --client-crl-file)."""
        self._handler = handler
        self._max_body = max_body
        self._refuse_peer = refuse_peer
        self._last_refusal_log = float("-inf")
        self._servers: list[asyncio.base_events.Server] = []
        self._conns: set[asyncio.Task] = set()
        self._stopping = False

    async def listen(self, host: str, port: int, ssl: _ssl.SSLContext | None = None) -> int:
        """Bind host:port (0: any free port); the port bound. Raises OSError."""
        srv = await asyncio.start_server(self._on_connection, host, port, ssl=ssl,
                                         limit=MAX_HEAD_BYTES, ssl_handshake_timeout=HEAD_TIMEOUT
                                         if ssl is not None else None)
        self._servers.append(srv)
        return srv.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stopping = True
        for srv in self._servers:
            srv.close()
        for t in list(self._conns):
            t.cancel()
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        self._servers.clear()

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= MAX_CONNECTIONS or self._stopping:
            writer.close()
            return
        self._conns.add(task)
        try:
            if self._refused(writer):
                return
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, _ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # never let one connection's surprise reach the loop's handler
            log.exception("http connection failed")
        finally:
            self._conns.discard(task)
            writer.close()

    def _refused(self, writer: asyncio.StreamWriter) -> bool:
        ssl_object = writer.get_extra_info("ssl_object")
        if self._refuse_peer is None or ssl_object is None:
            return False
        why = self._refuse_peer(ssl_object.getpeercert(binary_form=True), peer_chain_der(ssl_object))
        if why is None:
            return False
        now = time.monotonic()
        if now - self._last_refusal_log >= 1.0:   # a client retrying in a loop gets one line a second
            self._last_refusal_log = now
            log.warning("rejected connection from %r (error %r)", writer.get_extra_info("peername"), why)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            try:
                head = await asyncio.wait_for(self._read_head(reader),
                                              HEAD_TIMEOUT if first else IDLE_TIMEOUT)
            except asyncio.IncompleteReadError as e:
                if e.partial.strip():
                    await self._send(writer, Response.text(400, "400 Bad Request"), close=True)
                return
            except BadRequest as e:
                await self._send(writer, Response.text(e.status, f"{e.status} {REASONS[e.status]}: {e}"),
                                 close=True)
                return
            first = False
            try:
                req = parse_head(head)
                if req.headers.get("expect", "").lower() == "100-continue" and req.version == "HTTP/1.1":
                    # curl asks before sending a body over 1 KiB; Go's server says yes
                    # (a body over the limit is refused with 413 as it is read).
                    cl = req.headers.get("content-length", "")
                    if cl.isdigit() and int(cl) > self._max_body:
                        raise BadRequest(413, "request body too large")
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
                req.body = await asyncio.wait_for(read_body(reader, req, self._max_body), BODY_TIMEOUT)
            except BadRequest as e:
                await self._send(writer, Response.text(e.status, f"{e.status} {REASONS[e.status]}: {e}"),
                                 close=True)
                return
            conn = req.headers.get("connection", "").lower()
            close = ("close" in conn or (req.version == "HTTP/1.0" and "keep-alive" not in conn)
                     or self._stopping)
            try:
                resp = await self._handler(req)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("http handler for %s %s failed", req.method, req.path)
                resp = Response.text(500, "Internal Server Error")
            if resp.stream is not None:
                await self._send_stream(reader, writer, resp)
                return
            await self._send(writer, resp, close=close, head_only=req.method == "HEAD")
            if close:
                return

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> bytes:
        # Tolerate (as Go does) blank lines before a request line.
        while True:
            try:
                data = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise BadRequest(431, "request header too large") from None
            data = data.lstrip(b"\r\n")
            if data:
                return data[:-4]

    @staticmethod
    async def _send_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           resp: Response) -> None:
        """Chunks until the stream ends or the client goes away (anything it
        sends now, or its EOF, ends the answer), then the connection closes."""
        stream = resp.stream
        assert stream is not None

        async def client_gone() -> None:
            await reader.read(1)

        watching = asyncio.ensure_future(client_gone())
        try:
            writer.write(encode_response(resp, close=True))
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            it = stream.__aiter__()
            while True:
                nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt, watching}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    await asyncio.wait({nxt})   # let the generator unwind before aclose()
                    return
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    break
                if chunk:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            writer.write(b"0\r\n\r\n")
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        finally:
            watching.cancel()
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except (RuntimeError, Exception):
                    pass

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, resp: Response, *, close: bool,
                    head_only: bool = False) -> None:
        writer.write(encode_response(resp, close=close, head_only=head_only))
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
