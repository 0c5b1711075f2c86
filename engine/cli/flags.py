"""etcd's member flags, parsed into a MemberConfig.

The flag names, defaults and checks follow etcd 3.4 (`etcd --help`,
embed/config.go) so a command line written for etcd starts a raftui member
unchanged; where etcd listens on "localhost" we use 127.0.0.1, because
localhost may resolve to ::1 first and a member must be reachable at exactly
the address it advertises.

Both `--flag value` and `--flag=value` work, and so do Go's single-dash
spellings (`-name n1`). Boolean flags take `--flag`, `--flag=true` or
`--flag=false`. Every mistake raises FlagError with a one-line message.

Member configuration and id derivation live in engine/server/config.py;
this module only parses and checks the command line.
"""
from __future__ import annotations

import argparse
import ipaddress
import re
import sys
import urllib.parse
from typing import NoReturn, Sequence

from engine.server.config import (DEFAULT_AUTH_TOKEN, DEFAULT_AUTH_TOKEN_TTL, DEFAULT_BCRYPT_COST,
                                  DEFAULT_CLIENT_URL, DEFAULT_ELECTION_MS, DEFAULT_HEARTBEAT_MS,
                                  DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_TXN_OPS, DEFAULT_NAME,
                                  DEFAULT_PEER_URL, DEFAULT_QUOTA_BYTES,
                                  DEFAULT_SNAPSHOT_CATCHUP_ENTRIES, DEFAULT_SNAPSHOT_COUNT,
                                  DEFAULT_TOKEN, ConfigError, Member, MemberConfig, cluster_id,
                                  member_id, periodic_retention, revision_retention)

MAX_ELECTION_MS = 50000             # etcd refuses longer election timeouts
LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")


class FlagError(ConfigError):
    """A bad command line; str() is a one-line message for the user."""


# -- parsing -----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise FlagError(message)


