"""A transaction typed in the console, and why it went the way it went.

The text is etcdctl's (`etcdctl txn -i`), one line per part, `;` between items:

    if:    mod("k1") > "5"; value("k2") = "x"; version("k3") = "0"
    then:  put k1 v1; del k2; get k3
    else:  get k1

Targets: value, version, create, mod, lease; operators = != > <. Keys and
values are quoted ("...", \\" for a quote) or bare words, with the escapes
the panels show (\\xff, \\n, \\\\); a key ending in * in del/get is a prefix.

After the Txn, every compared key is read at the revision the compares were
evaluated at: the response's revision, or the one before it when the branch
that ran wrote something (the txn's own writes come after its compares).
Each compare is then evaluated here the way etcd does it (a missing key has
version, create and mod revision 0 and no value: a value compare on it is
false), so the console names the compare that failed and the value it met.
No UI here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import re

import grpc

from engine.proto import rpc_pb2

from . import errors
from .actions import ACTION_DEADLINE, _kv, prefix_end
from .codec import encode
from .connection import Stubs
from .model import KeyValue

TARGETS = ("value", "version", "create", "mod", "lease")
OPERATORS = {"=": rpc_pb2.Compare.EQUAL, "==": rpc_pb2.Compare.EQUAL, "!=": rpc_pb2.Compare.NOT_EQUAL,
             ">": rpc_pb2.Compare.GREATER, "<": rpc_pb2.Compare.LESS}
MAX_OPS = 128                # etcd's --max-txn-ops default: more is refused before sending


class TxnSyntaxError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class CompareSpec:
    target: str                  # value / version / create / mod / lease
    key: str
    op: str                      # = != > <
    value: str                   # as typed (a number for every target but value)

    def text(self) -> str:
        return f'{self.target}("{self.key}") {self.op} "{self.value}"'


@dataclasses.dataclass(frozen=True)
class OpSpec:
    verb: str                    # put / del / get
    key: str
    value: str = ""
    prefix: bool = False

    def text(self) -> str:
        key = f"{self.key}{'*' if self.prefix else ''}"
        return f"{self.verb} {key} {self.value}" if self.verb == "put" else f"{self.verb} {key}"


@dataclasses.dataclass(frozen=True)
class Check:
    compare: CompareSpec
    actual: KeyValue | None      # the key as it was when compared (None: it did not exist)
    holds: bool

    def actual_text(self) -> str:
        kv = self.actual
        if kv is None:
            return "no such key" + ("" if self.compare.target == "value" else " (0)")
        return {"value": f'"{kv.value}"', "version": str(kv.version), "create": str(kv.create_revision),
                "mod": str(kv.mod_revision), "lease": f"{kv.lease:x}" if kv.lease else "0"}[self.compare.target]


@dataclasses.dataclass(frozen=True)
class TxnOutcome:
    succeeded: bool              # the compares all held: the then-branch ran
    revision: int                # the response's revision
    compared_at: int             # the revision the compares saw
    checks: tuple[Check, ...]
    ran: tuple[str, ...]         # what each op of the branch that ran answered
    note: str = ""               # a compared key that could not be read back, say

    @property
    def failed(self) -> tuple[int, ...]:
        """1-based numbers of the compares that were false."""
        return tuple(i + 1 for i, c in enumerate(self.checks) if not c.holds)

    def summary(self) -> str:
        if self.succeeded:
            return f"txn succeeded at revision {self.revision}: every compare held, then-branch ran"
        first = next((i for i, c in enumerate(self.checks) if not c.holds), None)
        if first is None:
            return f"txn failed at revision {self.revision}: else-branch ran"
        c = self.checks[first]
        return (f"txn failed at revision {self.revision}: compare {first + 1} {c.compare.text()} was false "
                f"({c.compare.target} was {c.actual_text()} at revision {self.compared_at}); else-branch ran")


# ------------------------------------------------------------------ parsing

_TOKEN = re.compile(r'\s*(?:(")|(!=|==|[=<>();])|([^\s"=<>();!]+|!))')


def _tokens(text: str) -> list[tuple[str, str]]:
    """("q", quoted string) / ("p", punctuation) / ("w", word); quotes keep
    every escape but \\" and \\\\ for unescape() to read."""
    out = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            if text[i:].strip() == "":
                break
            raise TxnSyntaxError(f"cannot read {text[i:i + 20]!r}")
        if m.group(1):
            j = m.end()
            buf = []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in '"':
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if text[j] == "\\" and j + 1 < len(text):
                    buf.append(text[j:j + 2])
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= len(text):
                raise TxnSyntaxError("a quote is not closed")
            out.append(("q", "".join(buf)))
            i = j + 1
        elif m.group(2):
            out.append(("p", m.group(2)))
            i = m.end()
        elif m.group(3):
            out.append(("w", m.group(3)))
            i = m.end()
        else:
            i = m.end()
    return out


