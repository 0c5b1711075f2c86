"""`raftui run FILE`: a scenario without the console, for scripts and CI.

    raftui run leader-isolation                     a fresh hosted raftnode cluster (temporary data dir)
    raftui run my.toml --members 5                  ... of 5 members
    raftui run rolling-restart --etcd /usr/bin/etcd hosted real etcd members (no Fault service)
    raftui run leader-transfer --endpoints h:p,...  an attached cluster (only the steps it allows)
    raftui run flapping-network --lincheck 40       ... with the live linearizability check running
                                                    (40 ops/s); not linearizable fails the run
    raftui run --list                               the shipped scenarios

Exit status: 0 every step passed; 1 a step failed (the report names it and
its line) or the scenario is not possible on that cluster; 2 the file is
bad (the message names its line and step) or the command line is.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile

from raftui.render import escape

from .script import STEP_HELP, Loop, Script, ScriptError

ETCD_UNKNOWN_FLAGS = ("--experimental-snapshot-catchup-entries",)   # etcd 3.4 has no such flag


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raftui run", description="Run a scenario script headless; exit 0 if "
                                "every step passed, 1 if one failed (named in the report), 2 for a bad file.")
    p.add_argument("scenario", nargs="?", help="a scenario file (TOML), or the name of a shipped one")
    p.add_argument("--list", action="store_true", help="list the shipped scenarios")
    p.add_argument("--steps", action="store_true", help="print the step grammar")
    p.add_argument("--members", type=int, choices=(1, 3, 5, 7),
                   help="host mode: members to start (default: 3, or the scenario's own minimum)")
    p.add_argument("--endpoints", help="attach to these members instead of hosting: host:port,...")
    p.add_argument("--cacert")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user", help="with --endpoints: NAME[:PASSWORD], as etcdctl --user (the password "
                                  "is asked for when not given, never echoed)")
    p.add_argument("--data-dir", help="host mode: keep the members' data here (default: a temporary "
                                      "directory, removed afterwards)")
    p.add_argument("--etcd", metavar="BINARY", help="host mode: run this etcd binary instead of raftnode "
                                                    "(no Fault service: fault steps are not possible)")
    p.add_argument("--lincheck", type=float, metavar="RATE", default=None,
                   help="run the live linearizability workload (4 clients, RATE ops/s) through the "
                        "scenario and check its history; a violation fails the run (exit 1)")
    p.add_argument("--history", metavar="FILE", help="with --lincheck: save the history here "
                                                     "(replay: raftui lincheck FILE)")
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from . import library, resolve

    if args.list:
        for name in library.names():
            try:
                s = resolve(name)
                # What a hosted run starts (at least 3), not the scenario's minimum.
                print(f"{name:<22} {max(3, s.members)} members  {escape(s.description, limit=300)}")
            except ScriptError as exc:      # a shipped file that does not parse is a bug to see
                print(f"{name:<22} BROKEN: {escape(str(exc), limit=300)}")
        return 0
    if args.steps:
        print(STEP_HELP)
        return 0
    if not args.scenario:
        print("raftui run: name a scenario file or a shipped scenario (--list shows them)", file=sys.stderr)
        return 2
    try:
        script = resolve(args.scenario)
    except ScriptError as exc:
        print(f"raftui run: {escape(str(exc), limit=2000)}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_interruptible(_run(script, args)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("raftui run: interrupted; the members it started were stopped", file=sys.stderr)
        return 1


async def _interruptible(coro):
    """SIGTERM (a CI timeout, kill) and SIGINT cancel the run, so its finally stops the hosted
    members: they run in their own session and would otherwise outlive the runner."""
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, task.cancel)
        except (NotImplementedError, RuntimeError, ValueError):   # not the main thread, or no signals
            pass
    return await coro


async def _run(script: Script, args) -> int:
    from raftui.host import HostError
    from raftui.source import TlsFiles, parse_endpoints

    from .cluster import ScenarioCluster
    from .runner import Runner

    tls = TlsFiles(args.cacert, args.cert, args.key) if (args.cacert or args.cert or args.key) else None
    host = None
    temp = None
    def say(e) -> None:
        # Steps as they end; a loop's rounds only when its body is more than one step
        # ("repeat 120 { put }" prints its 120 puts, not 120 round lines as well).
        if args.quiet or e.kind == "start":
            return
        if e.kind == "note" and isinstance(e.step, Loop) and len(e.step.body) == 1:
            return
        print(e.line(), flush=True)
    auth = None
    if args.user is not None and not args.endpoints:
        print("raftui run: --user goes with --endpoints (a hosted cluster runs without auth)", file=sys.stderr)
        return 2
    try:
        if args.endpoints:
            endpoints = parse_endpoints(args.endpoints)
            if not endpoints:
                print("raftui run: --endpoints names no endpoint", file=sys.stderr)
                return 2
            if args.user is not None:
                from raftui.source.connection import AuthFailed, authenticate_now, console_auth
                try:
                    auth = console_auth(args.user)
                    args.user = args.user.partition(":")[0]   # the password only behind auth's Secret
                    await asyncio.to_thread(authenticate_now, endpoints, tls, auth)
                except (ValueError, AuthFailed) as exc:
                    print(f"raftui run: {exc}", file=sys.stderr)
                    return 1
                except ConnectionError as exc:
                    print(f"raftui run: {exc}", file=sys.stderr)
                    return 1
        else:
            size = args.members or max(3, script.members)
            if args.data_dir is None:
                temp = tempfile.mkdtemp(prefix="raftui-scenario-")
            data_dir = args.data_dir or os.path.join(temp, "cluster")
            try:
                host = await asyncio.to_thread(_start_host, data_dir, size, script, args.etcd)
            except (HostError, OSError) as exc:
                print(f"raftui run: cannot start the cluster: {exc}", file=sys.stderr)
                return 1
            endpoints = host.endpoints
            if not args.quiet:
                print(f"hosting {size} {'etcd' if args.etcd else 'raftnode'} members in {data_dir}"
                      + (f" with {' '.join(script.flags)}" if script.flags else ""), flush=True)
        if not args.quiet:
            print(f"scenario {escape(repr(script.name), limit=200)}: {escape(script.description, limit=500)}",
                  flush=True)
        cluster = ScenarioCluster(endpoints, host, tls, auth=auth)
        live = None
        if args.lincheck is not None:
            live = _start_lincheck(endpoints, tls, args.lincheck, cluster, auth)
            if isinstance(live, str):
                print(f"raftui run: {live}", file=sys.stderr)
                return 2
        try:
            report = await Runner(script, cluster, on_event=say).run()
        finally:
            await cluster.close()
            checked = await _finish_lincheck(live, args.history) if live is not None else None
        print(report.text(), flush=True)
        if checked is not None:
            print(checked[1], flush=True)
            if not checked[0]:
                return 1
        return 0 if report.ok else 1
    finally:
        if host is not None:
            await asyncio.to_thread(_stop_host, host)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _start_lincheck(endpoints, tls, rate: float, cluster, auth=None):
    """The live check beside the scenario: (session, task), or why it cannot start.
    The scenario's faults and process actions go into its history as nemesis events."""
    from raftui.lincheck.live import LiveSession
    from raftui.lincheck.workload import Config

    try:
        session = LiveSession(endpoints, Config(clients=4, rate=rate), tls, auth=auth)
    except ValueError as exc:
        return f"--lincheck: {exc}"
    cluster.on_action.append(lambda result, kind: result.ok and session.nemesis(result.text))
    return session, asyncio.create_task(session.run())


