"""Certificate rules grpcio's TLS cannot express: etcd's --client-crl-file,
--peer-crl-file, --peer-cert-allowed-cn and --peer-cert-allowed-hostname.

What etcd 3.4 does (pkg/transport/listener.go, listener_tls.go), measured
against etcd 3.4.23:

- CRL (client and peer listeners): after the TLS handshake, the serial of
  every certificate the other side sent is looked up in the CRL file, read
  again at every connection (PEM or DER; only the serials count, the CRL's
  signature is not checked). A revoked one: the member logs `rejected
  connection from ... (error "transport: certificate serial <hex> revoked")`
  and closes the connection. A CRL file that cannot be read or parsed
  refuses every connection that carries a certificate (etcd starts anyway).
- Allowed CN / hostname (peer side only; mutually exclusive): the leaf's
  subject CN must equal the allowed CN, or the leaf must be valid for the
  allowed hostname (Go's VerifyHostname: an IP against the IP SANs, a name
  against the DNS SANs with a leftmost `*.` wildcard). Checked inside the
  handshake, by the listener AND by the dialing member (etcd's peer client
  config carries the same check), with the text `client certificate
  authentication failed`. So a member whose certificate is not allowed can
  neither send to the others nor be sent to: it never receives any data.
- The peer CRL is checked by the listener only: etcd's dialer does not
  consult it. Measured on 3.4.23 (tests/tls/test_tls_process): a member
  whose peer certificate is revoked still receives the cluster's data,
  applies it and serves it, because the others dial it (rafthttp's
  pipeline, and the streams they open to it carry its answers back).
  raftnode's dialer checks the CRL too, so a revoked member gets nothing:
  a deliberate difference, the one place where copying etcd would defeat
  the CRL.

What the refused side sees, measured: etcdctl prints `Error: context
deadline exceeded` after its command timeout (clientv3 keeps retrying a
connection that closes); a grpcio client gets UNAVAILABLE at once.

grpcio has no hook in its handshake, so here the rules are checked where
grpcio does show the other side's certificate:

- Incoming (server_interceptor): every RPC, before its handler runs, reads
  the leaf certificate from the call's auth context (`x509_pem_cert`) and
  refuses the call with UNAVAILABLE and the text `there is no connection
  available`: the one UNAVAILABLE text for which clientv3 retries even a Put,
  so etcdctl ends with `context deadline exceeded` for reads and writes
  alike, as against etcd; the reason goes to the member's log, as etcd's.
- Outgoing (dial_refusal): before a member streams to a peer, it opens a
  TLS connection of its own to the peer's address with its peer
  credentials and checks the certificate the peer presents (allowed
  CN/hostname, and the peer CRL).

Differences that remain (grpcio's, documented in the issue): the TCP/TLS
connection of a refused client is accepted and stays open (every call on it
is refused, none reaches a handler, so no data leaves); the check runs per
call instead of per connection, so a certificate revoked after a client
connected is refused from its next call on (etcd lets an open connection
live); the dialing side's check is a separate handshake to the same
address just before the stream opens, not the stream's own handshake, so it
refuses whenever it cannot complete (a peer that stalls or resets that
handshake is not sent to: it fails closed). Every certificate of the chain
the other side sent is looked up in the CRL, the leaf and its
intermediates (grpcio's `x509_pem_cert_chain`, Python's unverified chain),
so a revoked intermediate CA revokes what it issued, as in etcd.
"""
from __future__ import annotations

import asyncio
import dataclasses
import inspect
import ipaddress
import logging
import os
import ssl
import stat
import time
from typing import Any, Callable

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

log = logging.getLogger("engine.transport.certcheck")

# The UNAVAILABLE text a refused call gets: grpc-go's own words for a
# missing connection, which clientv3 (retry_interceptor isSafeRetryMutableRPC)
# retries for every RPC, as it retries etcd's closed connection.
REFUSED_DETAILS = "there is no connection available"
# etcd's texts (pkg/transport) for the member's log and the dialing side.
AUTH_FAILED = "client certificate authentication failed"
# Seconds between looks at the CRL file's mtime/size (etcd reads it at every
# connection; a call is much more frequent than a connection).
CRL_RECHECK = 1.0
# Verdicts kept per certificate (by its PEM), a bound against a flood of
# distinct certificates.
MAX_CACHED = 1024
# Seconds the dialing side waits for the peer's TLS handshake.
DIAL_TIMEOUT = 3.0
# At most one log line per reason in this many seconds.
LOG_INTERVAL = 5.0


