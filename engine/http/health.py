"""/health and /version as etcd 3.4.23 answers them (etcdserver/api/etcdhttp).

/health (GET only, else 405 with `Allow: GET`):
  * an active alarm -> 503 {"health":"false"} (not counted in the health
    metrics, as 3.4.23 returns before counting); `?exclude=NOSPACE` (a
    repeatable alarm name) ignores that alarm;
  * no leader -> 503 {"health":"false"}, counted in etcd_server_health_failures;
  * else a read through the log (etcd's QGET: here a ReadIndex barrier,
    at most 1 s); `?serializable=true` skips it (a local check);
  * 200 {"health":"true"} (no newline), counted in etcd_server_health_success.
  The 503 body is written as Go's http.Error writes it: text/plain, nosniff,
  a newline after the JSON.
/version (GET only): {"etcdserver":"3.4.23","etcdcluster":"3.4.0"}, JSON.
Measured against etcd 3.4.23 (tests/http/test_http_side_by_side.py).
"""
from __future__ import annotations

import json
import logging

from engine.api.maintenance import VERSION
from engine.proto import rpc_pb2
from engine.server.kvserver import KVServer

from .metrics import ServerCollector
from .server import Request, Response

log = logging.getLogger("engine.http")

CLUSTER_VERSION = "3.4.0"
HEALTH_READ_TIMEOUT = 1.0   # etcd's QGET deadline
ALARM_NAMES = {v.number: v.name for v in rpc_pb2.AlarmType.DESCRIPTOR.values}

_TRUE = b'{"health":"true"}'
_FALSE = '{"health":"false"}'


def method_not_allowed(*allowed: str) -> Response:
    return Response.text(405, "Method Not Allowed", ("Allow", ", ".join(allowed)))


async def check_health(kvs: KVServer, excluded: set[str], serializable: bool) -> tuple[bool, str, bool]:
    """(healthy, why not, counted in the health metrics)."""
    for member, alarm in kvs.alarms():
        name = ALARM_NAMES.get(alarm, str(alarm))
        if name in excluded:
            continue
        return False, f"alarm {name} on member {member:x}", False
    if not kvs.leader_id:
        return False, "no leader", True
    if not serializable:
        try:
            await kvs.read_barrier(HEALTH_READ_TIMEOUT)
        except Exception as e:   # timed out, stopped, ...
            return False, f"read failed: {e}", True
    return True, "", True


async def health(kvs: KVServer, counters: ServerCollector, req: Request) -> Response:
    if req.method != "GET":
        return method_not_allowed("GET")
    query = req.query
    excluded = set(query.get("exclude", ()))
    serializable = query.get("serializable", [""])[0] == "true"
    ok, why, counted = await check_health(kvs, excluded, serializable)
    if counted:
        if ok:
            counters.health_success += 1
        else:
            counters.health_failures += 1
    if ok:
        return Response(200, _TRUE, [("Content-Type", "text/plain; charset=utf-8")])
    log.warning("/health error: %s (status code 503)", why)
    return Response.text(503, _FALSE)


def version(req: Request) -> Response:
    if req.method != "GET":
        return method_not_allowed("GET")
    body = json.dumps({"etcdserver": VERSION, "etcdcluster": CLUSTER_VERSION},
                      separators=(",", ":")).encode()
    return Response(200, body, [("Content-Type", "application/json")])