def _uint(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return int(text)


def _bool(text: str) -> bool:
    # The spellings Go's strconv.ParseBool accepts, as etcd's flags do.
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")


def _build_parser() -> _Parser:
    p = _Parser(prog="raftnode", allow_abbrev=False,
                description="Start one member of an etcd-compatible raftui cluster.")
    s = p.add_argument
    s("--name", default=DEFAULT_NAME, help="human-readable name for this member")
    s("--data-dir", default=None, help='path to the data directory (default "<name>.etcd")')
    s("--listen-client-urls", default=None, help="URLs to listen on for client traffic")
    s("--advertise-client-urls", default=None, help="client URLs to advertise to the cluster")
    s("--listen-peer-urls", default=DEFAULT_PEER_URL, help="URLs to listen on for peer traffic")
    s("--listen-metrics-urls", default="", help="URLs to serve /metrics and /health on")
    s("--listen-client-http-urls", default="",
      help="URLs to serve HTTP on (/health /version /metrics, the v3 JSON gateway), not gRPC")
    s("--initial-advertise-peer-urls", default=DEFAULT_PEER_URL,
      help="this member's peer URLs to advertise to the cluster")
    s("--initial-cluster", default=None,
      help="initial cluster: name=url,... (a name may repeat for several URLs)")
    s("--initial-cluster-state", default="new", help="new or existing")
    s("--initial-cluster-token", default=DEFAULT_TOKEN,
      help="token that makes ids unique to this cluster")
    s("--heartbeat-interval", type=_uint, default=DEFAULT_HEARTBEAT_MS, help="ms")
    s("--election-timeout", type=_uint, default=DEFAULT_ELECTION_MS, help="ms")
    s("--snapshot-count", type=_uint, default=DEFAULT_SNAPSHOT_COUNT,
      help="committed entries between snapshots (0 = default)")
    s("--experimental-snapshot-catchup-entries", type=_uint, default=DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
      help="entries kept after a snapshot for slow followers (etcd 3.5.9's flag; 0 = default)")
    s("--quota-backend-bytes", type=_uint, default=0,
      help="backend size limit before the NOSPACE alarm (0 = 2 GiB)")
    s("--auto-compaction-mode", default="periodic", help="periodic or revision")
    s("--auto-compaction-retention", default="0",
      help='periodic: hours or a duration ("1h", "5m"); revision: a count; 0 = off')
    s("--max-request-bytes", type=_uint, default=DEFAULT_MAX_REQUEST_BYTES)
    s("--max-txn-ops", type=_uint, default=DEFAULT_MAX_TXN_OPS)
    s("--cert-file", default="")
    s("--key-file", default="")
    s("--trusted-ca-file", default="")
    s("--client-cert-auth", type=_bool, nargs="?", const=True, default=False)
    s("--peer-cert-file", default="")
    s("--peer-key-file", default="")
    s("--peer-trusted-ca-file", default="")
    s("--peer-client-cert-auth", type=_bool, nargs="?", const=True, default=False)
    s("--client-crl-file", default="", help="client certificate revocation list (PEM or DER)")
    s("--peer-crl-file", default="", help="peer certificate revocation list (PEM or DER)")
    s("--peer-cert-allowed-cn", default="", help="the CN a peer's certificate must have")
    s("--peer-cert-allowed-hostname", default="",
      help="the hostname or IP a peer's certificate must be valid for")
    s("--initial-election-tick-advance", type=_bool, nargs="?", const=True, default=True,
      help="fast-forward the election ticks at start (etcd's default: true)")
    s("--enable-fault-injection", type=_bool, nargs="?", const=True, default=False,
      help="serve the Fault service (cut/drop/delay); never on a production network")
    s("--log-level", default="info", help="|".join(LOG_LEVELS))
    s("--auth-token", default=DEFAULT_AUTH_TOKEN,
      help='"simple" or "jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m"')
    s("--auth-token-ttl", type=_uint, default=DEFAULT_AUTH_TOKEN_TTL,
      help="seconds a simple token lives unused")
    s("--bcrypt-cost", type=_uint, default=DEFAULT_BCRYPT_COST,
      help="bcrypt cost of password hashes (4..31; else the default)")
    return p


_PARSER = _build_parser()
_LONG_FLAGS = {opt for action in _PARSER._actions for opt in action.option_strings}


def _go_style(argv: Sequence[str]) -> list[str]:
    """Accept Go's single-dash long flags (-name n1, -name=n1), as etcd does."""
    out = []
    for arg in argv:
        if arg.startswith("-") and not arg.startswith("--"):
            if "-" + arg.split("=", 1)[0] in _LONG_FLAGS:
                arg = "-" + arg
        out.append(arg)
    return out


def parse_args(argv: Sequence[str] | None = None) -> MemberConfig:
    """Parse and check etcd's member flags. Raises FlagError.

    `--help` prints the usage and raises SystemExit(0), as argparse does.
    """
    ns = _PARSER.parse_args(_go_style(sys.argv[1:] if argv is None else argv))
    name = ns.name.strip()
    if not name:
        raise FlagError("--name must not be empty")

    listen_client = _urls("--listen-client-urls", ns.listen_client_urls or DEFAULT_CLIENT_URL,
                          bind=True)
    if ns.listen_client_urls is not None and ns.advertise_client_urls is None:
        raise FlagError("--advertise-client-urls is required when --listen-client-urls "
                        "is set explicitly")
    advertise_client = _urls("--advertise-client-urls",
                             ns.advertise_client_urls or DEFAULT_CLIENT_URL)
    listen_peer = _urls("--listen-peer-urls", ns.listen_peer_urls, bind=True)
    advertise_peer = _urls("--initial-advertise-peer-urls", ns.initial_advertise_peer_urls)
    metrics_urls = (_urls("--listen-metrics-urls", ns.listen_metrics_urls, bind=True)
                    if ns.listen_metrics_urls else ())
    http_urls = (_urls("--listen-client-http-urls", ns.listen_client_http_urls, bind=True)
                 if ns.listen_client_http_urls else ())

    state = ns.initial_cluster_state
    if state not in ("new", "existing"):
        raise FlagError(f"--initial-cluster-state must be new or existing, got {state!r}")
    token = ns.initial_cluster_token
    if not token:
        raise FlagError("--initial-cluster-token must not be empty")

    if ns.initial_cluster is None:
        # etcd's default: a cluster of one, this member at its advertised URLs.
        initial = {name: list(advertise_peer)}
    else:
        initial = _initial_cluster(ns.initial_cluster)
    if name not in initial:
        raise FlagError(f"--initial-cluster has no entry for --name {name}")
    if sorted(initial[name]) != sorted(advertise_peer):
        raise FlagError(
            f"--initial-cluster has {name}={','.join(initial[name])} but "
            f"--initial-advertise-peer-urls is {','.join(advertise_peer)}")
    members = tuple(Member(n, tuple(urls), member_id(urls, token)) for n, urls in initial.items())
    me = next(m for m in members if m.name == name)

    _check_timing(ns.heartbeat_interval, ns.election_timeout)
    mode = ns.auto_compaction_mode
    if mode not in ("periodic", "revision"):
        raise FlagError(f"--auto-compaction-mode must be periodic or revision, got {mode!r}")
    retention = ns.auto_compaction_retention.strip()
    try:
        (periodic_retention if mode == "periodic" else revision_retention)(retention)
    except ConfigError as e:
        raise FlagError(str(e)) from None
    if ns.max_request_bytes == 0:
        raise FlagError("--max-request-bytes must be > 0")
    if ns.max_txn_ops == 0:
        raise FlagError("--max-txn-ops must be > 0")
    if ns.log_level not in LOG_LEVELS:
        raise FlagError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, "
                        f"got {ns.log_level!r}")

    _check_auth_token(ns.auth_token, ns.auth_token_ttl)
    # etcd serves an https metrics or HTTP URL with the client TLS files.
    _check_tls("client", listen_client + advertise_client + metrics_urls + http_urls,
               ("--cert-file", ns.cert_file), ("--key-file", ns.key_file),
               ("--trusted-ca-file", ns.trusted_ca_file),
               ("--client-cert-auth", ns.client_cert_auth))
    _check_tls("peer", listen_peer + advertise_peer,
               ("--peer-cert-file", ns.peer_cert_file), ("--peer-key-file", ns.peer_key_file),
               ("--peer-trusted-ca-file", ns.peer_trusted_ca_file),
               ("--peer-client-cert-auth", ns.peer_client_cert_auth))
    _check_cert_rules(ns.peer_cert_allowed_cn, ns.peer_cert_allowed_hostname)

    return MemberConfig(
        name=name,
        data_dir=ns.data_dir or f"{name}.etcd",
        listen_client_urls=listen_client,
        advertise_client_urls=advertise_client,
        listen_peer_urls=listen_peer,
        initial_advertise_peer_urls=advertise_peer,
        initial_cluster=members,
        initial_cluster_state=state,
        initial_cluster_token=token,
        heartbeat_interval_ms=ns.heartbeat_interval,
        election_timeout_ms=ns.election_timeout,
        snapshot_count=ns.snapshot_count or DEFAULT_SNAPSHOT_COUNT,
        snapshot_catchup_entries=ns.experimental_snapshot_catchup_entries or DEFAULT_SNAPSHOT_CATCHUP_ENTRIES,
        quota_backend_bytes=ns.quota_backend_bytes or DEFAULT_QUOTA_BYTES,
        auto_compaction_mode=mode,
        auto_compaction_retention=retention,
        max_request_bytes=ns.max_request_bytes,
        max_txn_ops=ns.max_txn_ops,
        cert_file=ns.cert_file,
        key_file=ns.key_file,
        trusted_ca_file=ns.trusted_ca_file,
        client_cert_auth=ns.client_cert_auth,
        peer_cert_file=ns.peer_cert_file,
        peer_key_file=ns.peer_key_file,
        peer_trusted_ca_file=ns.peer_trusted_ca_file,
        peer_client_cert_auth=ns.peer_client_cert_auth,
        client_crl_file=ns.client_crl_file,
        peer_crl_file=ns.peer_crl_file,
        peer_cert_allowed_cn=ns.peer_cert_allowed_cn,
        peer_cert_allowed_hostname=ns.peer_cert_allowed_hostname,
        enable_fault_injection=ns.enable_fault_injection,
        initial_election_tick_advance=ns.initial_election_tick_advance,
        log_level=ns.log_level,
        auth_token=ns.auth_token,
        auth_token_ttl=ns.auth_token_ttl,
        bcrypt_cost=ns.bcrypt_cost,
        listen_metrics_urls=metrics_urls,
        listen_client_http_urls=http_urls,
        member_id=me.id,
        cluster_id=cluster_id(m.id for m in members),
    )


