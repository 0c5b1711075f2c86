"""A throwaway certificate authority for TLS tests, made in-process with
`cryptography` (EC P-256 keys: milliseconds, where openssl's RSA keys take
a subprocess and ~100 ms each).

    pki = Pki(tmp_dir)                      # ca.crt / ca.key
    pki.issue("member", cn="m1")            # member.crt / member.key (SAN 127.0.0.1, localhost)
    pki.issue("bob", cn="bob", server=False)
    pki.revoke("bob"); pki.write_crl()      # ca.crl (PEM), listing bob's serial

Paths come back as strings for command lines: pki.cert("bob"), pki.key("bob").
"""
from __future__ import annotations

import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: pathlib.Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class Pki:
    def __init__(self, directory: pathlib.Path, ca_cn: str = "raftui-test-ca") -> None:
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._ca = (x509.CertificateBuilder().subject_name(_name(ca_cn)).issuer_name(_name(ca_cn))
                    .public_key(self._ca_key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(self._now).not_valid_after(self._now + datetime.timedelta(days=2))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                 content_commitment=False, key_encipherment=False,
                                                 data_encipherment=False, key_agreement=False,
                                                 encipher_only=False, decipher_only=False), critical=True)
                    .sign(self._ca_key, hashes.SHA256()))
        (self.dir / "ca.crt").write_bytes(self._ca.public_bytes(serialization.Encoding.PEM))
        _write_key(self.dir / "ca.key", self._ca_key)
        self._serials: dict[str, int] = {}
        self._revoked: list[int] = []

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.crt")

    @property
    def crl(self) -> str:
        return str(self.dir / "ca.crl")

    def cert(self, name: str) -> str:
        return str(self.dir / f"{name}.crt")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def serial(self, name: str) -> int:
        return self._serials[name]

    def issue(self, name: str, cn: str, *, server: bool = True, ips=("127.0.0.1",),
              dns=("localhost",)) -> str:
        """A leaf certificate signed by the CA; `server` certificates carry
        the SANs and serve both ends (serverAuth + clientAuth)."""
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self._ca.subject)
             .public_key(key.public_key()).serial_number(serial)
             .not_valid_before(self._now).not_valid_after(self._now + datetime.timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
            sans = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips] + [x509.DNSName(d) for d in dns]
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        crt = b.sign(self._ca_key, hashes.SHA256())
        (self.dir / f"{name}.crt").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
        _write_key(self.dir / f"{name}.key", key)
        self._serials[name] = serial
        return self.cert(name)

    def issue_under_intermediate(self, name: str, cn: str, intermediate: str = "inter") -> str:
        """A client leaf signed by a new intermediate CA (itself signed by
        the CA); the leaf's file holds the leaf then the intermediate, as a
        client sends its chain. The intermediate's serial is serial(intermediate)."""
        ikey = ec.generate_private_key(ec.SECP256R1())
        iserial = x509.random_serial_number()
        inter = (x509.CertificateBuilder().subject_name(_name(intermediate)).issuer_name(self._ca.subject)
                 .public_key(ikey.public_key()).serial_number(iserial)
                 .not_valid_before(self._now).not_valid_after(self._now + datetime.timedelta(days=2))
                 .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                 .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False,
                                              encipher_only=False, decipher_only=False), critical=True)
                 .sign(self._ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        serial = x509.random_serial_number()
        leaf = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(inter.subject)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(self._now).not_valid_after(self._now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ikey, hashes.SHA256()))
        (self.dir / f"{name}.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                                               + inter.public_bytes(serialization.Encoding.PEM))
        _write_key(self.dir / f"{name}.key", key)
        self._serials[name] = serial
        self._serials[intermediate] = iserial
        return self.cert(name)

    def revoke(self, name: str) -> None:
        self._revoked.append(self._serials[name])

    def write_crl(self, *, der: bool = False) -> str:
        """The CA's CRL with every revoked serial so far, at pki.crl."""
        b = (x509.CertificateRevocationListBuilder().issuer_name(self._ca.subject)
             .last_update(self._now).next_update(self._now + datetime.timedelta(days=2)))
        for serial in self._revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial)
                                          .revocation_date(self._now).build())
        crl = b.sign(self._ca_key, hashes.SHA256())
        enc = serialization.Encoding.DER if der else serialization.Encoding.PEM
        (self.dir / "ca.crl").write_bytes(crl.public_bytes(enc))
        return self.crl
