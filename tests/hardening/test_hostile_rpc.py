"""Issue 8, hostile-input suite part (a): mutated requests for every etcd RPC we serve.

Hypothesis mutates VALID requests -- every field can turn hostile: empty,
"\\0", "\\xff" and random-byte keys, keys and values near and over the
request limits (1.5 MiB, 2 MiB), ranges whose end is below their key,
negative / huge / near-current revisions and limits, enum values no client
would send, unknown lease and member ids, 127/128/129-op txns, duplicate
keys, txns nested as deep as the op budget allows -- and sends them to ONE
real 3-member raftnode cluster (one per module, members picked at random).

Every answer must be OK, or a gRPC status whose (code, message) pair is one
of etcd's (the table in engine/api/errors.py, i.e. etcd's rpctypes, plus the
transport's own "message larger than max"). UNKNOWN, INTERNAL, a Python
traceback in a message, a client deadline (10 s) or a dead member fail the
test. A separate process polls Maintenance.Status on every member every
50 ms (tests/hardening/conftest.py LagPoller): the member's own
``loop_lag_ms`` (Inspect.RaftStatus) must stay under LAG_LIMIT_MS (200);
the worst client-side Status latency under 2.5x that (it also counts the
poller's scheduling on a busy machine), or under 200 ms itself when the
member does not report its loop lag.

Bounded for CI (``derandomize``: the same examples every run; about a
minute). ``-m soak`` runs the same properties with random seeds and 20x the
examples; hypothesis prints the seed and the falsifying example on failure.

Known bugs not fixed yet are listed in KNOWN (owner, reason); an answer
that matches one is counted, not failed, and the test ends as xfail
(strict=False) until fixed.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
from typing import Callable, Iterator

import grpc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.api import errors as api_errors
from engine.server import errors as server_errors
from engine.proto import rpc_pb2, rpc_pb2_grpc

from .conftest import FAST_RECONNECT, LAG_WINDOW_S, LagPoller, death_note, restart_member, start_cluster, wait_for

MiB = 1024 * 1024
MAX_REQUEST = int(1.5 * MiB)
LAG_LIMIT_MS = float(os.environ.get("RAFTUI_HARDENING_LAG_MS", "200"))
CLIENT_LAG_FACTOR = 2.5   # client-side Status latency bound, when the member reports its loop lag
CALL_TIMEOUT = 10.0
SOAK_FACTOR = 20
BULK_MB = 16   # data loaded before the Maintenance properties
C = grpc.StatusCode

# ----------------------------------------------------------------------------- verdicts


def _allowed() -> dict[grpc.StatusCode, set[str]]:
    """etcd's (code, message) pairs, from the one table every handler goes through."""
    out: dict[grpc.StatusCode, set[str]] = {}
    for cls, code in api_errors.GRPC_CODES.items():
        if code in (C.UNKNOWN, C.INTERNAL):
            continue   # UNKNOWN is etcd's "not in the table": never a verdict here
        out.setdefault(code, set()).add(cls.etcd_message)
    return out


ALLOWED = _allowed()
# etcd's words, but not answers a healthy, idle-enough cluster may give to a
# request within its limits: a stall or a lost proposal behind them.
STALLS = {server_errors.Timeout.etcd_message, server_errors.TimeoutDueToLeaderFail.etcd_message,
          server_errors.TimeoutWaitAppliedIndex.etcd_message, server_errors.Stopped.etcd_message}
# The transport's own refusal of a message over the server's receive limit
# (max-request-bytes + 512 KiB); grpc-go and grpcio word it differently.
# A request the server cannot decode (python-protobuf parses at most 100 nested
# messages: a txn nested 51+ deep) gets grpc-go's own answer to an unparsable message.
TRANSPORT_OK = [(C.RESOURCE_EXHAUSTED, re.compile(r"(?i)received message larger than max")),
                (C.INTERNAL, re.compile(r"^grpc: error unmarshalling request: [^\n]*$"))]


@dataclasses.dataclass
class Known:
    """A bug filed with its owner: answers matching it are counted, not failed."""
    owner: str
    reason: str
    match: Callable[[str, object, grpc.StatusCode | None, str], bool]


# Filled as the suite finds bugs in files other roles own (see the module docstring).
# Found and fixed since: a txn nested 50 deep was proposed, then skipped on apply as
# undecodable (client timed out; STORAGE); 51+ deep answered UNKNOWN with a Python class
# name (now grpc-go's INTERNAL); an unknown Alarm action/type killed every member's raft
# loop (SERVER); Status answered UNKNOWN ValueError while an unknown alarm type was active
# (STORAGE); an unknown sort option answered UNKNOWN (soak; fixed in 3eb13b2).
KNOWN: list[Known] = []


