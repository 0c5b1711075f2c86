"""engine/transport/certcheck: etcd's CRL and allowed CN/hostname rules,
unit by unit and through a real grpc.aio server in this process (a
revoked client gets no data, on unary and streaming calls alike), and the
dialing side's check against a listener with a refused certificate."""
from __future__ import annotations

import asyncio
import os
import pathlib

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from engine.proto import rpc_pb2, rpc_pb2_grpc
from engine.transport import certcheck
from tests.support.ports import free_port
from tests.tls.pki import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    p = Pki(tmp_path_factory.mktemp("pki"))
    p.issue("member", "m")
    p.issue("intruder", "intruder")
    p.issue("wild", "w", ips=(), dns=("*.example.com",))
    p.issue("alice", "alice", server=False)
    p.issue("mallory", "mallory", server=False)
    p.revoke("mallory")
    p.write_crl()
    return p


def _cert(pki: Pki, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pathlib.Path(pki.cert(name)).read_bytes())


def _pem(pki: Pki, name: str) -> bytes:
    return pathlib.Path(pki.cert(name)).read_bytes()


# -- the rules ------------------------------------------------------------------------

def test_serial_is_printed_as_etcd_prints_it():
    assert certcheck.serial_hex(0x0a0b) == "0a0b"
    assert certcheck.serial_hex(0x5f) == "5f"
    assert certcheck.serial_hex(0) == "00"


def test_allowed_cn(pki):
    rules = certcheck.CertRules(allowed_cn="m")
    assert rules.refusal(_pem(pki, "member")) is None
    assert rules.refusal(_pem(pki, "intruder")) == "client certificate authentication failed"


def test_allowed_hostname_follows_go_verify_hostname(pki):
    m, w = _cert(pki, "member"), _cert(pki, "wild")
    assert certcheck.valid_for_host(m, "127.0.0.1")
    assert certcheck.valid_for_host(m, "LOCALHOST")
    assert not certcheck.valid_for_host(m, "127.0.0.2")
    assert not certcheck.valid_for_host(m, "m")          # no CN fallback (Go >= 1.15)
    assert certcheck.valid_for_host(w, "a.example.com")
    assert not certcheck.valid_for_host(w, "example.com")
    assert not certcheck.valid_for_host(w, "a.b.example.com")
    assert not certcheck.valid_for_host(_cert(pki, "alice"), "127.0.0.1")  # no SANs at all
    rules = certcheck.CertRules(allowed_hostname="localhost")
    assert rules.refusal(_pem(pki, "member")) is None
    assert rules.refusal(_pem(pki, "wild")) == "client certificate authentication failed"


def test_cn_and_hostname_are_mutually_exclusive():
    with pytest.raises(certcheck.CertRuleError) as e:
        certcheck.CertRules(allowed_cn="m", allowed_hostname="h")
    assert str(e.value) == 'AllowedCN and AllowedHostname are mutually exclusive (cn="m", hostname="h")'


def test_crl_pem_and_der(pki, tmp_path):
    rules = certcheck.CertRules(pki.crl)
    assert rules.refusal(_pem(pki, "alice")) is None
    why = rules.refusal(_pem(pki, "mallory"))
    assert why == f"transport: certificate serial {certcheck.serial_hex(pki.serial('mallory'))} revoked"
    der = tmp_path / "ca.der"
    der.write_bytes(x509.load_pem_x509_crl(pathlib.Path(pki.crl).read_bytes()).public_bytes(Encoding.DER))
    assert certcheck.CertRules(str(der)).refusal(_pem(pki, "mallory")) == why


def test_der_certificates_as_python_ssl_gives_them(pki):
    from cryptography.hazmat.primitives.serialization import Encoding as E
    rules = certcheck.CertRules(pki.crl)
    assert rules.refusal_der(_cert(pki, "alice").public_bytes(E.DER)) is None
    assert "revoked" in rules.refusal_der(_cert(pki, "mallory").public_bytes(E.DER))
    assert rules.refusal_der(None) is None


def test_unusable_crl_refuses_every_certificate(tmp_path, pki):
    # etcd starts, then rejects every connection with the read error.
    rules = certcheck.CertRules(str(tmp_path / "missing.crl"))
    assert rules.refusal(_pem(pki, "alice")) == f"open {tmp_path}/missing.crl: no such file or directory"
    bad = tmp_path / "bad.crl"
    bad.write_bytes(b"not a crl")
    assert certcheck.CertRules(str(bad)).refusal(_pem(pki, "alice")).startswith("cannot parse the CRL")


