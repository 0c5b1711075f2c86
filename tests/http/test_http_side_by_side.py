"""/health, /version and /metrics: raftnode's HTTP surface beside real etcd 3.4.23.

One real etcd (1 member, with --listen-metrics-urls) and one in-process
raftnode member with the same listeners answer the same requests; status,
the headers that matter and the body must be equal, in each state we can
make on both: healthy, a NOSPACE alarm (raised through Maintenance.Alarm
ACTIVATE on etcd, through the log on ours), the alarm excluded with
?exclude=NOSPACE, and no leader (a 2-member cluster with one member
stopped, in test_no_leader). /metrics: every metric we export has etcd's
type, label names and (histograms) buckets.
"""
from __future__ import annotations

import json
import re
import time

import grpc
import pytest

from engine.proto import internal_pb2, rpc_pb2, rpc_pb2_grpc
from engine.server.kvserver import KVServer
from tests.http.grafana_check import load_reference
from tests.http.member import HttpMembers, fetch
from tests.support import etcd as support_etcd

# Headers whose presence and value must match (Date, Content-Length vary or follow).
COMPARED = ("content-type", "x-content-type-options", "allow", "access-control-allow-origin",
            "access-control-allow-methods", "access-control-allow-headers")


def _norm(resp) -> tuple:
    status, headers, body = resp
    h = {k.lower(): v for k, v in headers.items() if k.lower() in COMPARED}
    return status, h, body


def _pairs(etcd, ours, path: str, method: str = "GET", metrics: bool = False):
    e_base = etcd.metrics_url if metrics else etcd.client_urls[0]
    o_base = ours.metrics_url["n1"] if metrics else ours.client_url["n1"]
    return _norm(fetch(e_base + path, method)), _norm(fetch(o_base + path, method))


def _health_counts(url: str) -> tuple[float, float]:
    text = fetch(url + "/metrics")[2].decode()
    get = lambda n: float(re.search(rf"^{n} (\S+)$", text, re.M).group(1))  # noqa: E731
    return get("etcd_server_health_success"), get("etcd_server_health_failures")


def _etcd_alarm(etcd, action) -> None:
    with grpc.insecure_channel(etcd.endpoints[0]) as ch:
        stub = rpc_pb2_grpc.MaintenanceStub(ch)
        member = stub.Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id
        stub.Alarm(rpc_pb2.AlarmRequest(action=action, memberID=member, alarm=rpc_pb2.NOSPACE),
                   timeout=10)


def _our_alarm(ours, action) -> None:
    kvs = KVServer(ours.node())
    req = internal_pb2.InternalRequest(alarm=rpc_pb2.AlarmRequest(
        action=action, memberID=kvs.member_id, alarm=rpc_pb2.NOSPACE))
    ours.lt.call(kvs.propose(req, 10.0))


def test_health_and_version_as_etcd(etcd, ours) -> None:
    for path, method, metrics in (("/health", "GET", False), ("/health", "GET", True),
                                  ("/health?serializable=true", "GET", False),
                                  ("/health", "POST", False), ("/health", "PUT", True),
                                  ("/version", "GET", False), ("/version", "POST", False),
                                  ("/version", "GET", True), ("/nothing", "GET", False),
                                  ("/nothing", "GET", True), ("/health", "OPTIONS", False)):
        e, o = _pairs(etcd, ours, path, method, metrics)
        assert o == e, (path, method, metrics)
    status, _, body = fetch(ours.client_url["n1"] + "/version")
    assert json.loads(body) == {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}


def test_health_with_nospace_alarm_as_etcd(etcd, ours) -> None:
    _etcd_alarm(etcd, rpc_pb2.AlarmRequest.ACTIVATE)
    _our_alarm(ours, rpc_pb2.AlarmRequest.ACTIVATE)
    try:
        before = _health_counts(etcd.metrics_url), _health_counts(ours.metrics_url["n1"])
        for path in ("/health", "/health?serializable=true"):
            e, o = _pairs(etcd, ours, path)
            assert e[0] == 503 and e[2] == b'{"health":"false"}\n'
            assert o == e, path
        # etcd 3.4.23 answers an alarm before counting the check.
        after = _health_counts(etcd.metrics_url), _health_counts(ours.metrics_url["n1"])
        assert after[0] == before[0] and after[1] == before[1]
        e, o = _pairs(etcd, ours, "/health?exclude=NOSPACE")
        assert e[0] == 200 and o == e
    finally:
        _etcd_alarm(etcd, rpc_pb2.AlarmRequest.DEACTIVATE)
        _our_alarm(ours, rpc_pb2.AlarmRequest.DEACTIVATE)
    e, o = _pairs(etcd, ours, "/health")
    assert e[0] == 200 and o == e


def _families(text: str) -> dict[str, tuple[str, set[frozenset[str]], set[str]]]:
    """name -> (type, label-name sets of its samples, histogram le values)."""
    out: dict[str, tuple[str, set, set]] = {}
    for name, typ in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        out[name] = (typ, set(), set())
    for name, labels in re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*?)\})? \S+$", text, re.M):
        fam = name if name in out else re.sub(r"_(bucket|sum|count)$", "", name)
        if fam not in out:
            continue
        pairs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        if name.endswith("_bucket"):
            out[fam][2].add(pairs.pop("le"))
        out[fam][1].add(frozenset(pairs))
    return out


