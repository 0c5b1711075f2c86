"""A real raftnode process with --listen-metrics-urls (http) and
--listen-client-http-urls (https, the member's client TLS files, a CA file so
client certificates are required, as etcd requires them): what a scraper, a
load balancer and a gateway client see after a write through etcdctl."""
from __future__ import annotations

import json
import re
import ssl
import subprocess
import time
import urllib.request

import pytest

from tests.http.member import fetch
from tests.support import raftnode as support_raftnode
from tests.support.etcd import etcdctl
from tests.support.ports import free_ports


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki-http")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=raftui-http-ca", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=member", "-keyout", "m.key",
             "-out", "m.csr", cwd=d)
    _openssl("x509", "-req", "-in", "m.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "m.crt", cwd=d)
    return d


def _https(url: str, certs, *, client_cert: bool = True, method: str = "GET", data: bytes | None = None):
    ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(str(certs / "m.crt"), str(certs / "m.key"))
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx),
                                         urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, method=method, data=data), timeout=10) as r:
        return r.status, r.read()


def _value(text: str, pattern: str) -> float:
    m = re.search(rf"^{pattern} (\S+)$", text, re.M)
    assert m, pattern
    return float(m.group(1))


def test_metrics_and_https_gateway_on_a_raftnode_process(tmp_path, certs) -> None:
    metrics_port, http_port = free_ports(2)
    metrics, client_http = f"http://127.0.0.1:{metrics_port}", f"https://127.0.0.1:{http_port}"
    cluster = support_raftnode.start_raftnode_cluster(
        tmp_path, 1, fault_injection=False,
        extra_args=[f"--listen-metrics-urls={metrics}", f"--listen-client-http-urls={client_http}",
                    f"--cert-file={certs}/m.crt", f"--key-file={certs}/m.key",
                    f"--trusted-ca-file={certs}/ca.crt"])
    with cluster:
        r = etcdctl(cluster.endpoints, "put", "k", "v", timeout=20)
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 20
        while True:   # the client HTTP listener opens once the member serves clients
            try:
                status, body = _https(client_http + "/health", certs)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)   # poll interval, not synchronisation
        assert (status, body) == (200, b'{"health":"true"}')
        assert _https(client_http + "/version", certs)[1] == b'{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}'
        status, body = _https(client_http + "/v3/kv/range", certs, method="POST", data=b'{"key":"aw=="}')
        assert status == 200 and json.loads(body)["kvs"][0]["value"] == "dg=="
        with pytest.raises(OSError):   # no client certificate: the handshake fails
            _https(client_http + "/health", certs, client_cert=False)

        # The metrics listener: /metrics and /health, nothing else.
        assert fetch(metrics + "/health")[:3:2] == (200, b'{"health":"true"}')
        assert fetch(metrics + "/version")[0] == 404
        text = fetch(metrics + "/metrics")[2].decode()
        assert _value(text, "etcd_server_has_leader") == 1
        assert _value(text, "etcd_server_leader_changes_seen_total") >= 1
        assert _value(text, "etcd_debugging_mvcc_keys_total") == 1
        assert _value(text, "etcd_disk_wal_fsync_duration_seconds_count") >= 1
        assert _value(text, "etcd_disk_backend_commit_duration_seconds_count") >= 1
        assert _value(text, 'grpc_server_handled_total{grpc_code="OK",grpc_method="Put",'
                            'grpc_service="etcdserverpb.KV",grpc_type="unary"}') == 1
        assert _value(text, "etcd_server_proposals_applied_total") >= 2
        assert _value(text, "process_resident_memory_bytes") > 0

        # The console's scraper over https with the client's TLS files (etcd 3.4
        # serves /metrics on its https client URL the same way).
        import asyncio

        from raftui.source import metrics as console_metrics
        from raftui.source.connection import TlsFiles
        tls = TlsFiles(str(certs / "ca.crt"), str(certs / "m.crt"), str(certs / "m.key"))
        ep = cluster.endpoints[0]

        async def scrape_twice():
            poller = console_metrics.MetricsPoller({ep: client_http + "/metrics"}, tls=tls)
            await poller.poll([ep], deadline=5.0)
            return await poller.poll([ep], deadline=5.0)
        r = asyncio.run(scrape_twice())[ep]
        assert r.note == "" and r.wal_fsync is not None and r.backend_commit is not None
        without = asyncio.run(console_metrics.MetricsPoller({ep: client_http + "/metrics"}).poll([ep], 5.0))[ep]
        assert without.note.startswith("metrics: TLS with 127.0.0.1:"), without.note   # our CA is not trusted
        assert without.wal_fsync is None