def _url(flag: str, url: str, *, bind: bool = False) -> str:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:   # non-numeric or out of range
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise FlagError(f"{flag}: {url!r} is not an http(s)://host:port URL")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise FlagError(f"{flag}: {url!r} must not have a path")
    if bind and parts.hostname != "localhost":
        # A listener binds an address; a name could resolve to anything.
        try:
            ipaddress.ip_address(parts.hostname)
        except ValueError:
            raise FlagError(f"{flag}: expected an IP address to bind to in {url!r}") from None
    return f"{parts.scheme}://{parts.netloc}"


def _urls(flag: str, text: str, *, bind: bool = False) -> tuple[str, ...]:
    items = [u.strip() for u in text.split(",")]
    if not any(items):
        raise FlagError(f"{flag} must not be empty")
    if not all(items):
        raise FlagError(f"{flag}: empty URL in {text!r}")
    return tuple(_url(flag, u, bind=bind) for u in items)


def _initial_cluster(text: str) -> dict[str, list[str]]:
    """'n1=http://a:1,n1=http://a:2,n2=http://b:1' -> {n1: [a:1, a:2], n2: [b:1]}."""
    members: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for item in (s.strip() for s in text.split(",")):
        name, eq, url = item.partition("=")
        name, url = name.strip(), url.strip()
        if not eq or not name or not url:
            raise FlagError(f"--initial-cluster: {item!r} is not name=url")
        url = _url("--initial-cluster", url)
        if url in owner:
            raise FlagError(f"--initial-cluster: {url} is listed for both "
                            f"{owner[url]} and {name}")
        owner[url] = name
        members.setdefault(name, []).append(url)
    return members