def test_a_changed_crl_is_read_again(tmp_path):
    p = Pki(tmp_path / "pki")
    p.issue("bob", "bob", server=False)
    p.write_crl()
    now = [0.0]
    rules = certcheck.CertRules(p.crl, clock=lambda: now[0])
    pem = _pem(p, "bob")
    assert rules.refusal(pem) is None
    p.revoke("bob")
    p.write_crl()
    os.utime(p.crl, ns=(1, 1))   # a different mtime, whatever the clock's resolution
    assert rules.refusal(pem) is None            # not looked at again within CRL_RECHECK
    now[0] += certcheck.CRL_RECHECK
    assert rules.refusal(pem) is not None


# -- through a grpc server -------------------------------------------------------------

class _KV(rpc_pb2_grpc.KVServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Range(self, request, context):
        self.calls += 1
        return rpc_pb2.RangeResponse(kvs=[{"key": b"secret", "value": b"data"}], count=1)


class _Watch(rpc_pb2_grpc.WatchServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def Watch(self, request_iterator, context):
        self.calls += 1
        async for _ in request_iterator:
            yield rpc_pb2.WatchResponse(created=True)


def _read(path: str) -> bytes:
    return pathlib.Path(path).read_bytes()


async def _serve(pki: Pki, rules: certcheck.CertRules):
    server = grpc.aio.server(interceptors=certcheck.server_interceptors(rules, "client"))
    kv, watch = _KV(), _Watch()
    rpc_pb2_grpc.add_KVServicer_to_server(kv, server)
    rpc_pb2_grpc.add_WatchServicer_to_server(watch, server)
    creds = grpc.ssl_server_credentials([(_read(pki.key("member")), _read(pki.cert("member")))],
                                        root_certificates=_read(pki.ca), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, port, kv, watch


def _channel(pki: Pki, port: int, who: str) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(_read(pki.ca), _read(pki.key(who)), _read(pki.cert(who)))
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


def test_a_revoked_client_gets_no_data(pki):
    async def main():
        server, port, kv, watch = await _serve(pki, certcheck.CertRules(pki.crl))
        try:
            async with _channel(pki, port, "alice") as ch:
                r = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"secret"), timeout=10)
                assert r.kvs[0].value == b"data"
            async with _channel(pki, port, "mallory") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"secret"), timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
                assert e.value.details() == "there is no connection available"
                call = rpc_pb2_grpc.WatchStub(ch).Watch(timeout=10)
                await call.write(rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(key=b"secret")))
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call.read()
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert kv.calls == 1 and watch.calls == 0   # the refused calls never reached a handler
        finally:
            await server.stop(0)
    asyncio.run(main())


def test_no_rules_no_interceptor():
    assert certcheck.server_interceptors(None, "client") == []
    assert certcheck.server_interceptors(certcheck.CertRules(), "peer") == []


def test_the_dialing_side_checks_the_listeners_certificate(pki):
    async def main():
        for server_cert, expect in (("member", None), ("intruder", "client certificate authentication failed")):
            server = grpc.aio.server()
            creds = grpc.ssl_server_credentials([(_read(pki.key(server_cert)), _read(pki.cert(server_cert)))],
                                                root_certificates=_read(pki.ca), require_client_auth=True)
            port = server.add_secure_port("127.0.0.1:0", creds)
            await server.start()
            try:
                ctx = certcheck.client_ssl_context(pki.ca, pki.cert("member"), pki.key("member"))
                got = await certcheck.dial_refusal(certcheck.CertRules(allowed_cn="m"), f"127.0.0.1:{port}", ctx)
                assert got == expect
            finally:
                await server.stop(0)
        # The peer CRL is checked on the dialing side too (etcd's dialer does not: see certcheck).
        server = grpc.aio.server()
        p2 = Pki(pki.dir / "crl-dial")
        p2.issue("member", "m")
        p2.issue("gone", "m")
        p2.revoke("gone")
        p2.write_crl()
        creds = grpc.ssl_server_credentials([(_read(p2.key("gone")), _read(p2.cert("gone")))],
                                            root_certificates=_read(p2.ca), require_client_auth=True)
        port = server.add_secure_port("127.0.0.1:0", creds)
        await server.start()
        try:
            ctx = certcheck.client_ssl_context(p2.ca, p2.cert("member"), p2.key("member"))
            got = await certcheck.dial_refusal(certcheck.CertRules(p2.crl, allowed_cn="m"), f"127.0.0.1:{port}", ctx)
            assert got == f"transport: certificate serial {certcheck.serial_hex(p2.serial('gone'))} revoked"
        finally:
            await server.stop(0)
        # Fails closed: nobody listening, or a peer that accepts and then
        # stalls the handshake (it could otherwise dodge the check while the
        # stream's own connection is up), is refused.
        ctx = certcheck.client_ssl_context(pki.ca, pki.cert("member"), pki.key("member"))
        got = await certcheck.dial_refusal(certcheck.CertRules(allowed_cn="m"), f"127.0.0.1:{free_port()}", ctx)
        assert got is not None and got.startswith("no TLS handshake with 127.0.0.1:"), got
        stall = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)   # accepts, never answers
        port = stall.sockets[0].getsockname()[1]
        try:
            got = await certcheck.dial_refusal(certcheck.CertRules(allowed_cn="m"), f"127.0.0.1:{port}", ctx,
                                               timeout=0.3)
            assert got == f"no TLS handshake with 127.0.0.1:{port} within 0.3s", got
        finally:
            stall.close()
    asyncio.run(main())


