"""What a test's server processes look like, for etcd and raftnode alike:
one member (ProcessMember) and a cluster of them (ProcessCluster), stopped by
PID, and stopped at interpreter exit if a test forgot."""
from __future__ import annotations

import atexit
import dataclasses
import pathlib
import subprocess
import threading
import weakref
from typing import IO

from engine.cli import launch
from engine.cli.launch import HOST, MemberProcess


@dataclasses.dataclass
class ProcessMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: pathlib.Path
    log_path: pathlib.Path
    proc: subprocess.Popen | None = None
    _log: IO[bytes] | None = dataclasses.field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """host:port, what grpc targets and etcdctl --endpoints accept."""
        return f"{HOST}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def process(self) -> MemberProcess | None:
        """The launcher's handle on proc (signals, stop)."""
        return MemberProcess(self.proc.pid, self.proc) if self.proc is not None else None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, limit: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "<no log>"
        return data[-limit:].decode("utf-8", "replace")


@dataclasses.dataclass(eq=False)   # identity: clusters live in a WeakSet
class ProcessCluster:
    members: list
    data_dir: pathlib.Path
    token: str

    @property
    def endpoints(self) -> list[str]:
        """["127.0.0.1:port", ...] -- one client endpoint per member."""
        return [m.endpoint for m in self.members]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def pids(self) -> list[int]:
        return [m.pid for m in self.members if m.pid is not None]

    def track(self) -> None:
        """Stop this cluster at interpreter exit if nobody did."""
        with _live_lock:
            _live.add(self)

    def stop_member(self, i: int, timeout: float = 10.0) -> None:
        """SIGTERM member i (running again first if paused), SIGKILL after `timeout`."""
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            launch.stop([m.process], timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every member by PID: SIGTERM, then SIGKILL after `timeout`. Idempotent.

        One after another, not all at once: a leader that gets SIGTERM first
        hands leadership to a live peer, which is quick; if its peers were
        dying at the same moment it would wait seconds for a transfer that
        cannot happen.
        """
        for i in range(len(self.members)):
            self.stop_member(i, timeout)
        for m in self.members:
            if m._log is not None:
                m._log.close()
                m._log = None
        _live.discard(self)

    def __enter__(self) -> "ProcessCluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_live: "weakref.WeakSet[ProcessCluster]" = weakref.WeakSet()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    for cluster in list(_live):
        try:
            cluster.stop(timeout=5.0)
        except Exception:  # noqa: BLE001 -- best effort at interpreter exit
            pass
