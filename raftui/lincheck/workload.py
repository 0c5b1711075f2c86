"""The live check's workload: N clients doing read / write / cas on a few keys.

    wl = Workload(endpoints, Config(clients=4, keys=3, rate=40))
    task = asyncio.create_task(wl.run())     # until wl.stop()
    wl.events                                # the history so far (checker.py's event dicts)
    wl.stats()                               # ops, ok / fail / info, ops/s, recent errors

Every call has a deadline (Config.deadline). What an answer means for the
history is Jepsen's rule, as tests/jepsen/harness.py applies it:

* a read is `ok` with the value, else `fail` (a read changes nothing);
* a write or cas is `ok` on an answer; `fail` only when the request provably
  never left (gRPC's "failed to connect to all addresses"); every other
  error -- a deadline, "request timed out", "leader changed" -- is `info`,
  indeterminate, and the client takes a new process id (the op stays open
  for ever, so its process must never be reused).

Keys are fresh for every run (`<prefix><run id>/k<i>`), so every register
starts absent, which is the checker's initial value (None). Values are
unique (`c<client>-<n>`), which the checker's pruning relies on. No UI here.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
import time
import uuid
from typing import Any, Callable, Sequence

import grpc

from engine.proto import rpc_pb2
from raftui.source.connection import ClientAuth, Stubs, TlsFiles

from .checker import CAS, FAIL, INFO, OK, READ, WRITE

NEVER_SENT = "failed to connect to all addresses"
MAX_EVENTS = 200_000            # two per op (~40 MB per 100,000 events): recording stops, and says so, at 100,000 ops
RATE_WINDOW = 5.0               # seconds over which ops/s is measured


@dataclasses.dataclass(frozen=True)
class Config:
    clients: int = 4
    keys: int = 3
    rate: float = 20.0                  # ops per second, all clients together (0: as fast as they can)
    deadline: float = 1.0               # per call, seconds
    read: float = 0.4                   # the mix, relative weights
    write: float = 0.3
    cas: float = 0.3
    prefix: str = "lincheck/"
    seed: int | None = None

    def check(self) -> str:
        """Why this configuration is refused ("" if it is fine)."""
        if not 1 <= self.clients <= 64:
            return "clients: 1 to 64"
        if not 1 <= self.keys <= 32:
            return "keys: 1 to 32"
        if not 0 <= self.rate <= 5000:
            return "rate: 0 (unpaced) to 5000 ops/s"
        if not 0.05 <= self.deadline <= 60:
            return "deadline: 0.05 to 60 s"
        if min(self.read, self.write, self.cas) < 0 or self.read + self.write + self.cas <= 0:
            return "the mix needs a positive weight"
        return ""


@dataclasses.dataclass(frozen=True)
class Stats:
    ops: int
    ok: int
    fail: int
    info: int
    per_second: float
    errors: tuple[tuple[str, int], ...]     # most frequent first
    full: bool                              # recording stopped at MAX_EVENTS
    running: bool


class Workload:
    def __init__(self, endpoints: Sequence[str], config: Config = Config(), tls: TlsFiles | None = None,
                 *, clock: Callable[[], int] = time.monotonic_ns, auth: ClientAuth | None = None) -> None:
        problem = config.check()
        if problem:
            raise ValueError(problem)
        if not endpoints:
            raise ValueError("no endpoint to send the workload to")
        self.config = config
        self.endpoints = list(endpoints)
        self.tls = tls
        self.auth = auth   # --user: every call carries its token (an auth-enabled cluster)
        self.run_id = uuid.uuid4().hex[:8]
        self.keys = [f"{config.prefix}{self.run_id}/k{i}" for i in range(config.keys)]
        self.events: list[dict] = []
        self._clock = clock
        self._next_id = 0
        self._stop = asyncio.Event()
        self._counts: collections.Counter = collections.Counter()
        self._errors: collections.Counter = collections.Counter()
        self._done_times: collections.deque = collections.deque()
        self._running = False
        self.full = False
        seed = config.seed if config.seed is not None else random.randrange(2 ** 32)
        self.seed = seed

    # ---------------------------------------------------------------- recording

    def _invoke(self, process: int, f: str, key: str, value: Any) -> int | None:
        if len(self.events) >= MAX_EVENTS - 1:
            self.full = True
            self._stop.set()
            return None
        self._next_id += 1
        self.events.append(dict(id=self._next_id, type="invoke", process=process, f=f, key=key, value=value,
                                time=self._clock()))
        return self._next_id

    def _complete(self, op_id: int, kind: str, process: int, f: str, key: str, value: Any, **extra) -> None:
        self.events.append(dict(id=op_id, type=kind, process=process, f=f, key=key, value=value,
                                time=self._clock(), **extra))
        self._counts[kind] += 1
        self._done_times.append(time.monotonic())

    def nemesis(self, what: str) -> None:
        """A fault the operator made, for the counterexample's timeline."""
        self.events.append(dict(type="nemesis", what=what, time=self._clock()))

    def stats(self) -> Stats:
        now = time.monotonic()
        while self._done_times and self._done_times[0] < now - RATE_WINDOW:
            self._done_times.popleft()
        ok, fail, info = self._counts[OK], self._counts[FAIL], self._counts[INFO]
        return Stats(ok + fail + info, ok, fail, info, len(self._done_times) / RATE_WINDOW,
                     tuple(self._errors.most_common(3)), self.full, self._running)

    # ---------------------------------------------------------------- running

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """The clients, until stop() (or the history is full)."""
        self._running = True
        rng = random.Random(self.seed)
        clients = [_Client(self, i, random.Random(rng.random())) for i in range(self.config.clients)]
        try:
            await asyncio.gather(*(c.run() for c in clients))
        finally:
            self._running = False
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


