"""TLS for the client port: the server context (ALPN h2) and grpc's auth
context built from the peer certificate, so engine/transport/certcheck and
engine/api/auth read the same keys as under grpc.aio."""
from __future__ import annotations

import ssl

INSECURE_AUTH = {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}


def server_ssl_context(cert_file: str, key_file: str, ca_file: str | None,
                       require_client_auth: bool) -> ssl.SSLContext:
    """ALPN "h2" only, TLS >= 1.2 (RFC 9113 9.2). As etcd 3.4 (pkg/transport
    ServerConfig), a trusted CA file alone already requires and verifies
    client certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["h2"])
    if ca_file:
        ctx.load_verify_locations(ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif require_client_auth:
        raise ValueError("client certificate authentication needs a CA file")
    return ctx


def auth_context(ssl_object) -> dict:
    """grpc's auth context for one connection (computed once per connection:
    the certificate does not change)."""
    if ssl_object is None:
        return dict(INSECURE_AUTH)
    auth = {"transport_security_type": [b"ssl"], "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
            "ssl_session_reused": [b"true" if ssl_object.session_reused else b"false"]}
    version = ssl_object.version()
    if version:
        auth["ssl_tls_version"] = [version.encode()]
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return auth
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    from engine.transport.certcheck import peer_chain_der
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns:
        auth["x509_common_name"] = [str(cns[0].value).encode()]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names = []
        for kind in (x509.DNSName, x509.RFC822Name, x509.UniformResourceIdentifier):
            names += [v.encode() for v in san.get_values_for_type(kind)]
        names += [str(ip).encode() for ip in san.get_values_for_type(x509.IPAddress)]
        if names:
            auth["x509_subject_alternative_name"] = names
    auth["x509_subject"] = [cert.subject.rfc4514_string().encode()]
    auth["x509_pem_cert"] = [cert.public_bytes(Encoding.PEM)]
    # As grpc (measured with grpcio 1.85): the chain is what the client sent
    # after its leaf, absent when it sent the leaf alone.
    chain = peer_chain_der(ssl_object)[1:]
    if chain:
        auth["x509_pem_cert_chain"] = [b"".join(x509.load_der_x509_certificate(c).public_bytes(Encoding.PEM)
                                                for c in chain)]
    return auth