def _check_cert_rules(allowed_cn: str, allowed_hostname: str) -> None:
    """Mutually exclusive, as in etcd (which stops at start with these words)."""
    from engine.transport.certcheck import CertRuleError, CertRules

    try:
        CertRules("", allowed_cn, allowed_hostname)
    except CertRuleError as e:
        raise FlagError(str(e)) from None


def _check_timing(heartbeat: int, election: int) -> None:
    # etcd's own checks and wording (embed.Config.Validate).
    if heartbeat <= 0:
        raise FlagError(f"--heartbeat-interval must be >0 (set to {heartbeat}ms)")
    if election <= 0:
        raise FlagError(f"--election-timeout must be >0 (set to {election}ms)")
    if 5 * heartbeat > election:
        raise FlagError(f"--election-timeout[{election}ms] should be at least as 5 times "
                        f"as --heartbeat-interval[{heartbeat}ms]")
    if election > MAX_ELECTION_MS:
        raise FlagError(f"--election-timeout[{election}ms] is too long, and should be set "
                        f"less than {MAX_ELECTION_MS}ms")


def _check_auth_token(opts: str, ttl: int) -> None:
    """A bad --auth-token stops the member at start, as etcd's does (its key
    files are read here; the member reads them again when it builds the store)."""
    from engine.auth.tokens import new_token_provider

    try:
        new_token_provider(opts, ttl)
    except Exception as e:  # InvalidAuthOpts, an unreadable or bad key
        raise FlagError(f"--auth-token: {e}") from None


def _check_tls(which: str, urls: tuple[str, ...], cert: tuple[str, str], key: tuple[str, str],
               ca: tuple[str, str], auth: tuple[str, bool]) -> None:
    if bool(cert[1]) != bool(key[1]):
        raise FlagError(f"{cert[0]} and {key[0]} must be given together")
    https = [u for u in urls if u.startswith("https://")]
    if https and not cert[1]:
        raise FlagError(f"{which} URL {https[0]} is https but {cert[0]} and {key[0]} "
                        f"are not set")
    if auth[1] and not ca[1]:
        raise FlagError(f"{auth[0]} needs {ca[0]} to verify certificates with")
