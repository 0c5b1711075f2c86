"""A member's configuration (MemberConfig) and etcd's id derivation.

The server owns what a member is configured with; the CLI (engine/cli/flags)
only turns etcd's command-line flags into a MemberConfig, so the server never
imports the layer that starts it.

Member and cluster ids are derived the way etcd derives them for a new
cluster, so every member computes the same ids for everyone from the same
--initial-cluster and --initial-cluster-token:

    member_id  = first 8 bytes (big-endian) of sha1(sorted peer URLs joined + token)
    cluster_id = first 8 bytes (big-endian) of sha1(sorted member ids as 8-byte
                 big-endian words)

Checked against etcd 3.4.23: the same flags give the same member and
cluster ids as real etcd reports (e.g. its well-known default member
8e9e05c52164694d for http://localhost:2380 and token "etcd-cluster").
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Iterable

DEFAULT_NAME = "default"
DEFAULT_CLIENT_URL = "http://127.0.0.1:2379"
DEFAULT_PEER_URL = "http://127.0.0.1:2380"
DEFAULT_TOKEN = "etcd-cluster"
DEFAULT_HEARTBEAT_MS = 100
DEFAULT_ELECTION_MS = 1000
DEFAULT_SNAPSHOT_COUNT = 100_000
DEFAULT_SNAPSHOT_CATCHUP_ENTRIES = 5000
DEFAULT_QUOTA_BYTES = 2 << 30       # 2 GiB
DEFAULT_MAX_REQUEST_BYTES = 1_572_864   # 1.5 MiB
DEFAULT_MAX_TXN_OPS = 128
DEFAULT_AUTH_TOKEN = "simple"
DEFAULT_AUTH_TOKEN_TTL = 300        # seconds a simple token lives unused
DEFAULT_BCRYPT_COST = 10


class ConfigError(ValueError):
    """A value a member cannot be configured with; str() is a one-line message."""


@dataclasses.dataclass(frozen=True)
class Member:
    """One entry of --initial-cluster."""
    name: str
    peer_urls: tuple[str, ...]
    id: int


@dataclasses.dataclass(frozen=True)
class MemberConfig:
    name: str
    data_dir: str
    listen_client_urls: tuple[str, ...]
    advertise_client_urls: tuple[str, ...]
    listen_peer_urls: tuple[str, ...]
    initial_advertise_peer_urls: tuple[str, ...]
    initial_cluster: tuple[Member, ...]     # in command-line order
    initial_cluster_state: str              # "new" | "existing"
    initial_cluster_token: str
    heartbeat_interval_ms: int
    election_timeout_ms: int
    snapshot_count: int
    quota_backend_bytes: int
    auto_compaction_mode: str               # "periodic" | "revision"
    auto_compaction_retention: str          # as given: "0", "1" (hours), "5m", "1000"
    max_request_bytes: int
    max_txn_ops: int
    cert_file: str
    key_file: str
    trusted_ca_file: str
    client_cert_auth: bool
    peer_cert_file: str
    peer_key_file: str
    peer_trusted_ca_file: str
    peer_client_cert_auth: bool
    enable_fault_injection: bool
    log_level: str
    member_id: int
    cluster_id: int
    # Entries kept in the log after a snapshot for slow followers to catch up
    # from (etcd's SnapshotCatchUpEntries, a flag since 3.5.9).
    snapshot_catchup_entries: int = DEFAULT_SNAPSHOT_CATCHUP_ENTRIES
    # Auth (etcd's --auth-token, --auth-token-ttl, --bcrypt-cost).
    auth_token: str = DEFAULT_AUTH_TOKEN        # "simple" or "jwt,pub-key=...,priv-key=...,sign-method=..."
    auth_token_ttl: int = DEFAULT_AUTH_TOKEN_TTL
    bcrypt_cost: int = DEFAULT_BCRYPT_COST
    # etcd's --listen-metrics-urls (/metrics and /health only) and 3.5's
    # --listen-client-http-urls (all of HTTP: /health /version /metrics, the JSON gateway).
    listen_metrics_urls: tuple[str, ...] = ()
    listen_client_http_urls: tuple[str, ...] = ()
    # etcd's certificate rules beyond the CA (engine/transport/certcheck):
    # CRLs for the client and peer listeners, and the one CN or hostname a
    # peer's certificate must carry.
    client_crl_file: str = ""
    peer_crl_file: str = ""
    peer_cert_allowed_cn: str = ""
    peer_cert_allowed_hostname: str = ""
    # etcd's --initial-election-tick-advance (default true): at start, fast-
    # forward the election clock so a fresh cluster elects in about one
    # heartbeat instead of a whole election timeout (ReadyLoop._advance_ticks_at_boot).
    initial_election_tick_advance: bool = True

    @property
    def election_ticks(self) -> int:
        """The raft core's election timeout in heartbeat ticks (etcd's ElectionTicks)."""
        return self.election_timeout_ms // self.heartbeat_interval_ms

    @property
    def is_new_cluster(self) -> bool:
        return self.initial_cluster_state == "new"

    @property
    def peers(self) -> tuple[Member, ...]:
        """The other members of --initial-cluster."""
        return tuple(m for m in self.initial_cluster if m.id != self.member_id)

    @property
    def auto_compaction_period_seconds(self) -> float:
        """Periodic mode: keep this much history (0 = off). Revision mode: 0."""
        if self.auto_compaction_mode != "periodic":
            return 0.0
        return periodic_retention(self.auto_compaction_retention)

    @property
    def auto_compaction_revisions(self) -> int:
        """Revision mode: keep this many revisions (0 = off). Periodic mode: 0."""
        if self.auto_compaction_mode != "revision":
            return 0
        return revision_retention(self.auto_compaction_retention)

    @property
    def client_tls(self) -> bool:
        return any(u.startswith("https://") for u in self.listen_client_urls)

    @property
    def peer_tls(self) -> bool:
        return any(u.startswith("https://") for u in self.listen_peer_urls)


# -- ids ---------------------------------------------------------------------------

def _first_uint64(data: bytes) -> int:
    # 0 means "no member" to the raft core; a hash of 0 is astronomically
    # unlikely, but must still never become an id.
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big") or 1


def member_id(peer_urls: Iterable[str], token: str) -> int:
    """A member's id: stable for its peer URLs (order does not matter) and token."""
    return _first_uint64("".join(sorted(peer_urls)).encode() + token.encode())


def cluster_id(member_ids: Iterable[int], token: str | None = None) -> int:
    """The cluster's id: stable for its founding members, in any order.

    `token` is accepted for symmetry with member_id but not hashed again, as
    in etcd: it is already inside every member id, and hashing it twice
    would give ids that differ from the ones real etcd reports.
    """
    return _first_uint64(b"".join(i.to_bytes(8, "big") for i in sorted(member_ids)))


# -- auto-compaction retention -------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}


def periodic_retention(text: str) -> float:
    """etcd's periodic retention in seconds: a bare integer counts hours,
    anything else is a Go duration ("1h30m", "5m", "90s"). Raises ConfigError."""
    if re.fullmatch(r"\d+", text):
        return int(text) * 3600.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ConfigError(f"--auto-compaction-retention: {text!r} is neither a number of hours "
                          f"nor a duration like 5m or 1h")
    return total


def revision_retention(text: str) -> int:
    """Revision mode's retention: a number of revisions. Raises ConfigError."""
    if not re.fullmatch(r"\d+", text):
        raise ConfigError(f"--auto-compaction-retention: revision mode needs a number of "
                          f"revisions, got {text!r}")
    return int(text)