def _items(text: str) -> list[list[tuple[str, str]]]:
    items, current = [], []
    for tok in _tokens(text):
        if tok == ("p", ";"):
            if current:
                items.append(current)
            current = []
        else:
            current.append(tok)
    if current:
        items.append(current)
    return items


def parse_compares(text: str, unescape=lambda s: s) -> list[CompareSpec]:
    out = []
    for n, item in enumerate(_items(text), 1):
        shape = [kind if kind != "p" else value for kind, value in item]
        if (len(item) != 6 or item[0][0] != "w" or item[0][1] not in TARGETS or shape[1] != "("
                or item[2][0] not in "qw" or shape[3] != ")" or item[4][0] != "p" or item[4][1] not in OPERATORS
                or item[5][0] not in "qw"):
            raise TxnSyntaxError(f'compare {n}: write it as target("key") op "value", target one of '
                                 f"{', '.join(TARGETS)}, op one of = != > <")
        target, key, op, value = item[0][1], unescape(item[2][1]), item[4][1], item[5][1]
        if target != "value":
            if not re.fullmatch(r"[+-]?[0-9]+", value) and not (target == "lease" and
                                                                 re.fullmatch(r"[0-9a-fA-F]+", value)):
                raise TxnSyntaxError(f"compare {n}: {target} is compared with a number, not {value!r}")
        else:
            value = unescape(value)
        out.append(CompareSpec(target, key, "=" if op == "==" else op, value))
    return out


def parse_ops(text: str, unescape=lambda s: s) -> list[OpSpec]:
    out = []
    for n, item in enumerate(_items(text), 1):
        if not item or item[0][0] != "w" or item[0][1] not in ("put", "del", "get"):
            raise TxnSyntaxError(f"op {n}: put KEY VALUE, del KEY or get KEY (KEY* for a prefix)")
        verb = item[0][1]
        args = [value for kind, value in item[1:] if kind in "qw"]
        if len(args) != len(item) - 1 or len(args) != (2 if verb == "put" else 1):
            raise TxnSyntaxError(f"op {n}: {verb} takes {'a key and a value' if verb == 'put' else 'a key'}")
        raw = args[0]
        prefix = verb != "put" and item[1][0] == "w" and raw.endswith("*")
        key = unescape(raw[:-1] if prefix else raw)
        out.append(OpSpec(verb, key, unescape(args[1]) if verb == "put" else "", prefix))
    return out


# ------------------------------------------------------------------ running

def _compare_pb(c: CompareSpec) -> rpc_pb2.Compare:
    pb = rpc_pb2.Compare(key=encode(c.key), result=OPERATORS[c.op])
    if c.target == "value":
        pb.target, pb.value = rpc_pb2.Compare.VALUE, encode(c.value)
    elif c.target == "version":
        pb.target, pb.version = rpc_pb2.Compare.VERSION, int(c.value)
    elif c.target == "create":
        pb.target, pb.create_revision = rpc_pb2.Compare.CREATE, int(c.value)
    elif c.target == "mod":
        pb.target, pb.mod_revision = rpc_pb2.Compare.MOD, int(c.value)
    else:
        pb.target, pb.lease = rpc_pb2.Compare.LEASE, int(c.value, 16)
    return pb