def _same_families(ours: str, etcds: str) -> dict:
    """Every family in our text is etcd's, with its type, label names and buckets."""
    mine, theirs = _families(ours), _families(etcds)
    recorded = load_reference()
    for name, (typ, label_sets, buckets) in mine.items():
        if name not in theirs:
            # etcd writes some families only later (peer RTT 5 s after a peer
            # appears, send failures after one): its recorded table then says.
            sample = name + "_bucket" if typ == "histogram" else name
            assert sample in recorded, f"{name} is not one of etcd 3.4.23's metrics"
            assert recorded[sample] == (typ, frozenset().union(*label_sets)), name
            continue
        e_typ, e_label_sets, e_buckets = theirs[name]
        assert typ == e_typ, name
        assert label_sets <= e_label_sets or {frozenset(x) for x in label_sets} == {
            frozenset(x) for x in e_label_sets}, name
        assert buckets == e_buckets, name
    return mine


def test_metrics_have_etcd_names_types_labels_and_buckets(etcd, ours) -> None:
    status, headers, body = fetch(ours.metrics_url["n1"] + "/metrics")
    e_status, e_headers, e_body = fetch(etcd.metrics_url + "/metrics")
    assert status == e_status == 200
    assert headers["Content-Type"] == e_headers["Content-Type"]
    mine = _same_families(body.decode(), e_body.decode())
    assert len(mine) >= 30
    for required in ("etcd_server_has_leader", "etcd_server_is_leader",
                     "etcd_server_leader_changes_seen_total", "etcd_server_proposals_committed_total",
                     "etcd_server_proposals_applied_total", "etcd_server_proposals_pending",
                     "etcd_server_proposals_failed_total", "etcd_server_slow_apply_total",
                     "etcd_server_heartbeat_send_failures_total", "etcd_server_quota_backend_bytes",
                     "etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
                     "etcd_debugging_mvcc_keys_total", "etcd_disk_wal_fsync_duration_seconds",
                     "etcd_disk_backend_commit_duration_seconds", "grpc_server_started_total",
                     "grpc_server_handled_total", "etcd_network_client_grpc_received_bytes_total",
                     "etcd_network_client_grpc_sent_bytes_total", "process_cpu_seconds_total",
                     "process_resident_memory_bytes", "process_open_fds", "etcd_server_health_success"):
        assert required in mine, required
    # The gRPC series are etcd's, method for method (etcd adds grpc.health.v1.Health).
    started = lambda t: set(re.findall(r"^grpc_server_started_total\{(.*)\} ", t, re.M))  # noqa: E731
    theirs_started = {s for s in started(e_body.decode()) if "grpc.health.v1" not in s}
    assert started(body.decode()) == theirs_started
    text = body.decode()
    assert re.search(r"^etcd_server_has_leader 1(\.0)?$", text, re.M)
    assert re.search(r"^etcd_server_is_leader 1(\.0)?$", text, re.M)
    assert re.search(r'^etcd_server_version\{server_version="3.4.23"\} 1(\.0)?$', text, re.M)


@pytest.fixture
def etcd2(etcd_binaries, tmp_path):
    cluster = support_etcd.start_etcd_cluster(
        tmp_path / "etcd2", size=2, extra_args=["--heartbeat-interval=50", "--election-timeout=500"])
    try:
        yield cluster
    finally:
        cluster.stop()


def _wait_status(url: str, status: int, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        resp = fetch(url + "/health")
        if resp[0] == status or time.monotonic() > deadline:
            return resp
        time.sleep(0.05)  # poll interval, not synchronisation


def test_health_without_leader_as_etcd(etcd2, tmp_path) -> None:
    ours = HttpMembers(str(tmp_path / "ours2"), 2).start()
    try:
        url = etcd2.client_urls[0]
        # Two members: the peer metrics too (when we export them) are etcd's.
        _same_families(fetch(ours.client_url["n1"] + "/metrics")[2].decode(),
                       fetch(url + "/metrics")[2].decode())
        etcd2.stop_member(1)
        ours.stop_member("n2")
        e = _norm(_wait_status(url, 503))
        o = _norm(_wait_status(ours.client_url["n1"], 503))
        assert e[0] == 503 and e[2] == b'{"health":"false"}\n'
        assert o == e
        # etcd counts a check that found no leader as a failure; so do we.
        e_fail, o_fail = (fetch(url + "/metrics")[2], fetch(ours.client_url["n1"] + "/metrics")[2])
        for text in (e_fail.decode(), o_fail.decode()):
            assert re.search(r"^etcd_server_health_failures [1-9]", text, re.M)
            assert re.search(r"^etcd_server_has_leader 0(\.0)?$", text, re.M)
        e, o = (_norm(fetch(url + "/health?serializable=true")),
                _norm(fetch(ours.client_url["n1"] + "/health?serializable=true")))
        assert o == e and e[0] == 503
    finally:
        ours.stop()