@dataclasses.dataclass
class Tally:
    calls: int = 0
    by_answer: dict = dataclasses.field(default_factory=dict)
    failures: list = dataclasses.field(default_factory=list)
    known: dict = dataclasses.field(default_factory=dict)

    example: dict = dataclasses.field(default_factory=dict)

    def note(self, rpc: str, code: grpc.StatusCode | None, msg: str, req=None) -> None:
        self.calls += 1
        key = (rpc, code.name if code else "OK", msg[:80] if code else "")
        self.by_answer[key] = self.by_answer.get(key, 0) + 1
        self.example.setdefault(key, short(req, 160))

    def figures(self) -> list[str]:
        return [f"  {rpc:15s} {code:19s} {n:5d} {msg}" + (f"\n      e.g. {self.example[(rpc, code, msg)]}"
                                                          if code != "OK" else "")
                for (rpc, code, msg), n in sorted(self.by_answer.items())]


def verdict(rpc: str, req, code: grpc.StatusCode | None, msg: str, tally: Tally,
            died: bool = False) -> str | None:
    """None if the answer is one etcd could give; else what is wrong with it.

    died: msg says why members died after the request (code is None then).
    """
    tally.note(rpc, code, msg if not died else "MEMBER DIED", req)
    for k in KNOWN:
        if k.match(rpc, req, code, msg):
            tally.known[k.reason] = tally.known.get(k.reason, 0) + 1
            return None
    if died:
        return f"{rpc}: {msg}"
    if code is None:
        return None
    if "Traceback" in msg or 'File "' in msg:
        return f"{rpc}: a Python traceback in the answer: {code.name} {msg!r}"
    if msg in STALLS:
        return f"{rpc}: a stall on a healthy cluster: {code.name} {msg!r}"
    if msg in ALLOWED.get(code, ()):
        return None
    if any(code is c and pat.search(msg) for c, pat in TRANSPORT_OK):
        return None
    return f"{rpc}: not an etcd answer: {code.name} {msg!r}"