def _op_pb(o: OpSpec) -> rpc_pb2.RequestOp:
    k = encode(o.key)
    end = (prefix_end(k) if k else b"\x00") if o.prefix else b""
    start = (k or b"\x00") if o.prefix else k
    if o.verb == "put":
        return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=encode(o.value)))
    if o.verb == "del":
        return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=start, range_end=end))
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=start, range_end=end))


def holds(c: CompareSpec, kv: KeyValue | None) -> bool:
    """etcd's applyCompare for one key: a missing key has zero numbers and no value."""
    if kv is None:
        if c.target == "value":
            return False
        kv = KeyValue(c.key, "", 0, 0, 0, 0)
    if c.target == "value":
        a, b = encode(kv.value), encode(c.value)
        r = (a > b) - (a < b)
    else:
        actual = {"version": kv.version, "create": kv.create_revision, "mod": kv.mod_revision,
                  "lease": kv.lease}[c.target]
        wanted = int(c.value, 16) if c.target == "lease" else int(c.value)
        r = (actual > wanted) - (actual < wanted)
    return {"=": r == 0, "!=": r != 0, ">": r > 0, "<": r < 0}[c.op]


def _answered(op: OpSpec, resp: rpc_pb2.ResponseOp) -> tuple[str, bool]:
    """What one op answered, and whether it wrote."""
    if op.verb == "put":
        return f"put {op.key}: ok", True
    if op.verb == "del":
        n = resp.response_delete_range.deleted
        return f"del {op.key}{'*' if op.prefix else ''}: {n} deleted", n > 0
    kvs = [_kv(kv) for kv in resp.response_range.kvs]
    shown = ", ".join(f'{kv.key} = "{kv.value}"' for kv in kvs[:5]) + (" …" if len(kvs) > 5 else "")
    return f"get {op.key}{'*' if op.prefix else ''}: " + (shown or "no key"), False


async def run(stubs: Stubs, compares: list[CompareSpec], then: list[OpSpec],
              otherwise: list[OpSpec]) -> TxnOutcome | str:
    """Send the txn; a TxnOutcome, or etcd's error text (nothing was applied)."""
    if len(then) > MAX_OPS or len(otherwise) > MAX_OPS:
        return f"etcdserver: too many operations in txn request (at most {MAX_OPS} per branch)"
    req = rpc_pb2.TxnRequest(compare=[_compare_pb(c) for c in compares],
                             success=[_op_pb(o) for o in then], failure=[_op_pb(o) for o in otherwise])
    try:
        resp = await stubs.kv.Txn(req, timeout=ACTION_DEADLINE)
    except grpc.aio.AioRpcError as exc:
        return errors.describe(exc)
    branch = then if resp.succeeded else otherwise
    ran, wrote = [], False
    for op, r in zip(branch, resp.responses):
        text, w = _answered(op, r)
        ran.append(text)
        wrote = wrote or w
    revision = resp.header.revision
    compared_at = revision - 1 if wrote else revision
    keys = sorted({c.key for c in compares})
    note = ""
    got: dict[str, KeyValue | None] = {}
    if keys:
        reads = await asyncio.gather(*(stubs.kv.Range(rpc_pb2.RangeRequest(key=encode(k), revision=compared_at),
                                                      timeout=ACTION_DEADLINE) for k in keys),
                                     return_exceptions=True)
        for k, r in zip(keys, reads):
            if isinstance(r, BaseException):
                note = f"{k} could not be read at revision {compared_at}: {errors.describe(r)}"
                got[k] = None
            else:
                got[k] = _kv(r.kvs[0]) if r.kvs else None
    checks = tuple(Check(c, got.get(c.key), holds(c, got.get(c.key))) for c in compares)
    return TxnOutcome(resp.succeeded, revision, compared_at, checks, tuple(ran), note)
