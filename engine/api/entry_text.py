"""One line of text for an entry of a member's raft log, decoding the
requests the API puts there: what the Inspect service (the console's WAL
panel) and `raftnode dump-logs` show.

    put key="foo" value="bar" lease=0
    delete key="a" range_end="b"
    txn compares=1 success=2 failure=0
    lease-grant id=7 ttl=60
    conf-change add-node node=3 name="n3" peer_urls=http://127.0.0.1:2380
    empty                                   (the leader's no-op)
    undecodable 0a03666f6f                  (hex of what did not parse)

The WAL below only frames entries; what their data means is known here,
where requests are made. Keys and values are escaped by engine.wal.describe
(quote), the one escape rule the console shares.
"""
from __future__ import annotations

from google.protobuf.message import DecodeError, Message

from engine.proto import internal_pb2
from engine.proto import raft_pb2 as raftpb
from engine.raft import confchange
from engine.raft.confchange import ConfChangeError
from engine.wal.describe import hex_bytes, quote

# Never shown, even to root reading the WAL tail: a password field in the log
# holds a bcrypt hash, and an authenticate entry the simple token it minted
# (usable until it expires).
_SECRET_FIELDS = {"password": "<hash>", "hashedPassword": "<hash>", "simple_token": "<redacted>"}


def entry_text(entry: raftpb.Entry) -> str:
    """One line for a raft log entry of this member's log."""
    if entry.type == raftpb.EntryConfChangeV2:
        # (An empty one is the leader's own leave of a joint config.)
        try:
            return "conf-change-v2 " + confchange.describe_changes(confchange.decode(entry))
        except ConfChangeError:
            return f"undecodable {hex_bytes(entry.data)}"
    if not entry.data:
        return "empty"
    if entry.type == raftpb.EntryNormal:
        return request_text(entry.data)
    if entry.type == raftpb.EntryConfChange:
        return conf_change_text(entry.data)
    return f"unknown-entry-type={entry.type} {hex_bytes(entry.data)}"


def request_text(data: bytes) -> str:
    """Text for an EntryNormal's data: a raftuipb.InternalRequest."""
    req = internal_pb2.InternalRequest()
    try:
        req.ParseFromString(data)
    except DecodeError:
        return f"undecodable {hex_bytes(data)}"
    kind = req.WhichOneof("request")
    if kind is None:
        return f"undecodable {hex_bytes(data)}"
    body = getattr(req, kind)
    fmt = _REQUESTS.get(kind)
    if fmt is not None:
        return fmt(body)
    fields = _fields(body)
    return kind.replace("_", "-") + (f" {fields}" if fields else "")


def conf_change_text(data: bytes) -> str:
    cc = raftpb.ConfChange()
    try:
        cc.ParseFromString(data)
    except DecodeError:
        return f"undecodable {hex_bytes(data)}"
    kind = {
        raftpb.ConfChangeAddNode: "add-node",
        raftpb.ConfChangeRemoveNode: "remove-node",
        raftpb.ConfChangeUpdateNode: "update-node",
        raftpb.ConfChangeAddLearnerNode: "add-learner-node",
    }.get(cc.type, f"type-{cc.type}")
    text = f"conf-change {kind} node={cc.node_id}"
    if cc.context:
        text += " " + _conf_change_context(cc.context)
    return text


def _conf_change_context(data: bytes) -> str:
    try:
        ctx = internal_pb2.ConfChangeContext()
        ctx.ParseFromString(data)
    except DecodeError:
        return f"context={hex_bytes(data)}"
    m = ctx.member
    parts = []
    if m.name:
        parts.append(f"name={quote(m.name.encode())}")
    if m.peerURLs:
        parts.append("peer_urls=" + ",".join(m.peerURLs))
    if m.isLearner:
        parts.append("learner")
    if ctx.promote:
        parts.append("promote")
    return " ".join(parts)


# -- one formatter per request kind the brief's readers care about ----------


def _put(r) -> str:
    text = f"put key={quote(r.key)} value={quote(r.value)} lease={r.lease}"
    for flag in ("prev_kv", "ignore_value", "ignore_lease"):
        if getattr(r, flag):
            text += f" {flag}"
    return text


def _range(r) -> str:
    text = f"range key={quote(r.key)}"
    if r.range_end:
        text += f" range_end={quote(r.range_end)}"
    return text + f" rev={r.revision} limit={r.limit}"


def _delete(r) -> str:
    text = f"delete key={quote(r.key)}"
    if r.range_end:
        text += f" range_end={quote(r.range_end)}"
    return text + (" prev_kv" if r.prev_kv else "")


def _txn(r) -> str:
    return f"txn compares={len(r.compare)} success={len(r.success)} failure={len(r.failure)}"


def _compaction(r) -> str:
    return f"compaction rev={r.revision}" + (" physical" if r.physical else "")


def _lease_grant(r) -> str:
    return f"lease-grant id={r.ID} ttl={r.TTL}"


def _lease_revoke(r) -> str:
    return f"lease-revoke id={r.ID}"


def _alarm(r) -> str:
    action = r.DESCRIPTOR.fields_by_name["action"].enum_type.values_by_number[r.action].name.lower()
    alarm = r.DESCRIPTOR.fields_by_name["alarm"].enum_type.values_by_number[r.alarm].name
    return f"alarm {action} member={r.memberID} alarm={alarm}"


def _lease_checkpoint(r) -> str:
    return "lease-checkpoint " + " ".join(f"{c.ID}:{c.remaining_TTL}" for c in r.checkpoints)


_REQUESTS = {
    "put": _put,
    "range": _range,
    "delete_range": _delete,
    "txn": _txn,
    "compaction": _compaction,
    "lease_grant": _lease_grant,
    "lease_revoke": _lease_revoke,
    "alarm": _alarm,
    "lease_checkpoint": _lease_checkpoint,
}


def _fields(msg: Message) -> str:
    """Generic `name=value` text for the kinds without a formatter (auth
    changes). Secrets (_SECRET_FIELDS) are not printed: logs get copied around."""
    parts = []
    for fd, value in msg.ListFields():
        if fd.name in _SECRET_FIELDS:
            parts.append(f"{fd.name}={_SECRET_FIELDS[fd.name]}")
        elif isinstance(value, bytes):
            parts.append(f"{fd.name}={quote(value)}")
        elif isinstance(value, str):
            parts.append(f"{fd.name}={quote(value.encode())}")
        elif isinstance(value, Message):
            parts.append(f"{fd.name}={{{_fields(value)}}}")
        else:
            parts.append(f"{fd.name}={value}")
    return " ".join(parts)
