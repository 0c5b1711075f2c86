"""--client-cert-auth with auth on: the client certificate's common name is
the user (etcd's AuthInfoFromTLS), on real etcd and raftnode alike.

One member each, TLS on the client port; certificates for CN=root, CN=alice
(a user without password) and CN=ghost (no such user). The same etcdctl
commands run against both; exit code, stdout and the error line must match.
A token (--user) wins over the certificate, as in etcd.
"""
from __future__ import annotations

import pathlib
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


def _cert(d: pathlib.Path, name: str, cn: str, ext: str) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", ext, "-out", f"{name}.crt", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=auth-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "server.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    (d / "client.cnf").write_text("extendedKeyUsage=clientAuth\n")
    _cert(d, "server", "member", "server.cnf")
    for cn in ("root", "alice", "ghost"):
        _cert(d, cn, cn, "client.cnf")
    return d


def _start(kind: str, d: pathlib.Path, pki: pathlib.Path) -> tuple[subprocess.Popen, str]:
    client, peer = (f"{s}://127.0.0.1:{p}" for s, p in zip(("https", "http"), free_ports(2)))
    flags = ["--name", "m", "--data-dir", str(d / "data"), "--listen-client-urls", client,
             "--advertise-client-urls", client, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"m={peer}",
             f"--cert-file={pki}/server.crt", f"--key-file={pki}/server.key",
             f"--trusted-ca-file={pki}/ca.crt", "--client-cert-auth"]
    argv = (["etcd"] if kind == "etcd" else [sys.executable, "-m", "engine"]) + flags
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    return proc, client.removeprefix("https://")


def _ctl(ep: str, pki: pathlib.Path, cn: str, *args: str) -> tuple[int, str, str]:
    tls = ["--cacert", f"{pki}/ca.crt", "--cert", f"{pki}/{cn}.crt", "--key", f"{pki}/{cn}.key"]
    r = etcdctl([ep], *tls, *args, timeout=20)
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
    return r.returncode, r.stdout, errs[-1] if errs else ""


SESSION = [
    ("root", ("user", "add", "root:rootpw")),
    ("root", ("user", "grant-role", "root", "root")),
    ("root", ("role", "add", "r")),
    ("root", ("role", "grant-permission", "r", "readwrite", "k")),
    ("root", ("user", "add", "alice", "--no-password")),
    ("root", ("auth", "enable")),
    ("root", ("put", "k", "v")),                  # root by its certificate
    ("root", ("user", "list")),
    ("alice", ("get", "k")),                      # no role yet: permission denied
    ("root", ("user", "grant-role", "alice", "r")),
    ("alice", ("get", "k")),
    ("alice", ("put", "other", "v")),
    ("alice", ("user", "list")),
    ("alice", ("put", "other", "v", "--user", "root:rootpw")),  # a token wins
    ("ghost", ("get", "k")),
    ("root", ("auth", "disable")),
    ("ghost", ("get", "k")),
]


def test_common_name_is_the_user(tmp_path, pki):
    require_etcd()
    procs = []
    try:
        eps = {}
        for kind in ("etcd", "raftnode"):
            proc, ep = _start(kind, tmp_path / kind, pki)
            procs.append(proc)
            eps[kind] = ep
        for kind, ep in eps.items():
            deadline = time.monotonic() + 30
            while _ctl(ep, pki, "root", "endpoint", "health")[0] != 0:
                assert time.monotonic() < deadline, (tmp_path / kind / "log").read_text()[-2000:]
                time.sleep(0.2)
        got = {kind: [_ctl(ep, pki, cn, *args) for cn, args in SESSION] for kind, ep in eps.items()}
        diffs = [f"{cn} {' '.join(args)}: etcd {e!r} raftnode {r!r}"
                 for (cn, args), e, r in zip(SESSION, got["etcd"], got["raftnode"]) if e != r]
        assert not diffs, "\n".join(diffs)
        assert got["etcd"][8][0] != 0 and got["etcd"][10][0] == 0  # the session means something
    finally:
        launch.stop([launch.MemberProcess(p.pid, p) for p in procs], 10)
