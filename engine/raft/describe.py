"""Stable one-line texts for messages, entries and Readys, used alike by
tests, logs and the console's WAL panel:

    1->2 MsgApp Term:3 Log:3/7 Commit:6 Entries:[3/8 EntryNormal "put"]
"""
from __future__ import annotations

from engine.proto import raft_pb2 as pb
from engine.raft.confchange import JointConfig, describe_changes

_MSG_NAMES = {v: k for k, v in pb.MessageType.items()}
_ENTRY_NAMES = {v: k for k, v in pb.EntryType.items()}
_CC_NAMES = {v: k for k, v in pb.ConfChangeType.items()}


def _data_text(data: bytes, limit: int = 24) -> str:
    try:
        s = data.decode()
    except UnicodeDecodeError:
        return data[:limit].hex() + ("..." if len(data) > limit else "")
    return repr(s[:limit] + ("..." if len(s) > limit else "")).replace("'", '"')


def describe_entry(e: pb.Entry) -> str:
    if e.type == pb.EntryConfChange:
        cc = pb.ConfChange()
        cc.ParseFromString(e.data)
        return f"{e.term}/{e.index} {_CC_NAMES[cc.type]} {cc.node_id}"
    if e.type == pb.EntryConfChangeV2:
        cc = pb.ConfChangeV2()
        cc.ParseFromString(e.data)
        return f"{e.term}/{e.index} EntryConfChangeV2 {describe_changes(cc)}"
    if not e.data:
        return f"{e.term}/{e.index} EntryNormal empty"
    return f"{e.term}/{e.index} EntryNormal {_data_text(e.data)}"


def describe_entries(ents) -> str:
    return "[" + ", ".join(describe_entry(e) for e in ents) + "]"


def describe_message(m: pb.Message) -> str:
    s = f"{m.from_}->{m.to} {_MSG_NAMES[m.type]} Term:{m.term}"
    t = m.type
    if t in (pb.MsgApp, pb.MsgVote, pb.MsgPreVote):
        s += f" Log:{m.log_term}/{m.index}"
    if t in (pb.MsgApp, pb.MsgHeartbeat):
        s += f" Commit:{m.commit}"
    if t in (pb.MsgAppResp, pb.MsgReadIndexResp):
        s += f" Index:{m.index}"
    if m.reject:
        s += f" Rejected (Hint: {m.reject_hint}/{m.log_term})"
    if t == pb.MsgSnap:
        md = m.snapshot.metadata
        cs = md.conf_state
        s += f" Snapshot: Index:{md.index} Term:{md.term} "
        if cs.voters_outgoing or cs.learners_next:
            s += str(JointConfig.from_conf_state(cs))
        else:
            s += f"Voters:{list(cs.voters)} Learners:{list(cs.learners)}"

    if m.entries:
        s += f" Entries:{describe_entries(m.entries)}"
    if m.context and t not in (pb.MsgVote, pb.MsgPreVote):
        s += f" Ctx:{_data_text(m.context)}"
    return s


def describe_hard_state(hs: pb.HardState) -> str:
    return f"HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def describe_ready(rd) -> list[str]:
    """A Ready as lines: what it asks the host to persist, then to send.

        Ready State:leader HardState Term:2 Vote:1 Commit:3 Entries:[2/4 EntryNormal "x"] MustSync
          1->2 MsgApp Term:2 Log:2/3 Commit:3 Entries:[2/4 EntryNormal "x"]
    """
    head = "Ready"
    if rd.soft_state is not None:
        head += f" State:{rd.soft_state.state.value} Lead:{rd.soft_state.lead}"
    if rd.hard_state is not None:
        head += " " + describe_hard_state(rd.hard_state)
    if rd.snapshot is not None:
        md = rd.snapshot.metadata
        head += f" Snapshot:{md.term}/{md.index}"
    if rd.entries:
        head += f" Entries:{describe_entries(rd.entries)}"
    if rd.committed_entries:
        head += f" Committed:{describe_entries(rd.committed_entries)}"
    if rd.read_states:
        head += " ReadStates:[" + ", ".join(f"{_data_text(r.request_ctx)}@{r.index}"
                                            for r in rd.read_states) + "]"
    if rd.must_sync:
        head += " MustSync"
    return [head] + ["  " + describe_message(m) for m in rd.messages]
