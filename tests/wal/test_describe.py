"""describe_entry: the one-line text of a log entry."""
from __future__ import annotations

from engine.proto import internal_pb2, rpc_pb2
from engine.proto import raft_pb2 as pb
from engine.wal import describe_entry

from .helpers import ent


def normal(**request) -> pb.Entry:
    return ent(5, 2, internal_pb2.InternalRequest(id=77, **request).SerializeToString())


def test_requests():
    assert describe_entry(normal(put=rpc_pb2.PutRequest(key=b"foo", value=b"bar"))) == 'put key="foo" value="bar" lease=0'
    assert describe_entry(normal(put=rpc_pb2.PutRequest(key=b"k", value=b"v", lease=9, prev_kv=True))) == (
        'put key="k" value="v" lease=9 prev_kv'
    )
    assert describe_entry(normal(delete_range=rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b"))) == (
        'delete key="a" range_end="b"'
    )
    assert describe_entry(normal(delete_range=rpc_pb2.DeleteRangeRequest(key=b"a"))) == 'delete key="a"'
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"a")],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a"))] * 2,
    )
    assert describe_entry(normal(txn=txn)) == "txn compares=1 success=2 failure=0"
    assert describe_entry(normal(lease_grant=rpc_pb2.LeaseGrantRequest(ID=7, TTL=60))) == "lease-grant id=7 ttl=60"
    assert describe_entry(normal(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=7))) == "lease-revoke id=7"
    assert describe_entry(normal(compaction=rpc_pb2.CompactionRequest(revision=12))) == "compaction rev=12"
    alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=3, alarm=rpc_pb2.NOSPACE)
    assert describe_entry(normal(alarm=alarm)) == "alarm activate member=3 alarm=NOSPACE"


def test_secrets_stay_out_of_generic_text():
    text = describe_entry(normal(auth_user_add=rpc_pb2.AuthUserAddRequest(name="root", password="$hash$")))
    assert text.startswith("auth-user-add ") and 'name="root"' in text
    assert "$hash$" not in text and "password=<redacted>" in text


def test_binary_and_long_values_stay_on_one_line():
    text = describe_entry(normal(put=rpc_pb2.PutRequest(key=b'\x00"\n\xff', value=b"v" * 100)))
    assert text == 'put key="\\x00\\"\\n\\xff" value="' + "v" * 64 + '"...(100 bytes) lease=0'
    assert "\n" not in text


def test_empty_conf_change_and_undecodable():
    assert describe_entry(ent(3, 1)) == "empty"
    cc = pb.ConfChange(type=pb.ConfChangeAddNode, node_id=3)
    assert describe_entry(ent(4, 1, cc.SerializeToString(), pb.EntryConfChange)) == "conf-change add-node node=3"
    ctx = internal_pb2.ConfChangeContext(
        member=rpc_pb2.Member(ID=4, name="n4", peerURLs=["http://127.0.0.1:2380"], isLearner=True)
    )
    cc = pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=4, context=ctx.SerializeToString())
    assert describe_entry(ent(4, 1, cc.SerializeToString(), pb.EntryConfChange)) == (
        'conf-change add-learner-node node=4 name="n4" peer_urls=http://127.0.0.1:2380 learner'
    )
    assert describe_entry(ent(6, 1, b"\xff\xff\xff")) == "undecodable ffffff"
    # parses as a protobuf, but is no request
    assert describe_entry(ent(6, 1, internal_pb2.InternalRequest(id=5).SerializeToString())) == "undecodable 0805"
