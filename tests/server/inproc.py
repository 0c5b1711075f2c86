"""Several Nodes in one event loop, each with its real peer gRPC server on
127.0.0.1 and its real data dir: for testing the server layer below the
etcd API. (Whole raftnode processes are tested in tests/judge and tests/api.)"""
from __future__ import annotations

import asyncio
import time

from engine.cli.flags import parse_args
from engine.proto import internal_pb2, rpc_pb2
from engine.server.node import Node
from engine.transport import add_peer_service, make_server
from engine.transport.transport import peer_port
from tests.support.ports import free_port


def run(coro):
    return asyncio.run(coro)


class InProcCluster:
    def __init__(self, data_dir: str, size: int = 3, *, extra: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.names = [f"n{i}" for i in range(1, size + 1)]
        self.peer_ports = {n: free_port() for n in self.names}
        self.nodes: dict[str, Node] = {}
        self.servers: dict[str, object] = {}

    def initial_cluster(self) -> str:
        return ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)

    def args(self, name: str, state: str = "new") -> list[str]:
        p = self.peer_ports[name]
        return ["--name", name, "--data-dir", f"{self.data_dir}/{name}",
                "--listen-peer-urls", f"http://127.0.0.1:{p}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                "--listen-client-urls", "http://127.0.0.1:1",  # no client server in these tests
                "--advertise-client-urls", "http://127.0.0.1:1",
                "--initial-cluster", self.initial_cluster(), "--initial-cluster-state", state,
                "--heartbeat-interval", "50", "--election-timeout", "500", *self.extra]

    async def start(self, name: str, state: str = "new") -> Node:
        node = Node(parse_args(self.args(name, state)))
        await node.start()
        # The peer port as raftnode serves it (engine/cli/main.py): the
        # plain-TCP raft streams in front of the peer gRPC server.
        server = make_server()
        add_peer_service(server, node.transport)
        internal = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        front = peer_port(node.transport, internal)
        await front.listen("127.0.0.1", self.peer_ports[name])
        self.nodes[name], self.servers[name] = node, (front, server)
        return node

    async def start_all(self) -> None:
        for n in self.names:
            await self.start(n)

    async def stop(self, name: str) -> None:
        node, (front, server) = self.nodes.pop(name), self.servers.pop(name)
        await front.close()
        await server.stop(0)
        await node.stop()

    async def stop_all(self) -> None:
        for n in list(self.nodes):
            await self.stop(n)

    async def leader(self, timeout: float = 10.0) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.nodes.values():
                if n.is_leader and all(m.leader_id == n.member_id for m in self.nodes.values()):
                    return n
            await asyncio.sleep(0.02)
        raise AssertionError("no agreed leader: " + ", ".join(repr(n.rn.raft) for n in self.nodes.values()))


async def put(node: Node, key: bytes, value: bytes, timeout: float = 5.0):
    return await node.propose(internal_pb2.InternalRequest(put=rpc_pb2.PutRequest(key=key, value=value)), timeout)


async def get(node: Node, key: bytes) -> bytes | None:
    await node.read_barrier(5.0)
    r = node.applier.kv.range(rpc_pb2.RangeRequest(key=key))
    return r.kvs[0].value if r.kvs else None


async def eventually(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout}s")
