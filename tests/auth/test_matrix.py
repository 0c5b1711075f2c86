"""The permission matrix of issue 10: each RPC x each kind of caller, on real
etcd 3.4 and on raftnode, every cell's answer (gRPC code and text, or the
watch's cancel reason) the same.

Callers: no token, a token nobody issued, root, a user with no role
("nobody"), a user whose role may read and write the key range the RPCs
use ("reader", READWRITE on prefix mx/). Calls go over gRPC directly (a
token in the `token` metadata, as clientv3 sends it), so the cells cost
milliseconds; the set-up authenticates each user once.

Runs on the 1-member pair the judge session used (it leaves auth off) and
removes everything it made.
"""
from __future__ import annotations

import grpc

from engine.proto import auth_pb2, rpc_pb2, rpc_pb2_grpc

T = 10  # seconds: deadline of every call
ROOT_PW = "rootpw"


class Client:
    def __init__(self, endpoint: str) -> None:
        self.ch = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.ch)
        self.auth = rpc_pb2_grpc.AuthStub(self.ch)
        self.lease = rpc_pb2_grpc.LeaseStub(self.ch)
        self.watch = rpc_pb2_grpc.WatchStub(self.ch)
        self.maint = rpc_pb2_grpc.MaintenanceStub(self.ch)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.ch)

    def close(self) -> None:
        self.ch.close()


def outcome(fn) -> tuple[str, str]:
    try:
        fn()
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""
    return "OK", ""


def _try(fn) -> None:
    try:
        fn()
    except grpc.RpcError:
        pass


def set_up(c: Client) -> dict[str, list[tuple[str, str]]]:
    """Users, role, a key with a lease; auth on. Returns each caller's metadata."""
    a = c.auth
    _try(lambda: a.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password=ROOT_PW), timeout=T))
    a.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=T)
    a.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="mx-rw"), timeout=T)
    a.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(name="mx-rw", perm=auth_pb2.Permission(
        permType=auth_pb2.Permission.READWRITE, key=b"mx/", range_end=b"mx0")), timeout=T)
    a.UserAdd(rpc_pb2.AuthUserAddRequest(name="mx-reader", password="r"), timeout=T)
    a.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="mx-reader", role="mx-rw"), timeout=T)
    a.UserAdd(rpc_pb2.AuthUserAddRequest(name="mx-nobody", password="n"), timeout=T)
    c.kv.Put(rpc_pb2.PutRequest(key=b"mx/k", value=b"v"), timeout=T)
    a.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=T)

    def token(name, pw):
        return [("token", a.Authenticate(rpc_pb2.AuthenticateRequest(name=name, password=pw), timeout=T).token)]

    return {"none": [], "bad-token": [("token", "notatoken")], "root": token("root", ROOT_PW),
            "nobody": token("mx-nobody", "n"), "reader": token("mx-reader", "r")}


def tear_down(c: Client, root_md) -> None:
    a = c.auth
    _try(lambda: a.AuthDisable(rpc_pb2.AuthDisableRequest(), metadata=root_md, timeout=T))
    for name in ("mx-reader", "mx-nobody"):
        _try(lambda: a.UserDelete(rpc_pb2.AuthUserDeleteRequest(name=name), timeout=T))
    _try(lambda: a.RoleDelete(rpc_pb2.AuthRoleDeleteRequest(role="mx-rw"), timeout=T))
    _try(lambda: c.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"mx/", range_end=b"mx0"), timeout=T))


def watch_outcome(c: Client, md, key: bytes) -> tuple[str, str]:
    """The first answer to a watch create: created, or canceled with a reason."""
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key))
    stream = c.watch.Watch(iter([req]), metadata=md, timeout=T)
    try:
        first = next(stream)
        return ("CANCELED", first.cancel_reason) if first.canceled else ("CREATED", "")
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""
    finally:
        stream.cancel()


