"""--client-crl-file on the https HTTP listeners (client-http and metrics URLs),
as etcd's TLS listener applies it to every connection: a client whose
certificate the CRL lists is refused after the handshake, nothing served;
the others are served; a certificate revoked while the member runs is
refused from the next connection once the CRL file changes."""
from __future__ import annotations

import http.client
import ssl
import time

import pytest

from engine.transport import certcheck
from tests.http.member import HttpMembers
from tests.tls.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(tmp_path_factory.mktemp("pki-crl"))
    p.issue("member", cn="member")
    p.issue("alice", cn="alice", server=False)
    p.issue("mallory", cn="mallory", server=False)
    p.revoke("mallory")
    p.issue_under_intermediate("eve", "eve", "inter")   # her intermediate CA is revoked
    p.revoke("inter")
    p.write_crl()
    return p


def _get(url: str, pki: Pki, who: str, path: str = "/health") -> int:
    """The status of GET path with `who`'s client certificate; raises OSError
    (or http.client's errors) when the connection is closed unanswered."""
    ctx = ssl.create_default_context(cafile=pki.ca)
    ctx.load_cert_chain(pki.cert(who), pki.key(who))
    host, port = url.split("//")[1].rsplit(":", 1)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_revoked_clients_get_nothing_on_https_listeners(pki, tmp_path) -> None:
    members = HttpMembers(str(tmp_path / "m"), 1, extra=(
        "--cert-file", pki.cert("member"), "--key-file", pki.key("member"),
        "--trusted-ca-file", pki.ca, "--client-crl-file", pki.crl)).start()
    try:
        h = members.http["n1"]
        [client] = members.lt.call(h.listen(["https://127.0.0.1:0"], metrics_only=False))
        [metrics] = members.lt.call(h.listen(["https://127.0.0.1:0"], metrics_only=True))
        for url in (client, metrics):
            assert _get(url, pki, "alice") == 200
            for revoked in ("mallory", "eve"):
                with pytest.raises((OSError, http.client.HTTPException)):
                    _get(url, pki, revoked)
        assert _get(client, pki, "alice", "/v3/kv/range") in (200, 405)   # served (a GET: etcd's 405)
        # Plain http listeners of the same member are not TLS: nothing to check there.
        assert members.metrics_url["n1"].startswith("http://")

        # Revoked while running: refused from the next connection once the
        # CRL file changed (re-read at most every CRL_RECHECK seconds).
        pki.revoke("alice")
        pki.write_crl()
        deadline = time.monotonic() + 10 * certcheck.CRL_RECHECK + 5
        while True:
            try:
                _get(client, pki, "alice")
            except (OSError, http.client.HTTPException):
                break
            assert time.monotonic() < deadline, "alice still served after her revocation"
            time.sleep(0.1)   # poll interval, not synchronisation
    finally:
        members.stop()