def short(req, limit: int = 600) -> str:
    text = f"{type(req).__name__}({str(req)[:limit]!s})" if not isinstance(req, (list, tuple)) else \
        "[" + ", ".join(short(r, limit // max(1, len(req))) for r in req) + "]"
    return text.replace("\n", " ")


# ----------------------------------------------------------------------------- the cluster


class Target:
    """The module's cluster with one channel per member, a lag poller and the tally."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        opts = [("grpc.max_send_message_length", 8 * MiB), ("grpc.max_receive_message_length", 64 * MiB),
                *FAST_RECONNECT]
        self.channels = [grpc.insecure_channel(ep, options=opts) for ep in cluster.endpoints]
        self.tally = Tally()
        self.poller = LagPoller(cluster.endpoints)
        self.lag_report: list[str] = []
        self.deaths: list[str] = []
        self.restarts = 0
        self.window_restarts = 0   # restarts since the last lag check (its polls may fail)

    def stub(self, i: int, kind):
        return kind(self.channels[i % len(self.channels)])

    def current_rev(self) -> int:
        r = self.stub(0, rpc_pb2_grpc.KVStub).Range(rpc_pb2.RangeRequest(key=b"\0", count_only=True),
                                                    timeout=CALL_TIMEOUT)
        return r.header.revision

    def member_ids(self) -> list[int]:
        ms = self.stub(0, rpc_pb2_grpc.ClusterStub).MemberList(rpc_pb2.MemberListRequest(), timeout=CALL_TIMEOUT)
        return [m.ID for m in ms.members]

    def call(self, rpc: str, fn, req, *, ok_codes: tuple = ()):
        """fn(req, timeout=...) and judge the answer; returns the response or None."""
        resp, code, msg = None, None, ""
        try:
            resp = fn(req, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            code, msg = e.code(), e.details() or ""
        self.check_deaths(rpc, req, code, msg)
        if code in ok_codes:
            return None
        bad = verdict(rpc, req, code, msg, self.tally)
        assert bad is None, f"{bad}\n  request: {short(req)}"
        return resp

    def check_deaths(self, rpc: str, req, code: grpc.StatusCode | None = None, msg: str = "") -> None:
        """After each request: if members died, note why, bring them back (same argv), and
        fail the example naming the request -- unless it is a KNOWN killer.

        A member that answered "server stopped" or refused the connection is
        given 10 s to exit (fatal means exit); one that neither exits nor
        listens again is a zombie, a failure of its own.
        """
        c = self.cluster
        if msg == server_errors.Stopped.etcd_message or (
                code is C.UNAVAILABLE and ("failed to connect" in msg or "Connection refused" in msg)):
            def settled():
                return all(not m.running() or m.listening() for m in c.members) and \
                    (msg != server_errors.Stopped.etcd_message or any(not m.running() for m in c.members))
            try:
                wait_for(settled, 10.0, "members to exit or listen again")
            except AssertionError:
                zombies = [m.name for m in c.members if m.running() and not m.listening()]
                raise AssertionError(f"{rpc}: members {zombies} stopped serving but did not exit within 10 s "
                                     f"(answer: {code} {msg!r})\n  request: {short(req)}") from None
        dead = [i for i, m in enumerate(c.members) if not m.running()]
        if not dead:
            return
        why = "; ".join(f"{self.cluster.members[i].name}: {death_note(self.cluster.members[i])}" for i in dead)
        self.recover()
        self.deaths.append(f"after {rpc} {short(req, 200)}: {why}")
        bad = verdict(rpc, req, None, "MEMBER DIED: " + why, self.tally, died=True)
        assert bad is None, f"{bad}\n  request: {short(req)}"

    def recover(self) -> None:
        """Restart every dead member (bounded rounds), wait for a leader; a fresh lag window."""
        c = self.cluster
        for _ in range(3):
            dead = [i for i, m in enumerate(c.members) if not m.running()]
            if not dead:
                break
            for i in dead:
                restart_member(c, i)
            c.wait_leader(timeout=30)
        assert all(m.running() for m in c.members), "members keep dying after restart"
        self.poller.reset()
        self.restarts += 1
        self.window_restarts += 1

    def health(self) -> None:
        """Every member alive (pid) and answering Status."""
        for i, m in enumerate(self.cluster.members):
            assert m.running(), f"{m.name} (pid {m.pid}) died:\n{m.log_tail(3000)}"
            st_ = self.cluster.status(i, timeout=5.0)
            assert st_ is not None, f"{m.name} does not answer Status:\n{m.log_tail(3000)}"

    def check_lag(self, what: str) -> None:
        snap = self.poller.reset()
        worst = max(snap["max_ms"].values()) if snap["max_ms"] else 0.0
        reported = max(snap["loop_lag_ms"].values()) if snap["loop_lag_ms"] else None
        line = (f"{what}: {self.tally.calls} calls so far; Status worst {worst:.0f} ms over "
                f"{snap['samples']} polls, failed polls {sum(snap['fail'].values())}"
                + (f", loop_lag_ms worst {reported}" if reported is not None else ""))
        restarted, self.window_restarts = self.window_restarts, 0
        if restarted:
            line += f" (after {restarted} restart(s) of dead members: failed polls not judged)"
        self.lag_report.append(line)
        print(line)
        assert restarted or sum(snap["fail"].values()) == 0, f"Status polls failed during {what}: {snap}"
        if reported is not None:
            # The member's own measure (the longest gap between its ticks) is the judge; the
            # client-side latency, which also counts the poller's own scheduling on a busy
            # machine, only has to stay within a looser bound.
            assert reported < LAG_LIMIT_MS, f"loop lag {reported} ms >= {LAG_LIMIT_MS} during {what}"
            client_limit = CLIENT_LAG_FACTOR * LAG_LIMIT_MS
        else:
            client_limit = LAG_LIMIT_MS
        assert worst < client_limit, f"a member answered Status after {worst:.0f} ms during {what}: {snap}"

    def close(self) -> None:
        self.poller.stop()
        for ch in self.channels:
            ch.close()


@pytest.fixture(scope="module")
def target(raftnode_binary, tmp_path_factory) -> Iterator[Target]:
    c = start_cluster(tmp_path_factory.mktemp("hostile"), 3)
    t = None
    try:
        t = Target(c)
        yield t
    finally:
        if t is not None:
            t.close()
            print("\n".join(["hostile rpc figures:", *t.lag_report,
                             f"member restarts after deaths: {t.restarts}", *t.deaths]))
            print("\n".join(t.tally.figures()))
        c.stop()


MODES = ["ci", pytest.param("soak", marks=pytest.mark.soak)]


def props(mode: str, examples: int):
    """Hypothesis settings: derandomized and bounded in CI, random and 20x longer in soak."""
    soak = mode == "soak"
    return settings(
        max_examples=examples * (SOAK_FACTOR if soak else 1), deadline=None, derandomize=not soak,
        database=None, print_blob=True, report_multiple_bugs=True,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck))


def finish(t: Target, what: str) -> None:
    t.health()
    t.check_lag(what)
    known, t.tally.known = t.tally.known, {}
    if known:
        pytest.xfail("known bugs hit: " + "; ".join(f"{r} (x{n})" for r, n in known.items()))


# ----------------------------------------------------------------------------- strategies

KEYS = [b"a", b"k", b"k/1", b"k/2", b"k/3", b"z", b"\0", b"\xff", b"\xff\xff", b"k\0", b"[/]", b"\x1b[2J"]
SIZES = [1024, 64 * 1024, MAX_REQUEST - 4096, MAX_REQUEST + 16, 2 * MiB + 1024]


def huge() -> st.SearchStrategy[bytes]:
    return st.sampled_from(SIZES).map(lambda n: b"h" * n)


def keys(allow_huge: bool = True) -> st.SearchStrategy[bytes]:
    parts = [st.sampled_from(KEYS), st.sampled_from(KEYS), st.just(b""), st.binary(min_size=1, max_size=24)]
    if allow_huge:
        parts.append(huge())
    return st.one_of(*parts)


def range_ends() -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(b""), st.just(b"\0"), st.sampled_from([b"k0", b"l", b"a", b"\xff\xff\xff"]),
                     st.binary(max_size=8))


def values() -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(b""), st.binary(max_size=64), st.just(b"v"), huge())


I64 = [0, 1, 2, -1, -(2 ** 63), 2 ** 63 - 1, 2 ** 31, -(2 ** 31), 2 ** 32]


def i64() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(I64), st.integers(0, 40), st.integers(-(2 ** 63), 2 ** 63 - 1))


def u64() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([0, 1, 2 ** 63, 2 ** 64 - 1]), st.integers(0, 2 ** 64 - 1))


def revs() -> st.SearchStrategy:
    """A revision: absolute (hostile) or relative to the current one at call time."""
    return st.one_of(st.just(0), i64(), st.tuples(st.just("rel"), st.integers(-3, 3)))


def rarely() -> st.SearchStrategy[bool]:
    """A flag that turns a valid request into a refused one: set one time in four."""
    return st.sampled_from([False, False, False, True])


def enum(valid) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(list(valid)), st.integers(-(2 ** 31), 2 ** 31 - 1))


def resolve(t: Target, rev) -> int:
    if isinstance(rev, tuple):
        return max(0, t.current_rev() + rev[1])
    return rev


def range_reqs() -> st.SearchStrategy[rpc_pb2.RangeRequest]:
    R = rpc_pb2.RangeRequest
    return st.builds(
        lambda key, end, limit, so, stg, ser, ko, co, mods: R(
            key=key, range_end=end, limit=limit, sort_order=so, sort_target=stg, serializable=ser,
            keys_only=ko, count_only=co, min_mod_revision=mods[0], max_mod_revision=mods[1],
            min_create_revision=mods[2], max_create_revision=mods[3]),
        keys(allow_huge=False), range_ends(), i64(), enum(R.SortOrder.values()), enum(R.SortTarget.values()),
        st.booleans(), st.booleans(), st.booleans(), st.tuples(i64(), i64(), i64(), i64()))


def put_reqs() -> st.SearchStrategy[rpc_pb2.PutRequest]:
    return st.builds(
        lambda key, value, lease, pk, iv, il: rpc_pb2.PutRequest(
            key=key, value=value, lease=lease, prev_kv=pk, ignore_value=iv, ignore_lease=il),
        keys(), values(), st.one_of(st.just(0), st.just(0), i64()), st.booleans(), rarely(), rarely())


def delete_reqs() -> st.SearchStrategy[rpc_pb2.DeleteRangeRequest]:
    return st.builds(lambda key, end, pk: rpc_pb2.DeleteRangeRequest(key=key, range_end=end, prev_kv=pk),
                     keys(allow_huge=False), range_ends(), st.booleans())


def compares() -> st.SearchStrategy[rpc_pb2.Compare]:
    Cmp = rpc_pb2.Compare

    def build(key, end, target, result, which, n, value):
        c = Cmp(key=key, range_end=end, target=target, result=result)
        if which == 0:
            c.version = n
        elif which == 1:
            c.create_revision = n
        elif which == 2:
            c.mod_revision = n
        elif which == 3:
            c.value = value
        elif which == 4:
            c.lease = n
        return c
    return st.builds(build, keys(allow_huge=False), range_ends(), enum(Cmp.CompareTarget.values()),
                     enum(Cmp.CompareResult.values()), st.integers(0, 5), i64(), st.binary(max_size=16))


def small_ops() -> st.SearchStrategy[rpc_pb2.RequestOp]:
    return st.one_of(
        range_reqs().map(lambda r: rpc_pb2.RequestOp(request_range=r)),
        st.builds(lambda k, v: rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=v)),
                  keys(allow_huge=False), st.binary(max_size=16)),
        delete_reqs().map(lambda r: rpc_pb2.RequestOp(request_delete_range=r)),
        st.just(rpc_pb2.RequestOp()),   # an empty op
    )


def nested_txns() -> st.SearchStrategy[rpc_pb2.TxnRequest]:
    def wrap(children):
        return st.builds(
            lambda cmp, succ, fail: rpc_pb2.TxnRequest(
                compare=cmp, success=[rpc_pb2.RequestOp(request_txn=t) if isinstance(t, rpc_pb2.TxnRequest) else t
                                      for t in succ],
                failure=[rpc_pb2.RequestOp(request_txn=t) if isinstance(t, rpc_pb2.TxnRequest) else t
                         for t in fail]),
            st.lists(compares(), max_size=3), st.lists(children, max_size=4), st.lists(children, max_size=4))
    return st.recursive(small_ops(), wrap, max_leaves=24).filter(
        lambda t: isinstance(t, rpc_pb2.TxnRequest))


def wide_txn(n: int, dup: bool, kind: str) -> rpc_pb2.TxnRequest:
    """n puts (or deletes) in one branch; dup: two of them on one key."""
    ops = []
    for i in range(n):
        k = b"w/%04d" % (0 if dup and i == n - 1 else i)
        if kind == "put":
            ops.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"x")))
        elif kind == "mixed" and i % 2:
            ops.append(rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k)))
        else:
            ops.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"x")))
    return rpc_pb2.TxnRequest(success=ops)


def deep_txn(depth: int, leaf_put: bool) -> rpc_pb2.TxnRequest:
    """A txn nested `depth` levels, one op per level (etcd's op budget allows about 128).

    Built by mutation: python-protobuf refuses to copy or parse a message
    nested deeper than 100 levels (a txn level is two: TxnRequest, RequestOp).
    """
    t = rpc_pb2.TxnRequest()
    cur = t
    for _ in range(depth - 1):
        cur = cur.success.add().request_txn
    leaf = cur.success.add()
    if leaf_put:
        leaf.request_put.key, leaf.request_put.value = b"deep", b"x"
    else:
        leaf.request_range.key = b"deep"
    return t


def txn_reqs() -> st.SearchStrategy[rpc_pb2.TxnRequest]:
    return st.one_of(
        nested_txns(),
        st.builds(wide_txn, st.sampled_from([1, 127, 128, 129, 500]), st.booleans(),
                  st.sampled_from(["put", "mixed"])),
        st.builds(deep_txn, st.sampled_from([2, 16, 31, 32, 33, 48, 49, 50, 64, 100, 127, 128, 129]),
                  st.booleans()),
    )


# ----------------------------------------------------------------------------- KV


@pytest.mark.parametrize("mode", MODES)
def test_kv_range_put_delete(target, mode):
    t = target

    @props(mode, 150)
    @given(member=st.integers(0, 2), kind=st.sampled_from(["range", "put", "delete"]),
           rng=range_reqs(), rev=revs(), put=put_reqs(), dele=delete_reqs())
    def prop(member, kind, rng, rev, put, dele):
        kv = t.stub(member, rpc_pb2_grpc.KVStub)
        if kind == "range":
            rng.revision = resolve(t, rev)
            t.call("Range", kv.Range, rng)
        elif kind == "put":
            t.call("Put", kv.Put, put)
        else:
            t.call("DeleteRange", kv.DeleteRange, dele)

    prop()
    finish(t, "KV Range/Put/DeleteRange")


@pytest.mark.parametrize("mode", MODES)
def test_kv_txn(target, mode):
    t = target

    @props(mode, 100)
    @given(member=st.integers(0, 2), txn=txn_reqs())
    def prop(member, txn):
        t.call("Txn", t.stub(member, rpc_pb2_grpc.KVStub).Txn, txn)

    prop()
    finish(t, "KV Txn")


@pytest.mark.parametrize("mode", MODES)
def test_kv_compact(target, mode):
    t = target

    @props(mode, 20)
    @given(member=st.integers(0, 2), rev=revs(), physical=st.booleans())
    def prop(member, rev, physical):
        req = rpc_pb2.CompactionRequest(revision=resolve(t, rev), physical=physical)
        t.call("Compact", t.stub(member, rpc_pb2_grpc.KVStub).Compact, req)

    prop()
    finish(t, "KV Compact")


@pytest.mark.parametrize("order,target_", [(0, -998115), (7, 0), (0, 5)])
def test_range_with_unknown_sort_option(target, order, target_):
    """Found by the soak (UNKNOWN '-998115'; fixed in 3eb13b2): an unknown SortOrder/SortTarget is
    refused with InvalidArgument 'etcdserver: invalid sort option', for a Range and a Txn's range op."""
    kv = target.stub(0, rpc_pb2_grpc.KVStub)
    kv.Put(rpc_pb2.PutRequest(key=b"sort/a", value=b"1"), timeout=CALL_TIMEOUT)
    kv.Put(rpc_pb2.PutRequest(key=b"sort/b", value=b"2"), timeout=CALL_TIMEOUT)
    rng = rpc_pb2.RangeRequest(key=b"sort/", range_end=b"sort0", sort_order=order, sort_target=target_)
    for call, req in ((kv.Range, rng),
                      (kv.Txn, rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=rng)]))):
        with pytest.raises(grpc.RpcError) as e:
            call(req, timeout=CALL_TIMEOUT)
        assert (e.value.code(), e.value.details()) == (C.INVALID_ARGUMENT, "etcdserver: invalid sort option")


