"""The backend quota: refuse writes that would grow the database past a limit.

etcd's model (``etcdserver/quota.go``), which this keeps:

* Before proposing, the server asks ``Quota.available(request)``: the local
  database size plus an estimate of the request's cost must stay under the
  quota. If not, the server does not propose the write; it answers
  NoSpace and proposes ``AlarmRequest{ACTIVATE, NOSPACE}`` instead.
  (``check`` raises NoSpace for that.)
* Once the NOSPACE alarm is applied (on every member, from the log), the
  applier refuses Put, Txn with puts and LeaseGrant with NoSpace; reads,
  deletes, compaction and lease revocation keep working, so an operator can
  free space (compact, defrag) and then ``alarm disarm``.

Why the size test is not made at apply time: database sizes differ between
members (physical compaction and defrag run at different moments), so a
size test during apply would let members decide the same entry differently
and diverge. The alarm, being replicated, is the deterministic switch.
(etcd additionally returns NoSpace from apply after applying a write that
crossed the quota; we do not, so a NoSpace answer always means "not
applied".)
"""
from __future__ import annotations

from engine.proto import rpc_pb2

from . import errors
from .backend import Backend

DEFAULT_QUOTA_BYTES = 2 * 1024 ** 3  # etcd's DefaultQuotaBytes
MAX_QUOTA_BYTES = 8 * 1024 ** 3      # etcd's suggested maximum (warned about, not enforced)

# etcd's cost estimates for a request's effect on the database.
KV_OVERHEAD = 256
LEASE_OVERHEAD = 64


def cost_put(req: rpc_pb2.PutRequest) -> int:
    return KV_OVERHEAD + req.ByteSize()


def cost_txn(req: rpc_pb2.TxnRequest) -> int:
    """Cost of the heavier branch; nested txns count (etcd skips them)."""
    def branch(ops) -> int:
        n = 0
        for op in ops:
            kind = op.WhichOneof("request")
            if kind == "request_put":
                r = op.request_put
                n += KV_OVERHEAD + len(r.key) + len(r.value)
            elif kind == "request_txn":
                n += cost_txn(op.request_txn)
        return n
    return max(branch(req.success), branch(req.failure))


def cost(req) -> int:
    """Estimated growth in bytes for an InternalRequest (0: no growth)."""
    kind = req.WhichOneof("request")
    if kind == "put":
        return cost_put(req.put)
    if kind == "txn":
        return cost_txn(req.txn)
    if kind == "lease_grant":
        return LEASE_OVERHEAD
    return 0


class Quota:
    def __init__(self, backend: Backend, quota_bytes: int = 0) -> None:
        """quota_bytes: 0 means etcd's default (2 GiB), < 0 means no quota."""
        self._b = backend
        self.quota_bytes = DEFAULT_QUOTA_BYTES if quota_bytes == 0 else quota_bytes

    @property
    def enabled(self) -> bool:
        return self.quota_bytes > 0

    def available(self, req) -> bool:
        if not self.enabled:
            return True
        c = cost(req)
        if c == 0:
            return True
        return self._b.db_size() + c < self.quota_bytes

    def check(self, req) -> None:
        if not self.available(req):
            raise errors.NoSpace()