class _Client:
    def __init__(self, wl: Workload, idx: int, rng: random.Random) -> None:
        self.wl = wl
        self.idx = idx
        self.process = idx
        self.rng = rng
        self.member = rng.randrange(len(wl.endpoints))
        self.stubs: dict[int, Stubs] = {}
        self.known: dict[str, str] = {}
        self.seq = 0

    def stub(self) -> Stubs:
        s = self.stubs.get(self.member)
        if s is None:
            s = self.stubs[self.member] = Stubs(self.wl.endpoints[self.member], self.wl.tls, self.wl.auth)
        return s

    async def close(self) -> None:
        for s in self.stubs.values():
            await s.close()

    async def run(self) -> None:
        cfg = self.wl.config
        kinds, weights = (READ, WRITE, CAS), (cfg.read, cfg.write, cfg.cas)
        gap = cfg.clients / cfg.rate if cfg.rate else 0.0
        loop = asyncio.get_running_loop()
        # Clients start spread over one gap, so a paced workload is not a burst per tick.
        next_at = loop.time() + gap * self.rng.random()
        while not self.wl._stop.is_set():
            if gap:
                delay = next_at - loop.time()
                if delay > 0:
                    # Pacing, not synchronisation: wake at the next slot or when stopped.
                    try:
                        await asyncio.wait_for(self.wl._stop.wait(), delay)
                        return
                    except asyncio.TimeoutError:
                        pass
                next_at = max(next_at + gap, loop.time() - gap)
            f = self.rng.choices(kinds, weights)[0]
            key = self.rng.choice(self.wl.keys)
            if f == CAS and key not in self.known:
                f = WRITE
            await self.do(f, key)

    async def do(self, f: str, key: str) -> str:
        wl = self.wl
        p = self.process
        kb = key.encode()
        value: Any = None
        if f == WRITE:
            self.seq += 1
            value = f"c{self.idx}-{self.seq}"
        elif f == CAS:
            self.seq += 1
            old, new = self.known[key], f"c{self.idx}-{self.seq}"
            value = [old, new]
        oid = wl._invoke(p, f, key, value)
        if oid is None:
            return FAIL
        node = f"m{self.member + 1}"
        timeout = wl.config.deadline
        try:
            kv = self.stub().kv
            if f == READ:
                resp = await kv.Range(rpc_pb2.RangeRequest(key=kb), timeout=timeout)
                got = resp.kvs[0].value.decode("utf-8", "surrogateescape") if resp.kvs else None
                wl._complete(oid, OK, p, f, key, got, node=node)
                if got is not None:
                    self.known[key] = got
            elif f == WRITE:
                await kv.Put(rpc_pb2.PutRequest(key=kb, value=value.encode()), timeout=timeout)
                wl._complete(oid, OK, p, f, key, value, node=node)
                self.known[key] = value
            else:
                C = rpc_pb2.Compare
                req = rpc_pb2.TxnRequest(
                    compare=[C(result=C.EQUAL, target=C.VALUE, key=kb, value=old.encode())],
                    success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=kb, value=new.encode()))],
                    failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=kb))])
                resp = await kv.Txn(req, timeout=timeout)
                extra: dict[str, Any] = {"swapped": resp.succeeded}
                if resp.succeeded:
                    self.known[key] = new
                else:
                    kvs = resp.responses[0].response_range.kvs if resp.responses else []
                    cur = kvs[0].value.decode("utf-8", "surrogateescape") if kvs else None
                    extra["current"] = cur
                    if cur is not None:
                        self.known[key] = cur
                wl._complete(oid, OK, p, f, key, value, node=node, **extra)
            return OK
        except grpc.aio.AioRpcError as e:
            details = e.details() or ""
            never_sent = e.code() == grpc.StatusCode.UNAVAILABLE and NEVER_SENT in details
            outcome = FAIL if f == READ or never_sent else INFO
            short = f"{e.code().name}: {details.split(';')[0][:80]}"
            wl._complete(oid, outcome, p, f, key, value, node=node, error=short)
            wl._errors[short] += 1
            others = [i for i in range(len(wl.endpoints)) if i != self.member]
            if others:
                self.member = self.rng.choice(others)
            if outcome == INFO:
                self.process += wl.config.clients
            elif never_sent:
                # Every member refusing connections: pace the retries, stop promptly.
                try:
                    await asyncio.wait_for(wl._stop.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
            return outcome