def test_compacting_large_values_keeps_the_loop_responsive(target):
    """Found by the soak (test_kv_compact[soak]: loop lag 238-245 ms): 30 revisions of 1.4 MiB
    values, then a physical compaction of all but the last: no member's loop may stall 200 ms."""
    t = target
    kv = t.stub(0, rpc_pb2_grpc.KVStub)
    for i in range(30):
        rev = kv.Put(rpc_pb2.PutRequest(key=b"bigc/%d" % (i % 3), value=os.urandom(int(1.4 * MiB))),
                     timeout=CALL_TIMEOUT).header.revision
    t.poller.reset()
    t.call("Compact", kv.Compact, rpc_pb2.CompactionRequest(revision=rev, physical=True))
    # The member's own lag window covers the last 5 s: let it cover the compaction's steps.
    deadline = time.monotonic() + LAG_WINDOW_S + 1
    wait_for(lambda: time.monotonic() >= deadline, LAG_WINDOW_S + 5, "one lag window after the compaction")
    t.check_lag("compaction of large values")


# ----------------------------------------------------------------------------- Watch

WCR = rpc_pb2.WatchCreateRequest


def watch_ops() -> st.SearchStrategy:
    create = st.builds(
        lambda key, end, rev, pn, filters, pk, wid, frag: ("create", WCR(
            key=key, range_end=end, progress_notify=pn, filters=filters, prev_kv=pk, watch_id=wid,
            fragment=frag), rev),
        keys(allow_huge=False), range_ends(), revs(), st.booleans(),
        st.lists(enum(WCR.FilterType.values()), max_size=3), st.booleans(),
        st.one_of(st.just(0), st.integers(-3, 5), i64()), st.booleans())
    cancel = st.builds(lambda wid: ("cancel", wid, None), st.one_of(st.integers(-2, 5), i64()))
    progress = st.just(("progress", None, None))
    return st.lists(st.one_of(create, create, cancel, progress), min_size=1, max_size=6)