async def _finish_lincheck(live, path: str | None) -> tuple[bool, str]:
    """Stop the workload, check everything once more, save the history if asked: (passed, text)."""
    session, task = live
    session.stop()
    status = await task
    saved = session.save(path) if path else ""
    v = status.verdict
    ops = status.stats.ops if status.stats else 0
    where = f"; history saved to {escape(saved, limit=300)}" if saved else ""
    if status.error:
        return False, f"linearizability: {escape(status.error, limit=500)}{where}"
    if v is None:
        return False, f"linearizability: no verdict ({ops} ops){where}"
    if v.valid:
        return True, (f"linearizable ✓ ({v.ops:,} ops: ok {status.stats.ok:,}, fail {status.stats.fail:,}, "
                      f"info {status.stats.info:,}){where}")
    if v.valid is None:
        return False, f"linearizability UNDECIDED after {v.ops:,} ops (search budget){where}"
    report = "\n".join(escape(line, limit=500) for line in v.report.splitlines())
    return False, f"NOT LINEARIZABLE ✗\n{report}{where}"


def _start_host(data_dir: str, size: int, script: Script, etcd: str | None):
    from engine.cli import launch
    from raftui.host import HostError, ProcessHost, raftnode_command

    flags = list(script.flags)
    if etcd:
        flags = [f for f in flags if f.split("=", 1)[0] not in ETCD_UNKNOWN_FLAGS]
        host = ProcessHost(data_dir, size, [etcd], fault_injection=False,
                           extra_args=[*launch.ETCD_LOG_FLAGS, *flags])
    else:
        command = raftnode_command()
        if command is None:
            raise HostError("raftnode is not installed")
        host = ProcessHost(data_dir, size, command, fault_injection=True, extra_args=flags,
                           stop_together=True)
    try:
        host.start()
        host.wait_listening(timeout=30.0)
    except BaseException:
        _stop_host(host)
        raise
    return host


def _stop_host(host) -> None:
    """Every member stopped; anything left after the deadline is killed by its PID."""
    for name in host.names:
        if host.state(name) == "paused":      # a stopped process would not see SIGTERM
            host.resume(name)
    host.stop_all(timeout=10.0)
    for name in host.names:
        pid = host.pid(name)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
