"""Flow control and limits by bytes (etcd-io/raft MaxInflightBytes,
MaxUncommittedEntriesSize): a follower behind a slow link holds at most so
many bytes of the leader's appends in flight, and a leader refuses proposals
past a cap on its uncommitted tail."""
from __future__ import annotations

import pytest

from engine.proto import raft_pb2 as pb
from engine.raft import Config, ProposalDroppedError, RawNode, StateType
from engine.raft.progress import Inflights
from tests.raft.helpers import storage_with


def test_inflights_full_by_bytes_and_freed_by_acks():
    f = Inflights(size=100, max_bytes=10)
    f.add(1, 4)
    f.add(2, 4)
    assert not f.full()
    f.add(3, 4)                 # 12 bytes: over the cap after this one
    assert f.full() and f.bytes == 12
    f.free_le(2)
    assert not f.full() and f.bytes == 4
    f.free_first_one()
    assert f.bytes == 0 and f.count() == 0
    f.add(4, 50)                # one message bigger than the cap still goes
    assert f.full()
    f.reset()
    assert f.bytes == 0 and not f.full()


def _leader(**kw) -> RawNode:
    rn = RawNode(Config(id=1, storage=storage_with((1, 2), []), pre_vote=False, **kw))
    rn.campaign()
    rn.advance(rn.ready())      # the self-vote counts once its Ready is persisted
    rn.step(pb.Message(type=pb.MsgVoteResp, from_=2, to=1, term=1))
    assert rn.raft.state is StateType.LEADER
    rd = rn.ready()
    rn.raft.log.storage.append(rd.entries)
    rn.advance(rd)
    rn.step(pb.Message(type=pb.MsgAppResp, from_=2, to=1, term=1, index=1))
    rd = rn.ready()
    rn.advance(rd)
    return rn


def _apps_to_2(rn: RawNode) -> list[pb.Message]:
    rd = rn.ready()
    rn.raft.log.storage.append(rd.entries)
    if rd.hard_state is not None:
        rn.raft.log.storage.set_hard_state(rd.hard_state)
    rn.advance(rd)
    return [m for m in rd.messages if m.type == pb.MsgApp and m.to == 2 and m.entries]


def test_leader_stops_sending_at_max_inflight_bytes():
    rn = _leader(max_inflight_bytes=10)
    assert rn.raft.prs[2].state.value == "replicate"
    sent = []
    for i in range(5):
        rn.propose(b"abcd")      # 4 bytes each
        sent += _apps_to_2(rn)
    assert len(sent) == 3        # 12 bytes in flight: the window is full
    rn.step(pb.Message(type=pb.MsgAppResp, from_=2, to=1, term=1, index=sent[-1].entries[-1].index))
    more = _apps_to_2(rn)
    assert more and [e.data for m in more for e in m.entries] == [b"abcd", b"abcd"]


def test_without_a_byte_limit_only_the_message_count_limits():
    rn = _leader()
    sent = []
    for i in range(5):
        rn.propose(b"abcd")
        sent += _apps_to_2(rn)
    assert len(sent) == 5


def test_proposals_refused_past_the_uncommitted_size_until_applied():
    rn = _leader(max_uncommitted_entries_size=10)
    rn.propose(b"123456")
    with pytest.raises(ProposalDroppedError, match="uncommitted"):
        rn.propose(b"123456")
    # The follower acknowledges, the entry commits and is handed out: room again.
    apps = _apps_to_2(rn)
    rn.step(pb.Message(type=pb.MsgAppResp, from_=2, to=1, term=1, index=apps[-1].entries[-1].index))
    rd = rn.ready()
    assert [e.data for e in rd.committed_entries] == [b"123456"]
    rn.advance(rd)
    assert rn.raft.uncommitted_size == 0
    rn.propose(b"123456")


def test_one_big_proposal_is_taken_when_nothing_is_uncommitted():
    rn = _leader(max_uncommitted_entries_size=10)
    rn.propose(b"x" * 100)       # progress is always possible
    with pytest.raises(ProposalDroppedError):
        rn.propose(b"y")


def test_a_refused_batch_does_not_block_later_conf_changes():
    rn = _leader(max_uncommitted_entries_size=10)
    rn.propose(b"1234567890")
    cc = pb.ConfChange(type=pb.ConfChangeAddLearnerNode, node_id=3)
    before = rn.raft.pending_conf_index
    with pytest.raises(ProposalDroppedError):
        rn.propose_conf_change(cc)
    assert rn.raft.pending_conf_index == before