async def _watch_session(endpoint: str, reqs: list[rpc_pb2.WatchRequest], creates: int,
                         metadata: tuple = ()) -> tuple:
    """Send reqs on one stream; read until every create got its created answer (10 s)."""
    ch = grpc.aio.insecure_channel(endpoint)
    try:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=metadata)
        for r in reqs:
            await call.write(r)
        created = 0
        deadline = time.monotonic() + CALL_TIMEOUT
        while created < creates:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None, f"{creates - created} of {creates} creates unanswered after {CALL_TIMEOUT}s"
            try:
                resp = await asyncio.wait_for(call.read(), left)
            except asyncio.TimeoutError:
                continue
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details() or "", None
            if resp is grpc.aio.EOF:
                code = await call.code()
                return code, await call.details(), None
            if resp.created:
                created += 1
        call.cancel()
        return None, "", None
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
def test_watch_create_cancel_progress(target, mode):
    t = target

    @props(mode, 60)
    @given(member=st.integers(0, 2), ops=watch_ops(),
           md=st.sampled_from([(), (("hasleader", "true"),), (("hasleader", "false"),),
                               (("client-api-version", "3.4"), ("hasleader", "true")), (("hasleader", "TRUE "),)]))
    def prop(member, ops, md):
        reqs, creates = [], 0
        for kind, body, rev in ops:
            if kind == "create":
                body.start_revision = resolve(t, rev)
                reqs.append(rpc_pb2.WatchRequest(create_request=body))
                creates += 1
            elif kind == "cancel":
                reqs.append(rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=body)))
            else:
                reqs.append(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        code, msg, stuck = asyncio.run(_watch_session(t.cluster.endpoints[member], reqs, creates, md))
        t.check_deaths("Watch", reqs)
        assert stuck is None, f"Watch: {stuck}\n  requests: {short(reqs)}"
        bad = verdict("Watch", reqs, code, msg or "", t.tally)
        assert bad is None, f"{bad}\n  requests: {short(reqs)}"

    prop()
    finish(t, "Watch")


# ----------------------------------------------------------------------------- Lease


def lease_ids() -> st.SearchStrategy[int]:
    return st.one_of(i64(), st.just("granted"))


async def _keepalive(endpoint: str, ids: list[int]) -> tuple:
    ch = grpc.aio.insecure_channel(endpoint)
    try:
        call = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(timeout=CALL_TIMEOUT)
        try:
            for i in ids:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=i))
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    return await call.code(), await call.details()
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details() or ""
        call.cancel()
        return None, ""
    finally:
        await ch.close()