def test_the_member_flags():
    from engine.cli.flags import FlagError, parse_args
    cfg = parse_args(["--client-crl-file", "/c.crl", "--peer-crl-file=/p.crl", "--peer-cert-allowed-cn", "m"])
    assert (cfg.client_crl_file, cfg.peer_crl_file, cfg.peer_cert_allowed_cn) == ("/c.crl", "/p.crl", "m")
    assert certcheck.listener_rules(cfg, "client").crl_file == "/c.crl"
    assert certcheck.listener_rules(parse_args([]), "peer") is None
    with pytest.raises(FlagError) as e:
        parse_args(["--peer-cert-allowed-cn=m", "--peer-cert-allowed-hostname=h"])
    assert str(e.value) == 'AllowedCN and AllowedHostname are mutually exclusive (cn="m", hostname="h")'


# -- found by review: chains, replaced CRL files, FIFOs ---------------------------------

def test_a_revoked_intermediate_revokes_the_leaves_it_issued(tmp_path):
    """etcd's checkCRL looks at every certificate the client sent: a leaf
    under a revoked intermediate CA is refused (grpcio's auth context
    carries the chain as x509_pem_cert_chain)."""
    p = Pki(tmp_path / "pki")
    p.issue("member", "m")
    p.issue("alice", "alice", server=False)
    p.issue_under_intermediate("eve", "eve", "inter")
    p.revoke("inter")
    p.write_crl()
    leaf, inter = x509.load_pem_x509_certificates(_pem(p, "eve"))
    rules = certcheck.CertRules(p.crl)
    revoked = f"transport: certificate serial {certcheck.serial_hex(p.serial('inter'))} revoked"
    assert rules.refusal_der(leaf.public_bytes(Encoding.DER)) is None       # the leaf alone is not revoked
    assert rules.refusal_der(leaf.public_bytes(Encoding.DER),
                             [leaf.public_bytes(Encoding.DER), inter.public_bytes(Encoding.DER)]) == revoked

    async def main():
        server, port, kv, _ = await _serve(p, certcheck.CertRules(p.crl))
        try:
            async with _channel(p, port, "alice") as ch:
                assert (await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"s"), timeout=10)).kvs
            async with _channel(p, port, "eve") as ch:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"s"), timeout=10)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert kv.calls == 1
        finally:
            await server.stop(0)
    asyncio.run(main())


def test_a_crl_replaced_with_the_same_size_and_mtime_is_read_again(tmp_path):
    """cp -p / rsync -t keep the mtime; a new CRL of the same size must
    still be read (the stamp has the inode and ctime too)."""
    p = Pki(tmp_path / "pki")
    p.issue("bob", "bob", server=False)
    p.issue("carol", "carol", server=False)
    p.revoke("carol")
    old = pathlib.Path(p.write_crl()).read_bytes()
    p._revoked = [p.serial("bob")]
    new = pathlib.Path(p.write_crl()).read_bytes()
    width = max(len(old), len(new))
    crl = pathlib.Path(p.crl)
    crl.write_bytes(old.ljust(width, b"\n"))
    now = [0.0]
    rules = certcheck.CertRules(p.crl, clock=lambda: now[0])
    assert rules.refusal(_pem(p, "bob")) is None
    st = crl.stat()
    tmp = tmp_path / "new.crl"
    tmp.write_bytes(new.ljust(width, b"\n"))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, crl)
    assert (crl.stat().st_size, crl.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    now[0] += certcheck.CRL_RECHECK
    assert rules.refusal(_pem(p, "bob")) is not None


def test_a_fifo_as_crl_refuses_everyone_without_blocking(tmp_path, pki):
    fifo = tmp_path / "crl.fifo"
    os.mkfifo(fifo)
    assert certcheck.CertRules(str(fifo)).refusal(_pem(pki, "alice")) == f"open {fifo}: not a regular file"
