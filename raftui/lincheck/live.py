"""The live check: a workload running, its history checked again and again.

    session = LiveSession(endpoints, Config(clients=4, rate=40), save_dir="~/.local/share/raftui")
    task = asyncio.create_task(session.run())     # until session.stop()
    session.status()                              # a LiveStatus for the panel (no I/O, cheap)

Every `every` seconds the history recorded so far is checked, never two
checks at once. Operations still running at that moment count as
indeterminate, which is exactly the prefix rule: any prefix of a
linearizable history is linearizable. So a violation found in a window is
a violation of the whole run; the first one found stays on the panel, its
history is saved, and the workload stops.

A window does not re-read the whole history: each key is checked from its
last *cut*, an isolated read whose value is the register's at that point
(incremental.py says why that is sound), so a window costs what happened
since. Small segments are checked on a thread; bigger ones (a key without a
cut for a while: heavy concurrency, or writes left indeterminate by faults)
in a child interpreter (`python -m raftui.lincheck.worker`), so the
CPU-bound search never freezes the screen. When the run stops, the whole
history is checked once more, in the child, and that is the verdict the
run ends with: it never rests on the cuts. Recording stops at
workload.MAX_EVENTS. No UI here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
from typing import Sequence

from raftui.source.connection import TlsFiles

from . import checker, history, incremental
from .workload import Config, Stats, Workload

CHECK_EVERY = 2.0
IN_THREAD_BELOW = 4_000         # segment events checked on a thread (ms of work); more: the checker process
CHECK_BUDGET = 2_000_000        # WGL configurations per key before "undecided"


@dataclasses.dataclass(frozen=True)
class OpLine:
    """One operation of a counterexample, as the panel draws it (times in ms from its start)."""
    process: str
    start_ms: float
    end_ms: float | None            # None: never completed (indeterminate)
    text: str


@dataclasses.dataclass(frozen=True)
class Verdict:
    valid: bool | None              # None: undecided (search budget)
    ops: int                        # operations checked
    seconds: float                  # how long the check took
    key: str = ""                   # the key of the violation
    counterexample: tuple[OpLine, ...] = ()
    report: str = ""                # checker's text: the timeline and why no order works


@dataclasses.dataclass(frozen=True)
class LiveStatus:
    stats: Stats | None
    verdict: Verdict | None         # the latest (a violation stays)
    checked_at: float = 0.0         # time.monotonic() of the latest verdict
    checking: bool = False
    saved: str = ""                 # where the history was saved, once it was
    error: str = ""                 # the checker itself failed (never a verdict)


async def check_in_subprocess(events: list[dict], budget: int = CHECK_BUDGET, *,
                              segments: list | None = None, ops: int = 0) -> tuple[Verdict, list]:
    """check_events (or, given `segments`, check_segments) in a child interpreter; killed (by its
    PID) if this is cancelled. Returns (verdict, cuts)."""
    import raftui

    root = os.path.dirname(os.path.dirname(os.path.abspath(raftui.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftui.lincheck.worker", str(budget), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    # Encoding 100,000 ops takes seconds: on a thread, so the console's loop keeps drawing.
    job = {"segments": segments, "ops": ops} if segments is not None else {"events": events}
    body = await asyncio.to_thread(_encode, job)
    try:
        out, err = await proc.communicate(body)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"checker process exited {proc.returncode}: {tail[0][:200]}")
    d = json.loads(out)
    v = d["verdict"]
    v["counterexample"] = tuple(OpLine(**x) for x in v["counterexample"])
    return Verdict(**v), d.get("cuts", [])


def _encode(job: dict) -> bytes:
    return json.dumps(job, sort_keys=True, default=repr).encode()


def run_job(job: dict, budget: int = CHECK_BUDGET) -> dict:
    """What the worker process does with one job (plain JSON data in and out)."""
    if job.get("segments") is not None:
        verdict, cuts = check_segments(job["segments"], budget, job.get("ops", 0))
    else:
        verdict, cuts = check_events(job["events"], budget), []
    return {"verdict": dataclasses.asdict(verdict), "cuts": cuts}


def _verdict(v: checker.Verdict, ops: int, took: float) -> Verdict:
    bad = next((k for k in v.keys.values() if k.valid is False), None)
    if bad is None:
        return Verdict(v.valid, ops, took, report=v.report() if v.valid is None else "")
    small = bad.counterexample
    start = min(o.invoke for o in small)
    lines = tuple(OpLine(f"p{o.process}", (o.invoke - start) / 1e6,
                         None if o.complete == checker.INF else (o.complete - start) / 1e6, o.describe())
                  for o in sorted(small, key=lambda o: (o.invoke, str(o.id))))
    return Verdict(False, ops, took, str(bad.key), lines, bad.report)


def check_events(events: list[dict], budget: int = CHECK_BUDGET) -> Verdict:
    """Check one whole history; plain data out (it crosses a process boundary)."""
    t0 = time.monotonic()
    v = checker.check(events, None, max_configurations=budget)
    return _verdict(v, sum(1 for e in events if e.get("type") == "invoke"), time.monotonic() - t0)


def check_segments(segments: list, budget: int = CHECK_BUDGET, ops: int = 0) -> tuple[Verdict, list]:
    """Check each key's segment from its value at the last cut (incremental.py); (verdict, cuts):
    the new cut of every key whose segment holds. `ops`: the history's size, for the verdict."""
    t0 = time.monotonic()
    keys: dict = {}
    cuts = []
    for key, base, items in segments:
        events = [e for _, e in items]
        if not events:
            continue
        v = checker.check(events, base, max_configurations=budget)
        keys.update(v.keys)
        if v.valid is False:
            return _verdict(checker.Verdict(False, v.keys), ops, time.monotonic() - t0), []
        if v.valid:
            cut = incremental.find_cut([(i, e) for i, e in items])
            if cut is not None:
                cuts.append([key, cut])
    valid = None if any(k.valid is None for k in keys.values()) else True
    return _verdict(checker.Verdict(valid, keys), ops, time.monotonic() - t0), cuts


