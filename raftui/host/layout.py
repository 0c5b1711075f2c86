"""The hosted cluster's shape, persisted in its data directory.

`cluster.json` keeps the names, ports and cluster token chosen on the first
start, so starting raftui again on the same directory brings back the same
members on the same ports, with their data (etcd and raftnode ignore the
--initial-cluster flags once a member's data dir exists).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import uuid

from engine.cli.launch import free_ports

HOST = "127.0.0.1"
LAYOUT_FILE = "cluster.json"


@dataclasses.dataclass(frozen=True)
class MemberLayout:
    name: str
    client_port: int
    peer_port: int
    # A member added later (a learner) joins an existing cluster with the
    # member list the cluster gave when it was added.
    initial_cluster: str = ""
    initial_state: str = "new"
    # /metrics and /health (--listen-metrics-urls), for the Rates panel; 0:
    # none (a cluster.json written before metrics URLs existed).
    metrics_port: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}" if self.metrics_port else ""

    @property
    def client_url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"


@dataclasses.dataclass(frozen=True)
class ClusterLayout:
    token: str
    members: tuple[MemberLayout, ...]

    def initial_cluster_of(self, m: MemberLayout) -> str:
        return m.initial_cluster or self.initial_cluster

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members if m.initial_state == "new")

    def with_member(self, m: MemberLayout) -> "ClusterLayout":
        return dataclasses.replace(self, members=self.members + (m,))

    def next_name(self) -> str:
        taken = {m.name for m in self.members}
        return next(f"n{i}" for i in range(1, len(taken) + 2) if f"n{i}" not in taken)

    def member(self, name: str) -> MemberLayout:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def save(self, data_dir: pathlib.Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        body = {"token": self.token, "members": [dataclasses.asdict(m) for m in self.members]}
        tmp = data_dir / (LAYOUT_FILE + ".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        os.replace(tmp, data_dir / LAYOUT_FILE)

    @classmethod
    def load(cls, data_dir: pathlib.Path) -> "ClusterLayout | None":
        path = data_dir / LAYOUT_FILE
        if not path.exists():
            return None
        body = json.loads(path.read_text())
        fields = {f.name for f in dataclasses.fields(MemberLayout)}
        return cls(body["token"], tuple(MemberLayout(**{k: v for k, v in m.items() if k in fields})
                                        for m in body["members"]))

    @classmethod
    def new(cls, size: int) -> "ClusterLayout":
        ports = free_ports(3 * size)
        members = tuple(
            MemberLayout(f"n{i + 1}", ports[3 * i], ports[3 * i + 1], metrics_port=ports[3 * i + 2])
            for i in range(size)
        )
        return cls(f"raftui-{uuid.uuid4().hex[:12]}", members)


def default_data_dir() -> pathlib.Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return pathlib.Path(base) / "raftui" / "cluster"
