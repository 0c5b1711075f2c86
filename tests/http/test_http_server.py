"""engine/http/server.py: the HTTP/1.1 server's bounds, with an echo handler
in this process (no member): hostile or broken input gets a clean 4xx and
the connection closed, never a traceback or a hang."""
from __future__ import annotations

import asyncio
import socket

import pytest

from engine.http import server as http_server
from engine.http.server import HttpServer, Request, Response
from tests.http.member import LoopThread, fetch


async def _echo(req: Request) -> Response:
    if req.path == "/boom":
        raise RuntimeError("secret internals")
    return Response(200, f"{req.method} {req.target} {len(req.body)}".encode() + b"|" + req.body,
                    [("Content-Type", "text/plain")])


@pytest.fixture(scope="module")
def srv():
    lt = LoopThread()
    s = HttpServer(_echo, max_body=1000)
    port = lt.call(s.listen("127.0.0.1", 0))
    try:
        yield lt, port
    finally:
        lt.call(s.stop())
        lt.close()


def _raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send data, read until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                return out
            if not chunk:
                return out
            out += chunk


def test_plain_requests_and_keep_alive(srv) -> None:
    _, port = srv
    status, _, body = fetch(f"http://127.0.0.1:{port}/a?b=c", "POST", b"xyz")
    assert status == 200 and body == b"POST /a?b=c 3|xyz"
    two = (b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
           b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    out = _raw(port, two)
    assert out.count(b"HTTP/1.1 200 OK") == 2 and b"GET /one 0|" in out and b"POST /two 2|hi" in out
    chunked = (b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n")
    assert b"POST /c 5|abcde" in _raw(port, chunked)
    assert _raw(port, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"\r\n\r\n")
    # curl's Expect: 100-continue (a body over 1 KiB) is answered at once, as Go's server does.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        out = b""
        while chunk := sock.recv(1000):   # until the server closes (Connection: close)
            out += chunk
        assert b"POST /e 3|abc" in out
    over = b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    assert _raw(port, over).startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize("data, status", [
    (b"garbage\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\n\r\n", 400),                                   # no Host
    (b"GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400),                         # not a path
    (b"G(T /x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /x HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nA: \x01\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort", 400),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n", 413),
    (b"GET /x HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 200 + b"\r\n", 431),
    (b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 500),
])
def test_hostile_input_gets_a_clean_answer(srv, data: bytes, status: int) -> None:
    _, port = srv
    out = _raw(port, data)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:200]
    assert b"Traceback" not in out and b"secret" not in out
    assert out.count(b"HTTP/1.1 ") == 1


def test_slow_client_is_cut_off(srv, monkeypatch) -> None:
    lt, port = srv
    monkeypatch.setattr(http_server, "HEAD_TIMEOUT", 0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /x HTTP/1.1\r\n")   # and never the rest
        assert sock.recv(100) == b""           # closed by the server, not by our timeout


def test_connection_limit(monkeypatch) -> None:
    lt = LoopThread()
    s = HttpServer(_echo, max_body=10)
    try:
        port = lt.call(s.listen("127.0.0.1", 0))
        monkeypatch.setattr(http_server, "MAX_CONNECTIONS", 2)
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        try:
            lt.call(asyncio.sleep(0.2))   # let the server accept both
            with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
                assert third.recv(100) == b""
        finally:
            for sock in held:
                sock.close()
    finally:
        lt.call(s.stop())
        lt.close()


def test_gateway_json_bounds() -> None:
    """Deep nesting and big values: a clean InvalidArgument, and a 2 MiB value decodes fast."""
    import base64
    import os
    import time

    from engine.http.gateway import GatewayError, parse_request
    from engine.proto import rpc_pb2

    for body in (b"[" * 100_000, b'{"compare":' * 5000, b'{"success":[{"request_txn":' * 200):
        with pytest.raises(GatewayError) as e:
            parse_request(body, rpc_pb2.TxnRequest)
        assert e.value.code.name == "INVALID_ARGUMENT"
    value = base64.b64encode(os.urandom(1_500_000)).decode()
    t = time.perf_counter()
    req = parse_request(('{"key":"Zm9v","value":"%s"}' % value).encode(), rpc_pb2.PutRequest)
    assert len(req.value) == 1_500_000 and time.perf_counter() - t < 2.0