class LiveSession:
    def __init__(self, endpoints: Sequence[str], config: Config = Config(), tls: TlsFiles | None = None, *,
                 save_dir: str | None = None, every: float = CHECK_EVERY, in_process: bool = False,
                 auth=None) -> None:
        self.workload = Workload(endpoints, config, tls, auth=auth)
        self.every = every
        self.save_dir = os.path.expanduser(save_dir) if save_dir else None
        self.in_process = in_process      # tests: check on a thread instead of a process
        self.incremental = incremental.Incremental()   # windows check from the last cut of each key
        self._verdict: Verdict | None = None
        self._checked_at = 0.0
        self._checking = False
        self._saved = ""
        self._error = ""
        self._stopped = asyncio.Event()

    def status(self) -> LiveStatus:
        return LiveStatus(self.workload.stats(), self._verdict, self._checked_at, self._checking,
                          self._saved, self._error)

    def stop(self) -> None:
        self.workload.stop()
        self._stopped.set()

    def nemesis(self, what: str) -> None:
        self.workload.nemesis(what)

    async def run(self) -> LiveStatus:
        """Workload and checks until stop(), a violation, or a full history; then a last check
        of everything and the history saved. Returns the final status."""
        work = asyncio.create_task(self.workload.run())
        try:
            while not work.done():
                try:
                    await asyncio.wait_for(asyncio.shield(work), self.every)
                except asyncio.TimeoutError:
                    pass
                await self._check(final=False)
                if self._verdict is not None and self._verdict.valid is False:
                    self.workload.stop()
                    break
            await work
            if self._verdict is None or self._verdict.valid is not False:
                await self._check(final=True)   # the whole history, the last ops included
        finally:
            self.workload.stop()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
            # Seconds for a long history: off the loop (cancelled meanwhile, the thread still finishes it).
            await asyncio.to_thread(self.save)
        return self.status()

    async def _check(self, final: bool) -> None:
        """One window: each key from its last cut (incremental.py); `final`: the whole history,
        so the verdict the run ends with never rests on the cuts."""
        events = list(self.workload.events)         # a snapshot: the clients keep appending
        self._checking = True
        try:
            if final:
                if self.in_process:
                    verdict, cuts = await asyncio.to_thread(check_events, events), []
                else:
                    verdict, cuts = await check_in_subprocess(events)
            else:
                ops = sum(1 for e in events if e.get("type") == "invoke")
                segments = await asyncio.to_thread(self.incremental.segments, events)
                size = sum(len(items) for _, _, items in segments)
                if self.in_process or size < IN_THREAD_BELOW:
                    verdict, cuts = await asyncio.to_thread(check_segments, segments, CHECK_BUDGET, ops)
                else:
                    verdict, cuts = await check_in_subprocess([], segments=segments, ops=ops)
        except Exception as exc:   # a checker process that failed, a checker bug: said, never a crash
            self._error = f"the check failed: {type(exc).__name__}: {exc}"
            return
        finally:
            self._checking = False
        for key, cut in cuts:
            self.incremental.advance(key, cut)
        if self._verdict is None or self._verdict.valid is not False:
            self._verdict = verdict
            self._checked_at = time.monotonic()

    def save(self, path: str | None = None) -> str:
        """The history so far to `path` (default: the save dir, named by run id); "" if nowhere to save."""
        if path is None:
            if self.save_dir is None:
                return ""
            os.makedirs(self.save_dir, exist_ok=True)
            path = os.path.join(self.save_dir, f"lincheck-{self.workload.run_id}.jsonl")
        cfg = self.workload.config
        try:
            history.save(path, self.workload.events, keys=self.workload.keys, clients=cfg.clients,
                         rate=cfg.rate, deadline=cfg.deadline, seed=self.workload.seed,
                         endpoints=self.workload.endpoints)
        except OSError as exc:
            self._error = f"history not saved to {path}: {exc.strerror or exc}"
            return ""
        self._saved = path
        return path