@pytest.mark.parametrize("mode", MODES)
def test_lease(target, mode):
    t = target
    granted: list[int] = []

    @props(mode, 80)
    @given(member=st.integers(0, 2), kind=st.sampled_from(["grant", "revoke", "keepalive", "ttl", "leases"]),
           ttl=i64(), lid=lease_ids(), more=st.lists(lease_ids(), max_size=4), keys_=st.booleans())
    def prop(member, kind, ttl, lid, more, keys_):
        stub = t.stub(member, rpc_pb2_grpc.LeaseStub)

        def real(x):
            return (granted[-1] if granted else 0) if x == "granted" else x
        lid = real(lid)
        if kind == "grant":
            resp = t.call("LeaseGrant", stub.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lid))
            if resp is not None and resp.ID:
                granted.append(resp.ID)
        elif kind == "revoke":
            t.call("LeaseRevoke", stub.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=lid))
        elif kind == "keepalive":
            ids = [lid, *map(real, more)]
            code, msg = asyncio.run(_keepalive(t.cluster.endpoints[member], ids))
            t.check_deaths("LeaseKeepAlive", ids)
            bad = verdict("LeaseKeepAlive", ids, code, msg or "", t.tally)
            assert bad is None, f"{bad}\n  ids: {ids}"
        elif kind == "ttl":
            t.call("LeaseTimeToLive", stub.LeaseTimeToLive, rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=keys_))
        else:
            t.call("LeaseLeases", stub.LeaseLeases, rpc_pb2.LeaseLeasesRequest())

    prop()
    finish(t, "Lease")


