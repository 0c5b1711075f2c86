"""A fresh local cluster for a benchmark: raftnode (this checkout) or the real etcd.

    with start_cluster("etcd", workdir) as c:
        ... c.endpoints, c.leader_endpoint() ...

Members are started, signalled and stopped by engine.cli.launch, the launcher
the console's host mode and the tests use; each gets SIGTERM if the benchmark
dies. Start-up waits until every member listens and one of them leads.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time
import uuid
from typing import Sequence

import grpc

from engine.cli import launch
from engine.proto import rpc_pb2, rpc_pb2_grpc

ROOT = pathlib.Path(__file__).resolve().parents[1]


def etcdctl_binary() -> str | None:
    found = shutil.which("etcdctl") or "/usr/bin/etcdctl"
    return found if os.access(found, os.X_OK) else None


def etcdctl(endpoints: Sequence[str], *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`etcdctl --endpoints=... args` (API 3), output captured as text."""
    return subprocess.run([etcdctl_binary() or "etcdctl", f"--endpoints={','.join(endpoints)}", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=launch.clean_env({"ETCDCTL_API": "3"}))


class BenchCluster:
    def __init__(self, kind: str, root: os.PathLike | str, size: int = 3, *,
                 fault_injection: bool = False, extra_args: Sequence[str] = ()) -> None:
        self.kind = kind
        self.root = pathlib.Path(root)
        ports = launch.free_ports(2 * size)
        self.names = [f"n{i + 1}" for i in range(size)]
        self.client_ports = ports[0::2]
        self.peer_ports = ports[1::2]
        self.token = f"raftui-bench-{uuid.uuid4().hex[:12]}"
        self.fault_injection = fault_injection and kind == "raftnode"
        self.extra_args = list(extra_args)
        self.procs: list[launch.MemberProcess] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"{launch.HOST}:{p}" for p in self.client_ports]

    def data_dir(self, name: str) -> pathlib.Path:
        return self.root / f"{name}.data"

    def _url(self, port: int) -> str:
        return f"http://{launch.HOST}:{port}"

    def start(self, timeout: float = 30.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        initial = ",".join(f"{n}={self._url(p)}" for n, p in zip(self.names, self.peer_ports))
        env, cwd = None, None
        if self.kind == "etcd":
            command = [launch.etcd_binary() or "etcd"]
            tail = [*launch.ETCD_LOG_FLAGS, *self.extra_args]
        else:
            command = launch.raftnode_command(installed_script=False) or ["raftnode"]
            tail = list(self.extra_args)
            env = launch.clean_env({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
            cwd = ROOT
        for name, cport, pport in zip(self.names, self.client_ports, self.peer_ports):
            flags = launch.member_flags(name, self.data_dir(name), self._url(cport), self._url(pport),
                                        initial, self.token, fault_injection=self.fault_injection)
            self.procs.append(launch.spawn([*command, *flags, *tail], self.root / f"{name}.log",
                                           env=env, cwd=cwd, die_with_parent=True))
        deadline = time.monotonic() + timeout
        while self.leader_endpoint() is None:
            dead = [n for n, p in zip(self.names, self.procs) if not p.alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind}: no leader after {timeout}s (exited: {dead}); "
                                   f"logs in {self.root}")
            time.sleep(0.1)  # poll interval

    def leader_endpoint(self) -> str | None:
        """The endpoint of the member whose Status says it leads; None if none does."""
        for ep, port in zip(self.endpoints, self.client_ports):
            if not launch.listening(port):
                continue
            try:
                with grpc.insecure_channel(ep) as ch:
                    s = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=1)
            except grpc.RpcError:
                continue
            if s.leader and s.leader == s.header.member_id:
                return ep
        return None

    def stop(self, timeout: float = 10.0) -> None:
        # One after another: an etcd leader told to stop hands leadership to
        # a live peer quickly, but waits in vain if its peers die with it.
        for p in self.procs:
            launch.stop([p], timeout)

    def __enter__(self) -> "BenchCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(kind: str, root: os.PathLike | str, size: int = 3, **kw) -> BenchCluster:
    """A started `size`-member cluster of `kind` ("raftnode" or "etcd"), with a leader."""
    c = BenchCluster(kind, root, size, **kw)
    try:
        c.start()
    except BaseException:
        c.stop()
        raise
    return c
