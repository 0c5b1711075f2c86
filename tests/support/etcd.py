"""Run real etcd (the judge) for interoperability tests.

    cluster = start_etcd_cluster(tmp_dir, size=3)
    try:
        etcdctl(cluster.endpoints, "put", "k", "v", check=True)
    finally:
        cluster.stop()

or ``with start_etcd_cluster(tmp_dir) as cluster: ...``.

Every member runs on free 127.0.0.1 ports with its data and log under the
given directory. Start-up waits, with a deadline, until every member answers
/health; stop terminates each process by its PID and kills it after a
deadline. Clusters still running when the interpreter exits are stopped by an
atexit hook, and each member also gets SIGTERM if the process that started it
dies (Linux PR_SET_PDEATHSIG), so a crashed test run leaves no etcd behind.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Iterable, Sequence

from engine.cli import launch

from . import ports, require
from .member import ProcessCluster, ProcessMember

HOST = ports.HOST
ETCDCTL_TIMEOUT = 30.0


class EtcdError(RuntimeError):
    """A real etcd cluster could not be started."""


@dataclasses.dataclass
class EtcdMember(ProcessMember):
    def healthy(self, timeout: float = 1.0) -> bool:
        """True when this member's /health says so (it has a leader and can read)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.client_url}/health", timeout=timeout) as resp:
                body = json.loads(resp.read() or b"{}")
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return str(body.get("health")).lower() == "true"


@dataclasses.dataclass(eq=False)
class EtcdCluster(ProcessCluster):
    members: list[EtcdMember]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Poll until every running member is healthy; raise EtcdError at the deadline."""
        deadline = time.monotonic() + timeout
        pending = [m for m in self.members]
        while True:
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:
                    raise EtcdError(
                        f"etcd member {m.name} (pid {m.pid}) exited with {m.proc.returncode}:\n"
                        f"{m.log_tail()}"
                    )
            pending = [m for m in pending if not m.healthy(timeout=0.5)]
            if not pending:
                return
            if time.monotonic() >= deadline:
                tails = "\n".join(f"--- {m.name}:\n{m.log_tail()}" for m in pending)
                raise EtcdError(
                    f"etcd members {[m.name for m in pending]} not healthy after {timeout}s\n{tails}"
                )
            time.sleep(0.05)  # poll interval, not synchronisation

    @staticmethod
    def _stop_member(m: EtcdMember, timeout: float) -> None:
        """Stop one member (tests/judge stops the members it started itself)."""
        if m.proc is not None and m.proc.poll() is None:
            launch.stop([m.process], timeout)


# ETCD_* / ETCDCTL_* in the caller's environment would silently override flags.
_clean_env = launch.clean_env


def start_etcd_cluster(
    data_dir: os.PathLike | str,
    size: int = 1,
    *,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
    etcd_bin: str | None = None,
) -> EtcdCluster:
    """Start a fresh `size`-member etcd cluster with data under `data_dir`; wait until healthy.

    `extra_args` go to every member (e.g. ``["--quota-backend-bytes=1048576"]``).
    On any failure every process started so far is stopped before raising.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    binary = etcd_bin or require.etcd_path()
    if binary is None:
        raise EtcdError("etcd binary not found")
    root = pathlib.Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    allocated = ports.free_ports(2 * size)
    token = f"raftui-test-{uuid.uuid4().hex[:12]}"
    members = [
        EtcdMember(
            name=f"etcd{i}",
            client_port=allocated[2 * i],
            peer_port=allocated[2 * i + 1],
            data_dir=root / f"etcd{i}.data",
            log_path=root / f"etcd{i}.log",
        )
        for i in range(size)
    ]
    initial_cluster = ",".join(f"{m.name}={m.peer_url}" for m in members)
    cluster = EtcdCluster(members=members, data_dir=root, token=token)
    cluster.track()
    try:
        for m in members:
            args = [binary, *launch.member_flags(m.name, m.data_dir, m.client_url, m.peer_url,
                                                 initial_cluster, token),
                    *launch.ETCD_LOG_FLAGS, *extra_args]
            m.proc = launch.spawn(args, m.log_path, die_with_parent=True).popen
        cluster.wait_healthy(timeout=timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def etcdctl(
    endpoints: Iterable[str] | str,
    *args: str,
    input: str | bytes | None = None,
    timeout: float = ETCDCTL_TIMEOUT,
    check: bool = False,
    text: bool = True,
    env: dict[str, str] | None = None,
    etcdctl_bin: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``etcdctl --endpoints=<endpoints> <args...>`` with ETCDCTL_API=3.

    Returns the CompletedProcess (stdout/stderr captured, str unless text=False).
    With check=True a non-zero exit raises CalledProcessError. A hung etcdctl is
    killed after `timeout` seconds (subprocess.TimeoutExpired).
    """
    binary = etcdctl_bin or require.etcdctl_path()
    if binary is None:
        raise EtcdError("etcdctl binary not found")
    eps = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
    if isinstance(input, str) and not text:
        input = input.encode()
    elif isinstance(input, bytes) and text:
        input = input.decode()
    return subprocess.run(
        [binary, f"--endpoints={eps}", *args],
        input=input,
        capture_output=True,
        text=text,
        timeout=timeout,
        check=check,
        env=_clean_env({"ETCDCTL_API": "3", **(env or {})}),
    )