# ----------------------------------------------------------------------------- Maintenance


def _disarm_all(t: Target) -> None:
    """Disarm whatever alarm an example raised (NOSPACE would refuse every later write)."""
    m = t.stub(0, rpc_pb2_grpc.MaintenanceStub)
    listed = t.call("Alarm", m.Alarm, rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET))
    for a in listed.alarms if listed is not None else ():
        t.call("Alarm", m.Alarm, rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=a.memberID, alarm=a.alarm))


def _snapshot(stub, req) -> int:
    n = 0
    for chunk in stub.Snapshot(req, timeout=CALL_TIMEOUT * 3):
        n += len(chunk.blob)
    return n


@pytest.mark.parametrize("mode", MODES)
def test_maintenance(target, mode):
    t = target
    A = rpc_pb2.AlarmRequest
    # Enough data that Snapshot / Hash / HashKV / Defragment are real work (issue 8 item 3:
    # none may block a member's loop): BULK_MB of 100 KiB values, half of them overwritten
    # once so that defrag has pages to reclaim.
    kv = t.stub(0, rpc_pb2_grpc.KVStub)
    n = BULK_MB * 10
    for i in range(n + n // 2):
        kv.Put(rpc_pb2.PutRequest(key=b"bulk/%05d" % (i % n), value=os.urandom(100 * 1024)), timeout=CALL_TIMEOUT)
    t.poller.reset()

    @props(mode, 40)
    @given(member=st.integers(0, 2),
           kind=st.sampled_from(["status", "hash", "hashkv", "alarm", "alarm", "defrag", "snapshot", "move"]),
           rev=revs(), action=enum(A.AlarmAction.values()), alarm=enum(rpc_pb2.AlarmType.values()),
           mid=st.one_of(u64(), st.just("member")), pick=st.integers(0, 2))
    def prop(member, kind, rev, action, alarm, mid, pick):
        m = t.stub(member, rpc_pb2_grpc.MaintenanceStub)
        if mid == "member":
            mid = t.member_ids()[pick % 3]
        if kind == "status":
            t.call("Status", m.Status, rpc_pb2.StatusRequest())
        elif kind == "hash":
            t.call("Hash", m.Hash, rpc_pb2.HashRequest())
        elif kind == "hashkv":
            t.call("HashKV", m.HashKV, rpc_pb2.HashKVRequest(revision=resolve(t, rev)))
        elif kind == "alarm":
            try:
                t.call("Alarm", m.Alarm, A(action=action, memberID=mid, alarm=alarm))
            finally:
                _disarm_all(t)
        elif kind == "defrag":
            t.call("Defragment", m.Defragment, rpc_pb2.DefragmentRequest())
        elif kind == "snapshot":
            t.call("Snapshot", lambda r, timeout: _snapshot(m, r), rpc_pb2.SnapshotRequest())
        else:
            if pick != 2:   # mostly to the leader: only it moves leadership (others: "not leader")
                m = t.stub(t.cluster.wait_leader(timeout=15), rpc_pb2_grpc.MaintenanceStub)
            t.call("MoveLeader", m.MoveLeader, rpc_pb2.MoveLeaderRequest(targetID=mid))
            t.cluster.wait_leader(timeout=15)

    prop()
    finish(t, "Maintenance")


@pytest.mark.parametrize("action,alarm", [
    (1750, 0),
    (rpc_pb2.AlarmRequest.ACTIVATE, 99),
    (rpc_pb2.AlarmRequest.DEACTIVATE, -5)])
def test_alarm_with_unknown_enums(hard_cluster_factory, action, alarm):
    """etcd ignores an unknown action (empty answer) and stores an unknown alarm type with a
    warning: no member may die, nor stop serving (found by the property below: every member's
    raft loop died on AlarmAction.Name(1750); fixed by SERVER)."""
    c = hard_cluster_factory(3)
    with grpc.insecure_channel(c.endpoints[0]) as ch:
        m = rpc_pb2_grpc.MaintenanceStub(ch)
        try:
            m.Alarm(rpc_pb2.AlarmRequest(action=action, alarm=alarm), timeout=CALL_TIMEOUT)
            code, msg = None, ""
        except grpc.RpcError as e:
            code, msg = e.code(), e.details() or ""
        assert code is None or msg in ALLOWED.get(code, ()), (code, msg)
        # The request is applied everywhere by now: every member still serves a linearizable
        # read, and Status and Alarm GET (which show the alarms) answer.
        for ep in c.endpoints:
            with grpc.insecure_channel(ep) as ch2:
                rpc_pb2_grpc.KVStub(ch2).Range(rpc_pb2.RangeRequest(key=b"x"), timeout=CALL_TIMEOUT)
                rpc_pb2_grpc.MaintenanceStub(ch2).Status(rpc_pb2.StatusRequest(), timeout=CALL_TIMEOUT)
                rpc_pb2_grpc.MaintenanceStub(ch2).Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET),
                                                         timeout=CALL_TIMEOUT)
        assert all(mb.running() for mb in c.members), [death_note(mb) for mb in c.members if not mb.running()]
        for a in m.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=CALL_TIMEOUT).alarms:
            m.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=a.memberID,
                                         alarm=a.alarm), timeout=CALL_TIMEOUT)


