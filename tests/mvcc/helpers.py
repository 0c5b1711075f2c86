"""Helpers for the MVCC tests: request builders and a store harness.

The harness applies every request through the Applier, one log entry per
request, as the server will; reads not meant to go through the log use the
KVStore directly.
"""
from __future__ import annotations

import os

from engine.mvcc import Applier
from engine.mvcc.errors import MVCCError
from engine.proto import internal_pb2, rpc_pb2

IR = internal_pb2.InternalRequest
RR = rpc_pb2.RangeRequest
C = rpc_pb2.Compare


class Clock:
    """An injected clock: seconds, moved by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# -- request builders ----------------------------------------------------------

def put_req(key, value=b"", **kw) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=_b(key), value=_b(value), **kw)


def range_req(key, range_end=b"", **kw) -> rpc_pb2.RangeRequest:
    return rpc_pb2.RangeRequest(key=_b(key), range_end=_b(range_end), **kw)


def del_req(key, range_end=b"", **kw) -> rpc_pb2.DeleteRangeRequest:
    return rpc_pb2.DeleteRangeRequest(key=_b(key), range_end=_b(range_end), **kw)


def cmp(key, target: str, result: str, value, range_end=b"") -> rpc_pb2.Compare:
    c = rpc_pb2.Compare(key=_b(key), range_end=_b(range_end),
                        target=getattr(C, target), result=getattr(C, result))
    field = {"VALUE": "value", "VERSION": "version", "CREATE": "create_revision",
             "MOD": "mod_revision", "LEASE": "lease"}[target]
    setattr(c, field, _b(value) if target == "VALUE" else value)
    return c


def op(req) -> rpc_pb2.RequestOp:
    if isinstance(req, rpc_pb2.RangeRequest):
        return rpc_pb2.RequestOp(request_range=req)
    if isinstance(req, rpc_pb2.PutRequest):
        return rpc_pb2.RequestOp(request_put=req)
    if isinstance(req, rpc_pb2.DeleteRangeRequest):
        return rpc_pb2.RequestOp(request_delete_range=req)
    if isinstance(req, rpc_pb2.TxnRequest):
        return rpc_pb2.RequestOp(request_txn=req)
    raise TypeError(req)


def txn_req(compare=(), success=(), failure=()) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(compare=list(compare), success=[op(r) for r in success],
                              failure=[op(r) for r in failure])


def internal(req, rid: int = 0) -> IR:
    """Wrap an etcd request message in an InternalRequest."""
    kind = {
        rpc_pb2.RangeRequest: "range", rpc_pb2.PutRequest: "put",
        rpc_pb2.DeleteRangeRequest: "delete_range", rpc_pb2.TxnRequest: "txn",
        rpc_pb2.CompactionRequest: "compaction", rpc_pb2.LeaseGrantRequest: "lease_grant",
        rpc_pb2.LeaseRevokeRequest: "lease_revoke", rpc_pb2.AlarmRequest: "alarm",
        rpc_pb2.LeaseCheckpointRequest: "lease_checkpoint",
    }[type(req)]
    r = IR(id=rid)
    getattr(r, kind).CopyFrom(req)
    return r


def _b(x) -> bytes:
    return x.encode() if isinstance(x, str) else x


# -- harness -------------------------------------------------------------------

class Harness:
    def __init__(self, path: str, **kw) -> None:
        self.path = path
        self.kw = kw
        self.a = Applier(path, **kw)
        self.next_index = self.a.consistent_index + 1

    @classmethod
    def in_dir(cls, tmp_path, **kw) -> "Harness":
        return cls(os.path.join(str(tmp_path), "member", "snap", "db"), **kw)

    @property
    def kv(self):
        return self.a.kv

    @property
    def rev(self) -> int:
        return self.a.current_revision

    def apply(self, *reqs):
        """Apply etcd requests as one batch, one log entry each; results."""
        irs = [r if isinstance(r, IR) else internal(r, rid=self.next_index + i) for i, r in enumerate(reqs)]
        idx = list(range(self.next_index, self.next_index + len(irs)))
        self.next_index += len(irs)
        return self.a.apply_batch(idx[-1], irs, indexes=idx)

    def do(self, req):
        """Apply one request; raise its error if it failed."""
        (res,) = self.apply(req)
        if isinstance(res, Exception):
            raise res
        return res

    def put(self, key, value=b"", **kw):
        return self.do(put_req(key, value, **kw))

    def delete(self, key, range_end=b"", **kw):
        return self.do(del_req(key, range_end, **kw))

    def txn(self, compare=(), success=(), failure=()):
        return self.do(txn_req(compare, success, failure))

    def compact(self, rev: int):
        return self.do(rpc_pb2.CompactionRequest(revision=rev))

    def get(self, key, range_end=b"", **kw) -> rpc_pb2.RangeResponse:
        return self.a.kv.range(range_req(key, range_end, **kw))

    def value(self, key, rev: int = 0):
        r = self.get(key, revision=rev)
        return r.kvs[0].value if r.kvs else None

    def reopen(self) -> None:
        self.a.close()
        self.a = Applier(self.path, **self.kw)
        self.next_index = self.a.consistent_index + 1

    def restore(self, data: bytes) -> None:
        """Install a snapshot; the log continues after the snapshot's index."""
        self.a.restore(data)
        self.next_index = self.a.consistent_index + 1

    def close(self) -> None:
        self.a.close()


def kv_tuple(kv) -> tuple:
    return (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def kvs(resp) -> list[tuple]:
    return [kv_tuple(kv) for kv in resp.kvs]


def is_error(res, cls=MVCCError) -> bool:
    return isinstance(res, cls)