class CertRuleError(ValueError):
    """Rules a member cannot start with; str() is etcd's one-line message."""


def serial_hex(serial: int) -> str:
    """A serial as etcd prints it: the big-endian bytes, two hex digits each."""
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex()


def common_name(cert: x509.Certificate) -> str:
    """The subject's CN as Go reads it (the last CN attribute wins)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[-1].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _wildcard_match(pattern: str, host: str) -> bool:
    p, h = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not p.startswith("*."):
        return p == h
    first, _, rest = h.partition(".")
    return bool(first) and bool(rest) and rest == p[2:]


def valid_for_host(cert: x509.Certificate, host: str) -> bool:
    """Go's x509 VerifyHostname as etcd 3.4 (Go 1.15+) uses it: an IP
    address matches the IP SANs only, a name the DNS SANs only (no CN
    fallback)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        ip = None
    if ip is not None:
        return any(a == ip for a in sans.get_values_for_type(x509.IPAddress))
    return any(_wildcard_match(d, candidate) for d in sans.get_values_for_type(x509.DNSName))


@dataclasses.dataclass
class _Crl:
    # (inode, mtime_ns, ctime_ns, size) of the file read: a file replaced
    # with the same size and a kept mtime (cp -p) changes inode or ctime.
    stamp: tuple[int, ...] | None = None
    revoked: frozenset[int] | None = None
    error: str | None = None                  # why the file could not be used