def cells(c: Client, md) -> dict[str, tuple[str, str]]:
    kv, lease, m = c.kv, c.lease, c.maint
    out = {
        "Range mx/k": outcome(lambda: kv.Range(rpc_pb2.RangeRequest(key=b"mx/k"), metadata=md, timeout=T)),
        "Range mx/ prefix": outcome(lambda: kv.Range(
            rpc_pb2.RangeRequest(key=b"mx/", range_end=b"mx0"), metadata=md, timeout=T)),
        "Range all": outcome(lambda: kv.Range(
            rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"), metadata=md, timeout=T)),
        "Put mx/p": outcome(lambda: kv.Put(rpc_pb2.PutRequest(key=b"mx/p", value=b"1"), metadata=md, timeout=T)),
        "Put other": outcome(lambda: kv.Put(rpc_pb2.PutRequest(key=b"other", value=b"1"), metadata=md, timeout=T)),
        "Put mx/p prev_kv": outcome(lambda: kv.Put(
            rpc_pb2.PutRequest(key=b"mx/p", value=b"2", prev_kv=True), metadata=md, timeout=T)),
        "DeleteRange mx/p": outcome(lambda: kv.DeleteRange(
            rpc_pb2.DeleteRangeRequest(key=b"mx/p"), metadata=md, timeout=T)),
        "Txn mx/ only": outcome(lambda: kv.Txn(rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=b"mx/k", target=rpc_pb2.Compare.VERSION, version=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"mx/t", value=b"1"))],
            failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"mx/k"))]),
            metadata=md, timeout=T)),
        "Txn other in failure": outcome(lambda: kv.Txn(rpc_pb2.TxnRequest(
            success=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"mx/k"))],
            failure=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"other", value=b"1"))]),
            metadata=md, timeout=T)),
        "Compact": outcome(lambda: kv.Compact(rpc_pb2.CompactionRequest(revision=1), metadata=md, timeout=T)),
        "Watch mx/k": watch_outcome(c, md, b"mx/k"),
        "Watch other": watch_outcome(c, md, b"other"),
        "LeaseGrant": outcome(lambda: lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), metadata=md, timeout=T)),
        "Status": outcome(lambda: m.Status(rpc_pb2.StatusRequest(), metadata=md, timeout=T)),
        "Alarm list": outcome(lambda: m.Alarm(rpc_pb2.AlarmRequest(), metadata=md, timeout=T)),
        "Hash": outcome(lambda: m.Hash(rpc_pb2.HashRequest(), metadata=md, timeout=T)),
        "HashKV": outcome(lambda: m.HashKV(rpc_pb2.HashKVRequest(), metadata=md, timeout=T)),
        "Defragment": outcome(lambda: m.Defragment(rpc_pb2.DefragmentRequest(), metadata=md, timeout=T)),
        "Snapshot": outcome(lambda: next(m.Snapshot(rpc_pb2.SnapshotRequest(), metadata=md, timeout=T))),
        "MemberList": outcome(lambda: c.cluster.MemberList(rpc_pb2.MemberListRequest(), metadata=md, timeout=T)),
        # an id no member has: the admin check comes first (etcd's
        # checkMembershipOperationPermission), then "member not found"
        "MemberRemove": outcome(lambda: c.cluster.MemberRemove(
            rpc_pb2.MemberRemoveRequest(ID=0x1234), metadata=md, timeout=T)),
        "MemberPromote": outcome(lambda: c.cluster.MemberPromote(
            rpc_pb2.MemberPromoteRequest(ID=0x1234), metadata=md, timeout=T)),
        "UserList": outcome(lambda: c.auth.UserList(rpc_pb2.AuthUserListRequest(), metadata=md, timeout=T)),
        "UserGet mx-reader": outcome(lambda: c.auth.UserGet(
            rpc_pb2.AuthUserGetRequest(name="mx-reader"), metadata=md, timeout=T)),
        "RoleGet mx-rw": outcome(lambda: c.auth.RoleGet(rpc_pb2.AuthRoleGetRequest(role="mx-rw"), metadata=md, timeout=T)),
        "RoleAdd": outcome(lambda: c.auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="mx-new"), metadata=md, timeout=T)),
    }
    return out


def lease_cells(c: Client, md, root_md) -> dict[str, tuple[str, str]]:
    """LeaseRevoke of a lease root attached mx/l to (write on every attached key needed)."""
    lid = c.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), metadata=root_md, timeout=T).ID
    c.kv.Put(rpc_pb2.PutRequest(key=b"mx/l", value=b"1", lease=lid), metadata=root_md, timeout=T)
    return {
        "Put with that lease": outcome(lambda: c.kv.Put(
            rpc_pb2.PutRequest(key=b"mx/q", value=b"1", lease=lid), metadata=md, timeout=T)),
        "LeaseRevoke": outcome(lambda: c.lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), metadata=md, timeout=T)),
    }


def run_side(endpoint: str) -> dict[tuple[str, str], tuple[str, str]]:
    c = Client(endpoint)
    table: dict[tuple[str, str], tuple[str, str]] = {}
    callers = {}
    try:
        callers = set_up(c)
        for who, md in callers.items():
            for rpc, res in {**cells(c, md), **lease_cells(c, md, callers["root"])}.items():
                table[(who, rpc)] = res
            _try(lambda: c.auth.RoleDelete(rpc_pb2.AuthRoleDeleteRequest(role="mx-new"),
                                           metadata=callers["root"], timeout=T))
    finally:
        tear_down(c, callers.get("root", []))
        c.close()
    return table


def test_permission_matrix(auth_pair):
    ref = run_side(auth_pair.ref.endpoints[0])
    cand = run_side(auth_pair.cand.endpoints[0])
    assert set(ref) == set(cand)
    diffs = [f"{who:>9} | {rpc:<22} | etcd {ref[(who, rpc)]} | {auth_pair.cand.label} {cand[(who, rpc)]}"
             for who, rpc in sorted(ref) if ref[(who, rpc)] != cand[(who, rpc)]]
    assert not diffs, "cells that differ:\n" + "\n".join(diffs)
    # the matrix is not trivially all-OK or all-refused
    assert ref[("reader", "Put mx/p")] == ("OK", "") and ref[("nobody", "Put mx/p")][0] == "PERMISSION_DENIED"
