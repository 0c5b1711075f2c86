"""The etcd conditions the MVCC layer decides, one exception class each.

Each class carries etcd's exact error text (``etcd_message``, from
etcdserver/api/v3rpc/rpctypes/error.go at v3.4.23, see
/work/shared/reference/etcd-compat.md): clientv3 maps a gRPC status back to
its typed error by that text, so the API layer must send it verbatim. The
gRPC code is decided there, through one table; ``grpc_code_name`` here is the
code etcd uses, recorded so that table can be checked against it.

The applier returns these as per-request results instead of raising them
out of a batch.
"""
from __future__ import annotations


class MVCCError(Exception):
    etcd_message = "etcdserver: unknown error"
    grpc_code_name = "UNKNOWN"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.etcd_message)

    def __eq__(self, other: object) -> bool:
        # Two results are equal when they report the same condition: lets
        # tests and replicas compare whole result lists.
        return type(self) is type(other) and self.args == other.args  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash((type(self), self.args))


class Compacted(MVCCError):
    """The revision asked for was compacted away (Range, Compact, HashKV).

    A watch does not get this error: it is told the compact revision and
    cancelled instead. ``compact_revision`` is the store's compact revision.
    """

    etcd_message = "etcdserver: mvcc: required revision has been compacted"
    grpc_code_name = "OUT_OF_RANGE"

    def __init__(self, compact_revision: int = 0) -> None:
        super().__init__()
        self.compact_revision = compact_revision


class FutureRevision(MVCCError):
    """The revision asked for is newer than the store's current revision."""

    etcd_message = "etcdserver: mvcc: required revision is a future revision"
    grpc_code_name = "OUT_OF_RANGE"


class KeyNotFound(MVCCError):
    """Put with ignore_value or ignore_lease on a key that does not exist."""

    etcd_message = "etcdserver: key not found"
    grpc_code_name = "INVALID_ARGUMENT"


class LeaseNotFound(MVCCError):
    """The lease named by a Put, Revoke, KeepAlive or TimeToLive does not exist."""

    etcd_message = "etcdserver: requested lease not found"
    grpc_code_name = "NOT_FOUND"


class LeaseExists(MVCCError):
    """LeaseGrant with an ID that is already granted."""

    etcd_message = "etcdserver: lease already exists"
    grpc_code_name = "FAILED_PRECONDITION"


class LeaseTTLTooLarge(MVCCError):
    """LeaseGrant with TTL above MAX_LEASE_TTL (etcd's MaxLeaseTTL, 9e9 s)."""

    etcd_message = "etcdserver: too large lease TTL"
    grpc_code_name = "OUT_OF_RANGE"


class NoSpace(MVCCError):
    """The backend quota is exceeded, or the NOSPACE alarm is active."""

    etcd_message = "etcdserver: mvcc: database space exceeded"
    grpc_code_name = "RESOURCE_EXHAUSTED"


class Corrupt(MVCCError):
    """The CORRUPT alarm is active: the applier refuses KV and lease requests."""

    etcd_message = "etcdserver: corrupt cluster"
    grpc_code_name = "DATA_LOSS"


class Unsupported(MVCCError):
    """A request kind this layer does not apply and no handler was registered for."""

    etcd_message = "etcdserver: unknown method"
    grpc_code_name = "UNIMPLEMENTED"


class LeaseNotPrimary(MVCCError):
    """KeepAlive/expiry asked of a lessor that is not the primary (leader).

    etcd's lease.ErrNotPrimary has no rpctypes entry; the server forwards the
    request to the leader (or answers "etcdserver: not leader") instead.
    """

    etcd_message = "not a primary lessor"
    grpc_code_name = "UNKNOWN"


ALL_ERRORS = (
    Compacted,
    FutureRevision,
    KeyNotFound,
    LeaseNotFound,
    LeaseExists,
    LeaseTTLTooLarge,
    NoSpace,
    Corrupt,
    Unsupported,
    LeaseNotPrimary,
)


class InvalidSnapshot(ValueError):
    """A snapshot (from `raftnode snapshot restore`, a peer, or restore())
    that is not exactly a store database of ours: unknown schema objects
    (tables, indexes, views, triggers), our tables with other SQL, rows of
    the wrong shape or type, or a file SQLite cannot read. Nothing of it was
    installed."""