class CertRules:
    """One listener's rules: a CRL file and/or an allowed CN or hostname.

    `refusal(pem)` says why a certificate must be refused (etcd's text), or
    None. Verdicts are cached per certificate and dropped when the CRL file
    changes."""

    def __init__(self, crl_file: str = "", allowed_cn: str = "", allowed_hostname: str = "", *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if allowed_cn and allowed_hostname:
            raise CertRuleError(f"AllowedCN and AllowedHostname are mutually exclusive "
                                f"(cn={_go_quote(allowed_cn)}, hostname={_go_quote(allowed_hostname)})")
        self.crl_file = crl_file
        self.allowed_cn = allowed_cn
        self.allowed_hostname = allowed_hostname
        self._clock = clock
        self._crl = _Crl()
        self._crl_looked = -CRL_RECHECK
        self._verdicts: dict[bytes, str | None] = {}

    def __bool__(self) -> bool:
        return bool(self.crl_file or self.allowed_cn or self.allowed_hostname)

    @property
    def identity_rule(self) -> bool:
        """An allowed CN or hostname (checked by the dialing side too)."""
        return bool(self.allowed_cn or self.allowed_hostname)

    # -- checks ---------------------------------------------------------------------

    def refusal(self, pem: bytes, chain_pem: bytes = b"") -> str | None:
        """Why the other side's certificate must be refused, or None: the
        leaf (PEM) against every rule, and every certificate of the chain it
        came with (PEM blocks, the leaf first; grpcio's
        x509_pem_cert_chain) against the CRL."""
        self._refresh_crl()
        key = (pem, chain_pem)
        if key in self._verdicts:
            return self._verdicts[key]
        try:
            cert = x509.load_pem_x509_certificate(pem)
            chain = x509.load_pem_x509_certificates(chain_pem) if chain_pem.strip() else []
        except ValueError as e:
            verdict: str | None = f"cannot parse the certificate: {e}"
        else:
            verdict = self.identity_refusal(cert) or self.chain_crl_refusal([cert, *chain])
        if len(self._verdicts) >= MAX_CACHED:
            self._verdicts.clear()
        self._verdicts[key] = verdict
        return verdict

    def refusal_der(self, der: bytes | None, chain_der: "list[bytes] | tuple[bytes, ...]" = ()) -> str | None:
        """refusal() for a certificate in DER, as Python's ssl gives it
        (ssl_object.getpeercert(binary_form=True); `chain_der`: the chain
        the other side sent, peer_chain_der()); None passes (no
        certificate: nothing to check, as with etcd)."""
        if not der:
            return None
        self._refresh_crl()
        try:
            cert = x509.load_der_x509_certificate(der)
            chain = [x509.load_der_x509_certificate(c) for c in chain_der]
        except ValueError as e:
            return f"cannot parse the certificate: {e}"
        return self.identity_refusal(cert) or self.chain_crl_refusal([cert, *chain])

    def chain_crl_refusal(self, certs: "list[x509.Certificate]") -> str | None:
        """The CRL against every certificate given (etcd's checkCRL looks
        at every certificate of the peer's chain)."""
        for c in certs:
            why = self.crl_refusal(c)
            if why is not None:
                return why
        return None

    def identity_refusal(self, cert: x509.Certificate) -> str | None:
        """--peer-cert-allowed-cn / --peer-cert-allowed-hostname."""
        if self.allowed_cn and common_name(cert) != self.allowed_cn:
            return AUTH_FAILED
        if self.allowed_hostname and not valid_for_host(cert, self.allowed_hostname):
            return AUTH_FAILED
        return None

    def crl_refusal(self, cert: x509.Certificate) -> str | None:
        if not self.crl_file:
            return None
        crl = self._crl
        if crl.error is not None:
            return crl.error
        if crl.revoked is not None and cert.serial_number in crl.revoked:
            return f"transport: certificate serial {serial_hex(cert.serial_number)} revoked"
        return None

    def _refresh_crl(self) -> None:
        if not self.crl_file:
            return
        now = self._clock()
        if now - self._crl_looked < CRL_RECHECK:
            return
        self._crl_looked = now
        try:
            st = os.stat(self.crl_file)
            stamp: tuple[int, ...] | None = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp is not None and stamp == self._crl.stamp and os.access(self.crl_file, os.R_OK):
            return
        if stamp is not None and not stat.S_ISREG(st.st_mode):
            # A FIFO or a device would block the member's loop on open():
            # refused like any file that cannot be used.
            self._crl = _Crl(stamp, None, f"open {self.crl_file}: not a regular file")
        else:
            self._crl = load_crl(self.crl_file, stamp)
        self._verdicts.clear()

    # -- describing -----------------------------------------------------------------

    def describe(self) -> str:
        parts = []
        if self.crl_file:
            parts.append(f"crl-file = {self.crl_file}")
        if self.allowed_cn:
            parts.append(f"allowed-cn = {self.allowed_cn}")
        if self.allowed_hostname:
            parts.append(f"allowed-hostname = {self.allowed_hostname}")
        return ", ".join(parts)


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_crl(path: str, stamp: tuple[int, int] | None = None) -> _Crl:
    """Read a CRL file (PEM or DER, as Go's x509.ParseCRL): its revoked
    serials, or the error etcd would refuse connections with."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return _Crl(stamp, None, f"open {path}: {(e.strerror or str(e)).lower()}")
    try:
        if data.lstrip().startswith(b"-----BEGIN X509 CRL"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError as e:
        return _Crl(stamp, None, f"cannot parse the CRL {path}: {e}")
    return _Crl(stamp, frozenset(r.serial_number for r in crl), None)


# -- the listener side: a grpc.aio server interceptor ---------------------------------

class _RateLimitedLog:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._last: dict[str, float] = {}
        self._clock = clock

    def warn(self, key: str, fmt: str, *args: Any) -> None:
        now = self._clock()
        if now - self._last.get(key, -LOG_INTERVAL) >= LOG_INTERVAL:
            if len(self._last) > MAX_CACHED:
                self._last.clear()
            self._last[key] = now
            log.warning(fmt, *args)


def call_refusal(rules: CertRules, context) -> str | None:
    """Why this call's peer certificate is refused, or None. A call without
    a certificate passes: the TLS layer already demanded one when a CA file
    was given, and etcd checks nothing when there is none."""
    try:
        auth = context.auth_context()
    except Exception:  # no auth context (an insecure port)
        return None
    pem = auth.get("x509_pem_cert")
    if not pem:
        return None
    chain = auth.get("x509_pem_cert_chain") or [b""]
    return rules.refusal(pem[0], chain[0])


def peer_chain_der(ssl_object) -> list[bytes]:
    """The certificates the other side of a TLS connection sent (DER, leaf
    first), or [] when Python cannot say (a private API of Python's ssl)."""
    try:
        chain = ssl_object._sslobj.get_unverified_chain()
        import _ssl
        return [c.public_bytes(_ssl.ENCODING_DER) for c in chain or ()]
    except Exception:
        return []


class CertRuleInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call whose peer certificate breaks the rules before its
    handler runs: nothing is read from the request stream, nothing written.
    Put it first among a server's interceptors, so refused calls are not
    counted as served (etcd never sees them in gRPC)."""

    def __init__(self, rules: CertRules, listener: str = "client") -> None:
        self.rules = rules
        self.listener = listener
        self.refused = 0
        self._log = _RateLimitedLog()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            inner = getattr(handler, kind)
            if inner is not None:
                return handler._replace(**{kind: self._wrap(inner)})
        return handler

    async def _refuse_if_needed(self, context) -> None:
        why = call_refusal(self.rules, context)
        if why is None:
            return
        self.refused += 1
        self._log.warn(why, "rejected connection from %r on the %s listener (error %r)",
                       context.peer(), self.listener, why)
        await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSED_DETAILS)

    def _wrap(self, inner):
        if inspect.isasyncgenfunction(inner):
            async def gen(request, context):
                await self._refuse_if_needed(context)
                async for msg in inner(request, context):
                    yield msg
            return gen

        async def call(request, context):
            await self._refuse_if_needed(context)
            return await inner(request, context)
        return call


def server_interceptors(rules: CertRules | None, listener: str) -> list[grpc.aio.ServerInterceptor]:
    """[the interceptor] when there are rules to check, else []."""
    if not rules:
        return []
    log.info("%s TLS: %s", listener, rules.describe())
    return [CertRuleInterceptor(rules, listener)]


# -- the dialing side -----------------------------------------------------------------

def client_ssl_context(ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """The member's peer credentials as an ssl context for the dial check."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
    # The peer is reached by the address in its URL; grpc checks the name
    # on its own handshake. Here only the rules matter.
    ctx.check_hostname = False
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


async def dial_refusal(rules: CertRules, target: str, ctx: ssl.SSLContext,
                       timeout: float = DIAL_TIMEOUT) -> str | None:
    """Why the peer at `target` (host:port) must not be sent to, or None:
    the allowed CN/hostname (etcd's peer client config checks them in its
    handshake) and the CRL checked on every certificate it presents. Fails
    closed: a handshake that cannot complete (refused, reset, stalled past
    `timeout`) refuses, so a peer cannot dodge the check by stalling it
    while the stream's own connection is up."""
    if not rules:
        return None
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=ctx), timeout)
    except ssl.SSLError as e:
        return f"TLS handshake with {target} failed: {e.reason or e}"
    except asyncio.TimeoutError:
        return f"no TLS handshake with {target} within {timeout:g}s"
    except (OSError, ValueError) as e:
        return f"no TLS handshake with {target}: {e}"
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        chain = peer_chain_der(ssl_object)
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass
    if not der:
        return AUTH_FAILED
    return rules.refusal_der(der, chain) or None


def peer_dial_check(cfg) -> Callable[[str], Any] | None:
    """For a member's peer transport: an async (target) -> reason | None
    checking a peer's certificate before streaming to it, or None when
    there is no peer rule (or no peer TLS). The CRL too, where etcd's
    dialer checks only the CN/hostname (see the module's docstring)."""
    rules = listener_rules(cfg, "peer")
    if rules is None or not cfg.peer_cert_file:
        return None
    ctx = client_ssl_context(cfg.peer_trusted_ca_file, cfg.peer_cert_file, cfg.peer_key_file)

    async def check(target: str) -> str | None:
        return await dial_refusal(rules, target, ctx)
    return check


def listener_rules(cfg, listener: str) -> CertRules | None:
    """The rules of a member's client or peer listener, from its config."""
    if listener == "client":
        rules = CertRules(cfg.client_crl_file)
    else:
        rules = CertRules(cfg.peer_crl_file, cfg.peer_cert_allowed_cn, cfg.peer_cert_allowed_hostname)
    return rules if rules else None
