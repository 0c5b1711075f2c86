"""Run the members as local processes with etcd's flags.

    host = raftnode_host(data_dir, size=3)   # the product: our raftnode, faults enabled
    host = etcd_host(data_dir, size=3)       # the same with the real etcd binary (tests)
    host.start(); ...; host.kill("n2"); host.restart("n2"); host.stop_all()

Members run in their own session, so quitting the console (or ^C in its
terminal) does not take them down: the operator may leave them running and
reattach. Each member's PID is written to `<name>.pid` in the data dir and
a later console on the same directory adopts the running process instead of
starting a second one on the same ports. Output goes to `<name>.log`.
Processes are started, signalled, stopped and adopted by engine.cli.launch,
the one launcher the tests and benchmarks use too.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Sequence

from engine.cli import launch
from engine.cli.launch import MemberProcess, free_ports, raftnode_command

from .base import ClusterHost, HostError, ProcessState
from .layout import HOST, ClusterLayout, MemberLayout

__all__ = ["ProcessHost", "raftnode_host", "etcd_host", "raftnode_command"]


class ProcessHost(ClusterHost):
    def __init__(self, data_dir: os.PathLike | str, size: int, command: Sequence[str], *,
                 fault_injection: bool, extra_args: Sequence[str] = (), stop_together: bool = False) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.data_dir = pathlib.Path(data_dir).expanduser().resolve()
        self.command = list(command)
        self.fault_injection = fault_injection
        self.extra_args = list(extra_args)
        # raftnode members stop on SIGTERM without waiting for their peers, so
        # they can all be told at once (0.8 s for three instead of 1.5 s).
        self.stop_together = stop_together
        existing = ClusterLayout.load(self.data_dir)
        # An existing layout wins over `size`: resuming must bring back the same cluster.
        self.layout = existing or ClusterLayout.new(size)
        self.resumed = existing is not None
        self._procs: dict[str, MemberProcess] = {}
        self._killed: set[str] = set()

    # ---------------------------------------------------------------- queries

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.layout.members]

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.layout.members]

    @property
    def metrics_urls(self) -> dict[str, str]:
        return {m.endpoint: m.metrics_url for m in self.layout.members if m.metrics_port}

    def pid(self, name: str) -> int | None:
        p = self._procs.get(name)
        return p.pid if p is not None and p.alive() else None

    def state(self, name: str) -> ProcessState:
        p = self._procs.get(name)
        if p is None:
            return "not started"
        if not p.alive():
            return "killed" if name in self._killed else "exited"
        return "paused" if p.paused() else "running"

    def log_path(self, name: str) -> pathlib.Path:
        return self.data_dir / f"{name}.log"

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.layout.save(self.data_dir)
        for m in self.layout.members:
            if self.state(m.name) not in ("running", "paused"):
                self._start_member(m)

    def plan_member(self) -> MemberLayout:
        """Name and free ports for one more member (not started, not saved)."""
        client, peer, metrics = free_ports(3)
        return MemberLayout(self.layout.next_name(), client, peer, metrics_port=metrics)

    def start_joining(self, planned: MemberLayout, members: Sequence[tuple[str, str]]) -> MemberLayout:
        """Start a member the cluster has just been told about (MemberAdd):
        `members` is the cluster's (name, peer URL) list, the new one included
        (nameless until it starts). Saved in the layout, so it comes back on resume."""
        initial = ",".join(f"{name or planned.name}={url}" for name, url in members)
        m = dataclasses.replace(planned, initial_cluster=initial, initial_state="existing")
        self.layout = self.layout.with_member(m)
        self.layout.save(self.data_dir)
        self._start_member(m)
        return m

    def remove(self, name: str, timeout: float = 10.0) -> None:
        """After MemberRemove: stop the member's process and drop it from
        cluster.json, so a resume does not start it again. Its data directory
        and log are moved aside (`<name>.removed-<time>`): a later member may
        get the same name, and must not start from the removed one's data."""
        self.layout.member(name)           # KeyError for a name we do not run
        self._stop([name], timeout)
        self.layout = dataclasses.replace(self.layout,
                                          members=tuple(m for m in self.layout.members if m.name != name))
        self.layout.save(self.data_dir)
        self._procs.pop(name, None)
        self._killed.discard(name)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for path in (self.data_dir / f"{name}.data", self.log_path(name)):
            if path.exists():
                os.replace(path, path.with_name(f"{path.name}.removed-{stamp}"))

    def restart(self, name: str) -> None:
        if self.state(name) in ("running", "paused"):
            raise HostError(f"{name} is already running")
        self._start_member(self.layout.member(name))

    def kill(self, name: str) -> None:
        p = self._running(name)
        self._killed.add(name)
        p.kill()

    def pause(self, name: str) -> None:
        # Returns once the stop shows, so state() right after tells the truth.
        self._running(name).pause()

    def resume(self, name: str) -> None:
        self._running(name).resume()

    def stop_all(self, timeout: float = 10.0, *, strays: bool = False) -> list[str]:
        """Stop every member; with `strays`, also a process started by hand on
        a member's data dir since. Returns the names still running after the
        deadline (normally none)."""
        if strays:
            for name in self.names:
                self._adopt_by_data_dir(name)
        if self.stop_together:
            return self._stop(self.names, timeout)
        # One after another: an etcd leader told to stop hands leadership
        # to a live peer quickly, but waits in vain (7 s) if its peers
        # are dying with it.
        return [left for name in self.names for left in self._stop([name], timeout)]

    def _stop(self, names: list[str], timeout: float) -> list[str]:
        """SIGTERM the members named, then reap them against one deadline
        (SIGKILL after it); the names still alive after all that."""
        told = [(name, p) for name in names if (p := self._procs.get(name)) is not None and p.alive()]
        left = launch.stop([p for _, p in told], timeout)
        for name, p in told:
            if p not in left:
                (self.data_dir / f"{name}.pid").unlink(missing_ok=True)
        return [name for name, p in told if p in left]

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Until every running member accepts TCP connections on its client port."""
        deadline = time.monotonic() + timeout
        pending = [m for m in self.layout.members if self.state(m.name) == "running"]
        while pending:
            for m in list(pending):
                if not self._procs[m.name].alive():
                    # Its PID must not be adopted later (it could be reused).
                    (self.data_dir / f"{m.name}.pid").unlink(missing_ok=True)
                    raise HostError(f"{m.name} exited at start ({self._last_log_line(m.name)}); "
                                    f"see {self.log_path(m.name)}")
                if launch.listening(m.client_port, HOST):
                    pending.remove(m)
            if pending and time.monotonic() >= deadline:
                raise HostError(f"{[m.name for m in pending]} not listening after {timeout}s")
            if pending:
                time.sleep(0.05)  # poll interval

    # -------------------------------------------------------------- internals

    def _last_log_line(self, name: str) -> str:
        try:
            lines = self.log_path(name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][:160] if lines else "no output"

    def _running(self, name: str) -> MemberProcess:
        p = self._procs.get(name)
        if p is None or not p.alive():
            raise HostError(f"{name} is not running")
        return p

    def member_args(self, m: MemberLayout) -> list[str]:
        """etcd's flags for one member; raftnode takes the same ones."""
        return launch.member_flags(
            m.name, self.data_dir / f"{m.name}.data", m.client_url, m.peer_url,
            self.layout.initial_cluster_of(m), self.layout.token, state=m.initial_state,
            fault_injection=self.fault_injection) + (
            ["--listen-metrics-urls", m.metrics_url] if m.metrics_port else []) + self.extra_args

    def _adopt_by_data_dir(self, name: str) -> bool:
        """Adopt a live process running on this member's data dir that is not
        ours (started by hand, or by an earlier console); True if one was."""
        p = self._procs.get(name)
        if p is not None and p.alive():
            return False
        found = launch.find_by_data_dir(self.data_dir / f"{name}.data")
        if found is None:
            return False
        self._procs[name] = found
        self._killed.discard(name)
        (self.data_dir / f"{name}.pid").write_text(f"{found.pid}\n")
        return True

    def _start_member(self, m: MemberLayout) -> None:
        # A member left running by an earlier console (same PID file, same
        # data dir), or started by hand on its data dir: never a second one.
        adopted = launch.adopt(self.data_dir / f"{m.name}.pid", self.data_dir / f"{m.name}.data")
        if adopted is not None:
            self._procs[m.name] = adopted
            return
        if self._adopt_by_data_dir(m.name):
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            p = launch.spawn([*self.command, *self.member_args(m)], self.log_path(m.name),
                             detach=True, pid_file=self.data_dir / f"{m.name}.pid")
        except OSError as exc:
            raise HostError(f"cannot run {self.command[0]}: {exc.strerror or exc}") from None
        self._procs[m.name] = p
        self._killed.discard(m.name)


# ----------------------------------------------------------------- factories

def raftnode_host(data_dir: os.PathLike | str, size: int = 3) -> ProcessHost:
    command = raftnode_command()
    if command is None:
        raise HostError("host mode needs raftnode (engine.cli), which is not installed; "
                        "attach to running members with --endpoints h:p,...")
    return ProcessHost(data_dir, size, command, fault_injection=True, stop_together=True)


def etcd_host(data_dir: os.PathLike | str, size: int = 3, etcd_bin: str | None = None) -> ProcessHost:
    """The real etcd with the same flags (no fault injection): host mode testable today."""
    binary = etcd_bin or launch.etcd_binary()
    if binary is None or not os.access(binary, os.X_OK):
        raise HostError("etcd binary not found")
    return ProcessHost(data_dir, size, [binary], fault_injection=False, extra_args=launch.ETCD_LOG_FLAGS)