# ----------------------------------------------------------------------------- Auth


@pytest.mark.parametrize("mode", MODES)
def test_auth(target, mode):
    t = target
    names = st.one_of(st.just(""), st.just("root"), st.text(max_size=12), st.sampled_from(["[/]", "\x1b[2J"]))

    @props(mode, 30)
    @given(member=st.integers(0, 2),
           kind=st.sampled_from(["status", "enable", "authenticate", "user_get", "role_get", "user_list"]),
           name=names, password=st.text(max_size=12))
    def prop(member, kind, name, password):
        a = t.stub(member, rpc_pb2_grpc.AuthStub)
        if kind == "status":
            if hasattr(a, "AuthStatus"):
                t.call("AuthStatus", a.AuthStatus, rpc_pb2.AuthStatusRequest())
        elif kind == "enable":
            t.call("AuthEnable", a.AuthEnable, rpc_pb2.AuthEnableRequest())
        elif kind == "authenticate":
            t.call("Authenticate", a.Authenticate, rpc_pb2.AuthenticateRequest(name=name, password=password))
        elif kind == "user_get":
            t.call("UserGet", a.UserGet, rpc_pb2.AuthUserGetRequest(name=name))
        elif kind == "role_get":
            t.call("RoleGet", a.RoleGet, rpc_pb2.AuthRoleGetRequest(role=name))
        else:
            t.call("UserList", a.UserList, rpc_pb2.AuthUserListRequest())

    prop()
    finish(t, "Auth")

