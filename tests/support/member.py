"""What a test's server process looks like, for etcd and raftnode alike."""
from __future__ import annotations

import dataclasses
import pathlib
import subprocess
from typing import IO

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
