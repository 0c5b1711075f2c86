"""grpc_server_* and etcd_network_client_grpc_*: the interceptor counts what a
real client server answers (an in-process member with etcd's services),
unary and streaming, by etcd's labels and Go's code names."""
from __future__ import annotations

import asyncio
import re

import grpc
import pytest

from engine.api import add_services
from engine.http import HttpService
from engine.proto import rpc_pb2, rpc_pb2_grpc
from engine.server.kvserver import KVServer
from tests.server.inproc import InProcCluster, run
from tests.support.ports import free_port


def _value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in the metrics")


@pytest.mark.parametrize("how", ["registered", "interceptor"])
def test_rpcs_are_counted_by_method_type_and_code(tmp_path, how) -> None:
    """Counted the same whether the handlers are wrapped at registration
    (http.instrumented, what raftnode does: no per-call interceptor cost)
    or by the interceptor."""
    async def main() -> str:
        c = InProcCluster(str(tmp_path), 1)
        await c.start_all()
        node = await c.leader()
        http = HttpService(KVServer(node))
        if how == "interceptor":
            server = grpc.aio.server(interceptors=[http.grpc_interceptor])
            add_services(server, node)
        else:
            server = grpc.aio.server()
            add_services(http.instrumented(server), node)
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v" * 100))
                await kv.Range(rpc_pb2.RangeRequest(key=b"k"))
                try:
                    await kv.Put(rpc_pb2.PutRequest(key=b""))
                except grpc.aio.AioRpcError as e:
                    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
                watch = rpc_pb2_grpc.WatchStub(ch).Watch()
                await watch.write(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k")))
                created = await watch.read()
                assert created.created
                await kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"2"))
                event = await watch.read()
                assert event.events
                watch.cancel()
            # The server learns of the cancel a moment later.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:
                text = (await http.metrics.render()).decode()
                if re.search(r'^grpc_server_handled_total\{[^}]*grpc_method="Watch"[^}]*\} [1-9]', text,
                             re.M) or loop.time() > deadline:
                    return text
                await asyncio.sleep(0.02)
        finally:
            await server.stop(0)
            await http.stop()
            await c.stop_all()

    text = run(main())
    kv = dict(grpc_service="etcdserverpb.KV", grpc_type="unary")
    assert _value(text, "grpc_server_started_total", grpc_method="Put", **kv) == 3
    assert _value(text, "grpc_server_handled_total", grpc_method="Put", grpc_code="OK", **kv) == 2
    assert _value(text, "grpc_server_handled_total", grpc_method="Put", grpc_code="InvalidArgument",
                  **kv) == 1
    assert _value(text, "grpc_server_handled_total", grpc_method="Range", grpc_code="OK", **kv) == 1
    assert _value(text, "grpc_server_msg_received_total", grpc_method="Range", **kv) == 1
    assert _value(text, "grpc_server_msg_sent_total", grpc_method="Range", **kv) == 1
    w = dict(grpc_service="etcdserverpb.Watch", grpc_method="Watch", grpc_type="bidi_stream")
    assert _value(text, "grpc_server_started_total", **w) == 1
    assert _value(text, "grpc_server_msg_received_total", **w) == 1
    assert _value(text, "grpc_server_msg_sent_total", **w) >= 2
    assert _value(text, "grpc_server_handled_total", grpc_code="Canceled", **w) == 1
    # Bytes: at least the three puts' and the range's payloads.
    assert _value(text, "etcd_network_client_grpc_received_bytes_total") > 100
    assert _value(text, "etcd_network_client_grpc_sent_bytes_total") > 100
    # Series etcd initialises at 0 are there before any call.
    assert _value(text, "grpc_server_handled_total", grpc_service="etcdserverpb.Lease",
                  grpc_method="LeaseGrant", grpc_type="unary", grpc_code="Unavailable") == 0
