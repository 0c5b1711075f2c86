"""entry_text: the one-line text of a log entry (the requests decoded)."""
from __future__ import annotations

from engine.proto import internal_pb2, rpc_pb2
from engine.proto import raft_pb2 as pb
from engine.api.entry_text import entry_text


def ent(index: int, term: int = 1, data: bytes = b"", type: int = pb.EntryNormal) -> pb.Entry:
    return pb.Entry(index=index, term=term, data=data, type=type)


def normal(**request) -> pb.Entry:
    return ent(5, 2, internal_pb2.InternalRequest(id=77, **request).SerializeToString())


def test_requests():
    assert entry_text(normal(put=rpc_pb2.PutRequest(key=b"foo", value=b"bar"))) == 'put key="foo" value="bar" lease=0'
    assert entry_text(normal(put=rpc_pb2.PutRequest(key=b"k", value=b"v", lease=9, prev_kv=True))) == (
        'put key="k" value="v" lease=9 prev_kv'
    )
    assert entry_text(normal(delete_range=rpc_pb2.DeleteRangeRequest(key=b"a", range_end=b"b"))) == (
        'delete key="a" range_end="b"'
    )
    assert entry_text(normal(delete_range=rpc_pb2.DeleteRangeRequest(key=b"a"))) == 'delete key="a"'
    txn = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"a")],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"a"))] * 2,
    )
    assert entry_text(normal(txn=txn)) == "txn compares=1 success=2 failure=0"
    assert entry_text(normal(lease_grant=rpc_pb2.LeaseGrantRequest(ID=7, TTL=60))) == "lease-grant id=7 ttl=60"
    assert entry_text(normal(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=7))) == "lease-revoke id=7"
    assert entry_text(normal(compaction=rpc_pb2.CompactionRequest(revision=12))) == "compaction rev=12"
    alarm = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=3, alarm=rpc_pb2.NOSPACE)
    assert entry_text(normal(alarm=alarm)) == "alarm activate member=3 alarm=NOSPACE"


def test_secrets_stay_out_of_generic_text():
    text = entry_text(normal(auth_user_add=rpc_pb2.AuthUserAddRequest(name="root", password="$hash$")))
    assert text.startswith("auth-user-add ") and 'name="root"' in text
    assert "$hash$" not in text and "password=<hash>" in text
    text = entry_text(normal(authenticate=internal_pb2.InternalAuthenticateRequest(
        name="alice", simple_token="SeCrEt.12")))
    assert text.startswith("authenticate ") and 'name="alice"' in text
    assert "SeCrEt" not in text and "simple_token=<redacted>" in text


def test_binary_and_long_values_stay_on_one_line():
    text = entry_text(normal(put=rpc_pb2.PutRequest(key=b'\x00"\n\xff', value=b"v" * 100)))
    assert text == 'put key="\\x00\\"\\n\\xff" value="' + "v" * 64 + '"...(100 bytes) lease=0'
    assert "\n" not in text


def test_empty_conf_change_and_undecodable():
    assert entry_text(ent(3, 1)) == "empty"
    cc = pb.ConfChange(type=pb.ConfChangeAddNode, node_id=3)
    assert entry_text(ent(4, 1, cc.SerializeToString(), pb.EntryConfChange)) == "conf-change add-node node=3"
    ctx = internal_pb2.ConfChangeContext(
        member=rpc_pb2.Member(ID=4, name="n4", peerURLs=["http://127.0.0.1:2380"], isLearner=True)
    )
    cc = pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=4, context=ctx.SerializeToString())
    assert entry_text(ent(4, 1, cc.SerializeToString(), pb.EntryConfChange)) == (
        'conf-change add-learner-node node=4 name="n4" peer_urls=http://127.0.0.1:2380 learner'
    )
    assert entry_text(ent(6, 1, b"\xff\xff\xff")) == "undecodable ffffff"
    # parses as a protobuf, but is no request
    assert entry_text(ent(6, 1, internal_pb2.InternalRequest(id=5).SerializeToString())) == "undecodable 0805"


def test_joint_consensus_entries():
    # The leader's own leave of a joint config is an EMPTY EntryConfChangeV2:
    # not the "empty" of a new leader's normal entry.
    v2 = pb.EntryConfChangeV2
    assert entry_text(pb.Entry(type=v2)) == "conf-change-v2 leave-joint"
    cc = pb.ConfChangeV2(changes=[pb.ConfChangeSingle(type=pb.ConfChangeAddLearnerNode, node_id=4),
                                      pb.ConfChangeSingle(type=pb.ConfChangeRemoveNode, node_id=2)])
    assert entry_text(pb.Entry(type=v2, data=cc.SerializeToString())) == "conf-change-v2 l4 r2"
    # A peer's garbage stays one line of hex.
    assert entry_text(pb.Entry(type=v2, data=b"\xff\xff")) == "undecodable ffff"
