"""In-process raftnode members with their HTTP surface, for tests that
speak plain HTTP (urllib) to them from the test thread.

A LoopThread runs one asyncio loop in a daemon thread; the members
(tests/server/inproc.InProcCluster), their HttpService listeners and, when
asked, a client gRPC server live on it. Tests call into it with `call()`,
which waits with a deadline.
"""
from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from typing import Any, Awaitable

from engine.http import HttpService
from engine.server.kvserver import KVServer
from tests.server.inproc import InProcCluster

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, method: str = "GET", data: bytes | None = None, timeout: float = 10.0,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one HTTP request, errors included."""
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="http-test-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Awaitable[Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


class HttpMembers:
    """`size` in-process members, each with a metrics URL and a client HTTP URL."""

    def __init__(self, data_dir: str, size: int = 1, *, extra: tuple[str, ...] = ()) -> None:
        self.lt = LoopThread()
        self.cluster = InProcCluster(data_dir, size, extra=extra)
        self.http: dict[str, HttpService] = {}
        self.metrics_url: dict[str, str] = {}
        self.client_url: dict[str, str] = {}

    def start(self) -> "HttpMembers":
        async def start() -> None:
            for name in self.cluster.names:
                node = await self.cluster.start(name)
                h = HttpService(KVServer(node))
                [self.metrics_url[name]] = await h.listen(["http://127.0.0.1:0"], metrics_only=True)
                [self.client_url[name]] = await h.listen(["http://127.0.0.1:0"], metrics_only=False)
                self.http[name] = h
            await self.cluster.leader()
        self.lt.call(start())
        return self

    def stop_member(self, name: str) -> None:
        async def stop() -> None:
            await self.http.pop(name).stop()
            await self.cluster.stop(name)
        self.lt.call(stop())

    def node(self, name: str = "n1"):
        return self.cluster.nodes[name]

    def stop(self) -> None:
        async def stop() -> None:
            for h in self.http.values():
                await h.stop()
            await self.cluster.stop_all()
        try:
            self.lt.call(stop())
        finally:
            self.lt.close()

