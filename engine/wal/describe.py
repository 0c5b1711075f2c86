"""One line of text for a raft log entry: what `dump-logs`, the console's WAL
panel and the Inspect service show.

    put key="foo" value="bar" lease=0
    delete key="a" range_end="b"
    txn compares=1 success=2 failure=0
    lease-grant id=7 ttl=60
    conf-change add-node node=3 name="n3" peer_urls=http://127.0.0.1:2380
    empty                                   (the leader's no-op)
    undecodable 0a03666f6f                  (hex of what did not parse)

The request modules are imported on first use, so that code which only
frames WAL records does not pay for loading etcd's whole API.
"""
from __future__ import annotations

from google.protobuf.message import DecodeError, Message

from engine.proto import raft_pb2 as raftpb

_MAX_SHOWN = 64  # bytes of a key/value shown before eliding: one line stays one line
_SECRET_FIELDS = frozenset({"password", "hashedPassword"})


def describe_entry(entry: raftpb.Entry) -> str:
    if not entry.data:
        return "empty"
    if entry.type == raftpb.EntryNormal:
        return describe_request(entry.data)
    if entry.type == raftpb.EntryConfChange:
        return describe_conf_change(entry.data)
    return f"unknown-entry-type={entry.type} {hex_bytes(entry.data)}"


def describe_request(data: bytes) -> str:
    """Text for an EntryNormal's data: a raftuipb.InternalRequest."""
    try:
        from engine.proto import internal_pb2
    except ImportError:  # only while the request protos are being written
        return f"undecodable {hex_bytes(data)}"
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


def describe_conf_change(data: bytes) -> str:
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
        from engine.proto import internal_pb2

        ctx = internal_pb2.ConfChangeContext()
        ctx.ParseFromString(data)
    except (ImportError, DecodeError):
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
    changes). Password hashes are not printed: logs get copied around."""
    parts = []
    for fd, value in msg.ListFields():
        if fd.name in _SECRET_FIELDS:
            parts.append(f"{fd.name}=<redacted>")
        elif isinstance(value, bytes):
            parts.append(f"{fd.name}={quote(value)}")
        elif isinstance(value, str):
            parts.append(f"{fd.name}={quote(value.encode())}")
        elif isinstance(value, Message):
            parts.append(f"{fd.name}={{{_fields(value)}}}")
        else:
            parts.append(f"{fd.name}={value}")
    return " ".join(parts)


def quote(b: bytes) -> str:
    """A key or value in double quotes, escaped like a Python literal so
    binary keys stay on one line, cut after _MAX_SHOWN bytes."""
    text = b[:_MAX_SHOWN].decode("utf-8", "surrogateescape")
    text = '"' + "".join(map(_escape, text)) + '"'
    if len(b) > _MAX_SHOWN:
        text += f"...({len(b)} bytes)"
    return text


def _escape(c: str) -> str:
    return escape_char(c, quote='"')


def escape_char(c: str, *, quote: str = "", backslash: bool = True) -> str:
    """One character as it is shown: printable ones as they are, a
    backslash (and `quote`) with a backslash before it, named controls as
    \\n \\t \\r, other ASCII controls and bytes that are not UTF-8 (from
    surrogateescape) as \\xNN, other unprintable code points as \\uNNNN or
    \\UNNNNNNNN. Injective: U+0085 and the byte 0x85 never look the same.
    Shared with the console (raftui.render). `backslash=False` leaves
    backslashes alone (text escaped already)."""
    if c == "\\":
        return "\\\\" if backslash else c
    if quote and c == quote:
        return "\\" + c
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, from surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    named = _NAMED.get(c)
    if named is not None:
        return named
    if code < 0x80:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def hex_bytes(b: bytes) -> str:
    if len(b) > _MAX_SHOWN:
        return f"{b[:_MAX_SHOWN].hex()}...({len(b)} bytes)"
    return b.hex()
