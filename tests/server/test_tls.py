"""TLS on both ports: three raftnode processes with https client and peer
URLs (etcd's --cert-file ... --peer-*-file flags), judged by etcdctl over TLS."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from engine.cli import launch
from tests.support.etcd import etcdctl
from tests.support.ports import free_ports
from tests.support.require import require_etcd


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=raftui-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                               "extendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=member", "-keyout", "m.key", "-out", "m.csr", cwd=d)
    _openssl("x509", "-req", "-in", "m.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.cnf", "-out", "m.crt", cwd=d)
    return d


def test_three_members_over_tls_with_client_cert_auth(tmp_path, certs):
    require_etcd()
    ports = free_ports(6)
    names = ["t1", "t2", "t3"]
    ic = ",".join(f"{n}=https://127.0.0.1:{ports[3 + i]}" for i, n in enumerate(names))
    tls = [f"--cert-file={certs}/m.crt", f"--key-file={certs}/m.key", f"--trusted-ca-file={certs}/ca.crt",
           "--client-cert-auth", f"--peer-cert-file={certs}/m.crt", f"--peer-key-file={certs}/m.key",
           f"--peer-trusted-ca-file={certs}/ca.crt", "--peer-client-cert-auth"]
    procs = []
    try:
        for i, n in enumerate(names):
            client, peer = f"https://127.0.0.1:{ports[i]}", f"https://127.0.0.1:{ports[3 + i]}"
            log = open(tmp_path / f"{n}.log", "w")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "engine", "--name", n, "--data-dir", str(tmp_path / n),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", ic, "--initial-cluster-token", "tls-test", *tls],
                stdout=log, stderr=subprocess.STDOUT))
        eps = ",".join(f"127.0.0.1:{p}" for p in ports[:3])
        auth = ["--cacert", f"{certs}/ca.crt", "--cert", f"{certs}/m.crt", "--key", f"{certs}/m.key"]
        deadline = time.monotonic() + 30
        while True:
            r = etcdctl([eps], *auth, "put", "secure", "yes", timeout=10)
            if r.returncode == 0:
                break
            assert time.monotonic() < deadline, r.stderr + "".join(
                (tmp_path / f"{n}.log").read_text()[-800:] for n in names)
            time.sleep(0.2)
        r = etcdctl([eps], *auth, "get", "secure", "--print-value-only", timeout=10)
        assert r.stdout.strip() == "yes", r.stderr
        r = etcdctl([eps], *auth, "endpoint", "health", timeout=10)
        assert r.returncode == 0 and (r.stdout + r.stderr).count("is healthy") == 3, r.stdout + r.stderr
        # Without a client certificate the member refuses the connection.
        r = etcdctl([eps.split(",")[0]], "--cacert", f"{certs}/ca.crt", "get", "secure",
                    "--dial-timeout=2s", "--command-timeout=3s", timeout=15)
        assert r.returncode != 0
    finally:
        launch.stop([launch.MemberProcess(p.pid, p) for p in procs], 10)
