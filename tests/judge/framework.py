"""The etcdctl judge: the same etcdctl commands against real etcd and raftnode.

A `Judge` holds two `Side`s, each a running 3-member cluster: `ref` (real
etcd 3.4, the judge) and `cand` (raftnode, the candidate). A test opens a
`Case`, which records each side's current revision, and runs commands with

    out = case.same("get", "kv/", "--prefix", "-w", "json")

which runs the identical argv with the real etcdctl on both sides (ref first),
normalises what legitimately differs and asserts that exit code, stdout and
stderr are then equal. What is normalised, and nothing else:

- member ids (hex and decimal)      -> <m0> <m1> <m2> (by member index)
- the cluster id                    -> <cluster>
- client / peer host:port           -> <ep0>.. / <peer0>..; member names -> <name0>..
- values a test registers with case.alias() (lease ids, new member ids, files)
- revisions in structured output (json, fields, "compacted revision N")
                                    -> <r+k>, relative to the revision at Case start
- raft term/index, db sizes, server version, hashes, "took" durations,
  lease remaining TTLs, clientv3 log timestamps and balancer target names
- the member that answered (header.member_id) -> <member>, if it is a member

Arguments may be per-side: any argv item that is a callable gets the Side and
returns the string (case.rev(k) is base revision + k on that side).

Set RAFTUI_JUDGE_CANDIDATE=etcd to make the candidate a second real etcd
cluster: the whole suite must then pass, which is how the expectations and
the normalisation were validated against etcd itself.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Sequence

from engine.cli import launch
from tests.support.launch import with_parent_death_signal
from tests.support import etcd as support_etcd
from tests.support import ports
from tests.support import raftnode as support_raftnode
from tests.support.etcd import etcdctl

CANDIDATE_ENV = "RAFTUI_JUDGE_CANDIDATE"
ETCDCTL_TIMEOUT = 30.0

Arg = str | Callable[["Side"], str]


def candidate_kind() -> str:
    kind = os.environ.get(CANDIDATE_ENV, "raftnode").strip() or "raftnode"
    if kind not in ("raftnode", "etcd"):
        raise ValueError(f"{CANDIDATE_ENV} must be raftnode or etcd, not {kind!r}")
    return kind


def poll(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call pred() until it returns something truthy; AssertionError naming `what` at the deadline.

    Other exceptions from pred() (a grpc error, unparsable output) count as "not yet"
    and are reported at the deadline; an AssertionError from pred() fails at once.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            got = pred()
            if got:
                return got
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 -- reported at the deadline
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)  # poll interval, not synchronisation


# =============================================================================
# Sides
# =============================================================================

class Side:
    """One running cluster plus what is needed to normalise its outputs."""

    def __init__(self, label: str, kind: str, cluster, workdir: pathlib.Path) -> None:
        self.label = label          # "etcd" | "raftnode" | "etcd-candidate"
        self.kind = kind            # "etcd" | "raftnode"
        self.cluster = cluster
        self.workdir = workdir
        self.vars: dict[str, Any] = {}
        self._procs: list[BgProc] = []
        self.refresh_ids()

    # ---- identity -------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints[:3]

    @property
    def members(self):
        return self.cluster.members

    def name(self, i: int) -> str:
        return self.members[i].name

    def refresh_ids(self) -> None:
        """Member ids by index and the cluster id: asked from the cluster, else derived."""
        self.member_ids: list[int | None] = [getattr(m, "member_id", None) for m in self.members]
        self.cluster_id: int | None = None
        r = etcdctl(self.endpoints, "member", "list", "-w", "json", timeout=10)
        if r.returncode == 0:
            try:
                doc = json.loads(r.stdout)
                self.cluster_id = int(doc["header"]["cluster_id"])
                by_peer = {u: int(m["ID"]) for m in doc.get("members", []) for u in m.get("peerURLs", [])}
                for i, m in enumerate(self.members):
                    if m.peer_url in by_peer:
                        self.member_ids[i] = by_peer[m.peer_url]
            except (ValueError, KeyError, TypeError):
                pass
        if self.cluster_id is None and self.kind == "raftnode":
            from engine.cli.flags import cluster_id
            ids = [i for i in self.member_ids[:3] if i]
            if ids:
                self.cluster_id = cluster_id(ids)

    def member_index(self, member_id: int) -> int | None:
        for i, mid in enumerate(self.member_ids):
            if mid == member_id:
                return i
        return None

    # ---- running etcdctl --------------------------------------------------------

    def resolve(self, args: Sequence[Arg]) -> list[str]:
        return [a(self) if callable(a) else a for a in args]

    def eps(self, which) -> list[str]:
        """None/'all' -> the 3 founding members; int -> that member; list of ints; callable(side)."""
        if which is None or which == "all":
            return self.endpoints
        if callable(which):
            which = which(self)
        if isinstance(which, int):
            return [self.cluster.endpoints[which]]
        if isinstance(which, str):
            return [which]
        return [self.cluster.endpoints[i] if isinstance(i, int) else i for i in which]

    def ctl(self, *args: Arg, input: str | bytes | None = None, endpoints=None,
            timeout: float = ETCDCTL_TIMEOUT) -> subprocess.CompletedProcess:
        return etcdctl(self.eps(endpoints), *self.resolve(args), input=input, timeout=timeout)

    def ctl_ok(self, *args: Arg, **kw) -> subprocess.CompletedProcess:
        r = self.ctl(*args, **kw)
        assert r.returncode == 0, (f"[{self.label}] etcdctl {' '.join(self.resolve(args))} failed "
                                   f"({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def revision(self) -> int | None:
        """The cluster's current revision (header of a linearizable get), or None."""
        r = self.ctl("get", "judge-revision-probe", "-w", "json", timeout=10)
        if r.returncode != 0:
            return None
        try:
            return int(json.loads(r.stdout)["header"].get("revision", 0))
        except (ValueError, KeyError):
            return None

    def statuses(self, endpoints=None) -> list[dict | None]:
        out = []
        for ep in self.eps(endpoints):
            r = etcdctl([ep], "endpoint", "status", "-w", "json", timeout=10)
            try:
                out.append(json.loads(r.stdout)[0]["Status"] if r.returncode == 0 else None)
            except (ValueError, IndexError, KeyError):
                out.append(None)
        return out

    def leader_index(self) -> int | None:
        """Index of the member that says it is the leader (Status over etcdctl), or None."""
        for i, st in enumerate(self.statuses()):
            if st and st.get("leader") and st["leader"] == st["header"]["member_id"]:
                return self.member_index(int(st["leader"]))
        return None

    def wait_leader(self, timeout: float = 15.0) -> int:
        return poll(lambda: (lambda i: None if i is None else (i,))(self.leader_index()), timeout,
                    f"a leader on {self.label}")[0]

    def ensure_leader(self, i: int, timeout: float = 20.0) -> None:
        """Make member i the leader with `etcdctl move-leader` (poll until it reports so)."""
        def done() -> bool:
            lead = self.leader_index()
            if lead == i:
                return True
            if lead is not None:
                self.ctl("move-leader", f"{self.member_ids[i]:x}", timeout=10)
            return False
        poll(done, timeout, f"member {i} to lead {self.label}", interval=0.2)

    # ---- background etcdctl ------------------------------------------------------

    def bg(self, *args: Arg, endpoints=None) -> "BgProc":
        argv = [support_etcd.require.etcdctl_path() or "etcdctl",
                f"--endpoints={','.join(self.eps(endpoints))}", *self.resolve(args)]
        p = BgProc(argv)
        self._procs.append(p)
        return p

    def stop_bg(self) -> None:
        for p in self._procs:
            p.stop()
        self._procs.clear()

    # ---- membership --------------------------------------------------------------

    def plan_member(self, name: str):
        """Ports and paths for a member that `member add` will announce."""
        if self.kind == "raftnode":
            return self.cluster.plan_member(name)
        cport, pport = ports.free_ports(2)
        return support_etcd.EtcdMember(name=name, client_port=cport, peer_port=pport,
                                       data_dir=self.cluster.data_dir / f"{name}.data",
                                       log_path=self.cluster.data_dir / f"{name}.log")

    def start_member(self, m, initial_cluster: str, timeout: float = 30.0) -> int:
        """Start a planned member with --initial-cluster-state existing; return its index."""
        if self.kind == "raftnode":
            self.cluster.start_planned(m, initial_cluster=initial_cluster, timeout=timeout)
            return len(self.members) - 1
        args = [support_etcd.require.etcd_path() or "etcd",
                *launch.member_flags(m.name, m.data_dir, m.client_url, m.peer_url, initial_cluster,
                                     self.cluster.token, state="existing"),
                "--logger=zap", "--log-outputs=stderr"]
        m._log = open(m.log_path, "ab")
        self.members.append(m)
        m.proc = subprocess.Popen(with_parent_death_signal(args), stdin=subprocess.DEVNULL, stdout=m._log,
                                  stderr=subprocess.STDOUT, env=support_etcd._clean_env())
        return len(self.members) - 1

    def stop_member(self, i: int, timeout: float = 10.0) -> None:
        m = self.members[i]
        if self.kind == "raftnode":
            self.cluster.stop_member(i, timeout)
            return
        support_etcd.EtcdCluster._stop_member(m, timeout)

    def stop(self) -> None:
        self.stop_bg()
        self.cluster.stop()


def start_side(label: str, kind: str, workdir: pathlib.Path, *, extra_args: Sequence[str] = ()) -> Side:
    workdir.mkdir(parents=True, exist_ok=True)
    if kind == "etcd":
        cluster = support_etcd.start_etcd_cluster(workdir / "cluster", size=3, extra_args=extra_args)
    else:
        cluster = support_raftnode.start_raftnode_cluster(workdir / "cluster", size=3, extra_args=extra_args)
    try:
        return Side(label, kind, cluster, workdir)
    except BaseException:
        cluster.stop()
        raise


# =============================================================================
# Background etcdctl (watch, lock, elect)
# =============================================================================

class BgProc:
    """A long-running etcdctl: output lines collected by a reader thread; stopped by PID."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(with_parent_death_signal(argv), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=support_etcd._clean_env({"ETCDCTL_API": "3"}))
        self._out: list[str] = []
        self._err: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, self._out), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self._err), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                sink.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._out)

    def err_lines(self) -> list[str]:
        with self._lock:
            return list(self._err)

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines())

    def wait_lines(self, pred: Callable[[list[str]], bool], timeout: float, what: str) -> list[str]:
        def check():
            if self.proc.poll() is not None:
                for t in self._threads:
                    t.join(timeout=2)
                got = self.lines()
                if pred(got):
                    return (got,)
                raise AssertionError(f"etcdctl exited ({self.proc.returncode}) before {what}:\n"
                                     f"stdout={got}\nstderr={self.err_lines()}")
            got = self.lines()
            return (got,) if pred(got) else None
        try:
            return poll(check, timeout, what)[0]
        except AssertionError as e:
            raise AssertionError(f"{e}\nargv={self.argv}\nstdout so far={self.lines()}\n"
                                 f"stderr={self.err_lines()}") from None

    def wait_line(self, line: str, timeout: float = 15.0, count: int = 1) -> list[str]:
        return self.wait_lines(lambda ls: ls.count(line) >= count, timeout, f"line {line!r} x{count}")

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int:
        """Signal by PID, SIGKILL after `timeout`; returns the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=2)
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"etcdctl did not exit in {timeout}s: {self.argv}\n{self.lines()}") from None
        for t in self._threads:
            t.join(timeout=2)
        return self.proc.returncode


# =============================================================================
# Normalisation
# =============================================================================

_CLIENT_LOG_TS = re.compile(r'"ts":(?:"[^"]*"|[0-9.e+]+)')
_CLIENT_LOG_TARGET = re.compile(r'"target":"endpoint://client-[0-9a-f-]+/[^"]*"')
_TOOK = re.compile(r"took = [0-9.]+[a-zµ]+")
_REMAINING = re.compile(r"remaining\(-?\d+s\)")
_COMPACTED = re.compile(r"compacted revision (\d+)")
_FIELD = re.compile(r'^"(\w+)" : (.*)$')
_MEMBER_ADDED = re.compile(r"^Member +([0-9a-f]+) added to cluster +([0-9a-f]+)$", re.M)
# etcdctl prints some ids with %16x: space-padded when the id has leading zero nibbles.
_PADDED_TOKEN = re.compile(r" {2,}(<[\w+-]+>)")
_INITIAL_CLUSTER = re.compile(r'^ETCD_INITIAL_CLUSTER="([^"]*)"$', re.M)

REV_KEYS = {"revision", "create_revision", "mod_revision", "compact_revision", "CompactRevision",
            "Revision", "CreateRevision", "ModRevision"}
TERM_KEYS = {"raft_term", "raftTerm", "RaftTerm"}
INDEX_KEYS = {"raftIndex", "raftAppliedIndex", "RaftIndex", "RaftAppliedIndex"}
SIZE_KEYS = {"dbSize", "dbSizeInUse", "DbSize", "DbSizeInUse", "DBSize", "DBSizeInUse"}
HASH_KEYS = {"hash", "Hash"}
TTL_KEYS = {"ttl"}           # timetolive's remaining TTL (json); "TTL" (granted) is exact
VERSION_KEYS = {"version", "Version"}  # only when a string (server version); a kv's version is an int
TABLE_COLUMNS = {"DB SIZE": "<size>", "RAFT TERM": "<term>", "RAFT INDEX": "<index>",
                 "RAFT APPLIED INDEX": "<index>", "VERSION": "<version>", "TOOK": "<took>", "HASH": "<hash>"}

# `endpoint status` / `endpoint hashkv` print comma-separated lines in the simple format.
CSV_LAYOUTS = {
    "csv-status": ("ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM",
                   "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"),
    "csv-hashkv": ("ENDPOINT", "HASH"),
}


@dataclasses.dataclass
class Outcome:
    side: Side
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    norm: tuple = ()

    def __str__(self) -> str:
        return (f"[{self.side.label}] etcdctl {' '.join(a if len(a) < 200 else a[:60] + '...' for a in self.argv)}\n"
                f"  rc={self.rc}\n  stdout={self.stdout!r}\n  stderr={self.stderr!r}")


class Normaliser:
    def __init__(self, side: Side, base_rev: int | None, aliases: dict[str, str]) -> None:
        self.side = side
        self.base = base_rev
        pairs: dict[str, str] = {}
        ids = set()
        for i, m in enumerate(side.members):
            mid = side.member_ids[i] if i < len(side.member_ids) else getattr(m, "member_id", None)
            if mid:
                pairs[f"{mid:x}"] = f"<m{i}>"
                pairs[f"{mid:016x}"] = f"<m{i}>"
                pairs[str(mid)] = f"<m{i}>"
                ids.add(mid)
            pairs[f"{ports.HOST}:{m.client_port}"] = f"<ep{i}>"
            pairs[f"{ports.HOST}:{m.peer_port}"] = f"<peer{i}>"
        if side.cluster_id:
            pairs[f"{side.cluster_id:x}"] = "<cluster>"
            pairs[str(side.cluster_id)] = "<cluster>"
        pairs.update(aliases)
        self.member_ids = ids
        self.pairs = pairs
        alternatives = sorted(pairs, key=len, reverse=True)
        self._rx = re.compile(r"(?<![0-9a-zA-Z])(" + "|".join(map(re.escape, alternatives)) + r")(?![0-9a-zA-Z])") \
            if alternatives else None
        names = {m.name: f"<name{i}>" for i, m in enumerate(side.members)}
        self._names = names
        self._names_rx = re.compile(r"(?<![\w/<.-])(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True)))
                                    + r")(?![\w/>.-])") if names else None

    # -- primitives ---------------------------------------------------------------

    def text(self, s: str) -> str:
        if self._rx is not None:
            s = self._rx.sub(lambda m: self.pairs[m.group(1)], s)
        return s

    def names(self, s: str) -> str:
        if self._names_rx is not None:
            s = self._names_rx.sub(lambda m: self._names[m.group(1)], s)
        return s

    def rev(self, v):
        """A revision relative to the case's base: "<r+k>"; 0 (none) and non-numbers unchanged."""
        try:
            n = int(v)
        except (TypeError, ValueError):
            return v
        if n == 0 or self.base is None:
            return v
        v = n
        d = v - self.base
        return f"<r{d:+d}>"

    def value(self, v):
        """A scalar that is not keyed specially: known ids/ports/aliases."""
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            s = str(v)
            return self.pairs.get(s, v)
        if isinstance(v, str):
            return self.names(self.text(v))
        return v

    # -- structured ---------------------------------------------------------------

    def tree(self, obj, key: str | None = None, parent: str | None = None):
        if isinstance(obj, dict):
            return {k: self.tree(v, k, key) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.tree(v, key, parent) for v in obj]
        if key in REV_KEYS and isinstance(obj, int):
            return self.rev(obj)
        if key in TERM_KEYS:
            return "<term>"
        if key in INDEX_KEYS:
            return "<index>"
        if key in SIZE_KEYS:
            return "<size>"
        if key in HASH_KEYS:
            return "<hash>"
        if key in TTL_KEYS:
            return "<ttl>"
        if key in VERSION_KEYS and isinstance(obj, str):
            return "<version>"
        if key == "member_id" and parent in ("header", "Header", None) and obj in self.member_ids:
            return "<member>"
        return self.value(obj)

    def json_text(self, s: str):
        """Parse stdout as one JSON document or one per line; None if it is not JSON."""
        s = s.strip()
        if not s:
            return None
        try:
            return [self.tree(json.loads(s))]
        except ValueError:
            pass
        try:
            return [self.tree(json.loads(line)) for line in s.splitlines() if line.strip()]
        except ValueError:
            return None

    def fields(self, s: str) -> list[str]:
        out = []
        for line in s.splitlines():
            m = _FIELD.match(line)
            if not m:
                out.append(self.simple_line(line))
                continue
            k, v = m.groups()
            if k in REV_KEYS:
                v = self.rev(v)
            elif k in TERM_KEYS and v != "0":
                v = "<term>"
            elif k in INDEX_KEYS:
                v = "<index>"
            elif k in SIZE_KEYS:
                v = "<size>"
            elif k in HASH_KEYS:
                v = "<hash>"
            elif k == "MemberID" and v.isdigit() and int(v) in self.member_ids:
                v = "<member>"
            else:
                v = self.names(self.text(v))
            out.append(f'"{k}" : {v}')
        return out

    def table(self, s: str) -> list[tuple[str, ...]]:
        """Rows of stripped cells (header first); continuation rows joined into the row above."""
        rows: list[list[str]] = []
        for line in s.splitlines():
            if not line.startswith("|"):
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if rows and len(rows) > 1 and cells and cells[0] == "" and any(cells):
                prev = rows[-1]
                for i, c in enumerate(cells):
                    if c and i < len(prev):
                        prev[i] = (prev[i] + " " + c).strip()
                continue
            rows.append(cells)
        if not rows:
            return []
        header = rows[0]
        out = [tuple(header)]
        for r in rows[1:]:
            cells = []
            for col, c in zip(header, r):
                if col in TABLE_COLUMNS and c:
                    cells.append(TABLE_COLUMNS[col])
                else:
                    cells.append(self.names(self.text(c)))
            out.append(tuple(cells))
        return out

    def simple_line(self, line: str) -> str:
        line = _TOOK.sub("took = <took>", line)
        line = _REMAINING.sub("remaining(<ttl>)", line)
        line = _COMPACTED.sub(lambda m: f"compacted revision {self.rev(m.group(1))}", line)
        return _PADDED_TOKEN.sub(r" \1", self.names(self.text(line)))

    def simple(self, s: str) -> list[str]:
        return [self.simple_line(line) for line in s.splitlines()]

    def stderr(self, s: str) -> list[str]:
        out = []
        for line in s.splitlines():
            if line.startswith("{") and '"level"' in line:
                try:
                    doc = json.loads(line)
                except ValueError:
                    doc = None
                if isinstance(doc, dict):
                    for k in ("ts", "took", "size"):
                        if k in doc:
                            doc[k] = f"<{k}>"
                    if "target" in doc:
                        doc["target"] = "<target>"
                    out.append(json.dumps(self.tree(doc), sort_keys=True))
                    continue
            out.append(self.simple_line(line))
        return out

    def csv(self, s: str, columns: Sequence[str]) -> list[tuple[str, ...]]:
        """etcdctl's "simple" lines of comma-separated cells, normalised like table columns."""
        out = []
        for line in s.splitlines():
            cells = [c.strip() for c in line.split(", ")]
            out.append(tuple(TABLE_COLUMNS[col] if col in TABLE_COLUMNS and c else self.names(self.text(c))
                             for col, c in zip(list(columns) + [""] * len(cells), cells)))
        return out

    def stdout(self, s: str, fmt: str):
        if fmt in CSV_LAYOUTS:
            return self.csv(s, CSV_LAYOUTS[fmt])
        if fmt == "json":
            parsed = self.json_text(s)
            return parsed if parsed is not None else self.simple(s)
        if fmt == "fields":
            return self.fields(s)
        if fmt == "table":
            return self.table(s)
        return self.simple(s)


def output_format(argv: Sequence[str]) -> str:
    """The -w format of an argv; the simple format of endpoint status/hashkv is "csv-..."."""
    fmt = _write_out(argv)
    if fmt == "simple" and len(argv) >= 2 and argv[0] == "endpoint" and argv[1] in ("status", "hashkv"):
        return f"csv-{argv[1]}"
    return fmt


def _write_out(argv: Sequence[str]) -> str:
    for i, a in enumerate(argv):
        if a in ("-w", "--write-out") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--write-out=") or a.startswith("-w="):
            return a.split("=", 1)[1]
    return "simple"


# =============================================================================
# Judge and Case
# =============================================================================

class Judge:
    def __init__(self, ref: Side, cand: Side) -> None:
        self.ref, self.cand = ref, cand

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.ref, self.cand

    def case(self) -> "Case":
        return Case(self)

    def stop(self) -> None:
        for s in self.sides:
            try:
                s.stop()
            except Exception:  # noqa: BLE001 -- stop the other side regardless
                pass


def start_judge(workdir: pathlib.Path, *, extra_args: Sequence[str] = ()) -> Judge:
    kind = candidate_kind()
    ref = start_side("etcd", "etcd", workdir / "etcd", extra_args=extra_args)
    try:
        cand = start_side("raftnode" if kind == "raftnode" else "etcd-candidate", kind,
                          workdir / f"{kind}-cand", extra_args=extra_args)
    except BaseException:
        ref.stop()
        raise
    return Judge(ref, cand)


class Case:
    """One comparison script: base revisions recorded at the start, aliases registered as it goes."""

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.base: dict[str, int | None] = {s.label: s.revision() for s in judge.sides}
        self.aliases: dict[str, dict[str, str]] = {s.label: {} for s in judge.sides}
        self.vars: dict[str, dict[str, Any]] = {s.label: {} for s in judge.sides}   # per side, this case only

    # -- per-side arguments ----------------------------------------------------------

    def rev(self, k: int) -> Callable[[Side], str]:
        """Argument: the side's base revision + k (the k-th write of this case is base + k)."""
        def arg(side: Side) -> str:
            base = self.base[side.label]
            assert base is not None, f"[{side.label}] no base revision (the cluster did not answer a get)"
            return str(base + k)
        return arg

    def base_rev(self, side: Side) -> int:
        base = self.base[side.label]
        assert base is not None, f"[{side.label}] no base revision (the cluster did not answer a get)"
        return base

    @staticmethod
    def var(name: str, fmt: Callable[[Any], str] = str) -> Callable[[Side], str]:
        return lambda side: fmt(side.vars[name])

    def alias(self, side: Side, raw: str, token: str) -> None:
        self.aliases[side.label][raw] = token

    def alias_id(self, side: Side, value: int, token: str) -> None:
        """Register an id in hex, zero-padded hex and decimal."""
        for form in (f"{value:x}", f"{value:016x}", str(value)):
            self.aliases[side.label][form] = token

    def normaliser(self, side: Side) -> Normaliser:
        return Normaliser(side, self.base[side.label], self.aliases[side.label])

    # -- running -------------------------------------------------------------------------

    def run(self, side: Side, *args: Arg, input=None, endpoints=None, fmt: str | None = None,
            timeout: float = ETCDCTL_TIMEOUT) -> Outcome:
        argv = side.resolve(args)
        r = side.ctl(*argv, input=input, endpoints=endpoints, timeout=timeout)
        out = Outcome(side, argv, r.returncode, r.stdout, r.stderr)
        self.normalise(out, fmt or output_format(argv))
        return out

    def normalise(self, out: Outcome, fmt: str, *, sort: bool = False) -> None:
        n = self.normaliser(out.side)
        so = n.stdout(out.stdout, fmt)
        if sort and isinstance(so, list):
            if fmt == "table" and so:
                so = [so[0], *sorted(so[1:])]
            else:
                so = sorted(so, key=repr)
        se = n.stderr(out.stderr)
        if sort:
            se = sorted(se)   # e.g. `endpoint health` reports on stderr, in completion order
        out.norm = (out.rc, so, se)

    def both(self, *args: Arg, **kw) -> tuple[Outcome, Outcome]:
        """Run on both sides, no comparison."""
        return tuple(self.run(s, *args, **kw) for s in self.judge.sides)  # type: ignore[return-value]

    def same(self, *args: Arg, input=None, endpoints=None, fmt: str | None = None, sort: bool = False,
             rc: int | None = None, stderr: bool = True, timeout: float = ETCDCTL_TIMEOUT,
             prepare: Callable[[Outcome], None] | None = None) -> tuple[Outcome, Outcome]:
        """Run on both sides and assert the normalised (rc, stdout, stderr) are equal.

        rc: also assert the reference's exit code (guards the expectation itself).
        sort: compare lines (or table rows) as a multiset where etcd's order is not defined.
        prepare(outcome): called on each side's raw outcome before normalising (register aliases).
        """
        outs = []
        for side in self.judge.sides:
            argv = side.resolve(args)
            r = side.ctl(*argv, input=input, endpoints=endpoints, timeout=timeout)
            o = Outcome(side, argv, r.returncode, r.stdout, r.stderr)
            if prepare is not None:
                prepare(o)
            outs.append(o)
        f = fmt or output_format(outs[0].argv)
        for o in outs:
            self.normalise(o, f, sort=sort)
        ref, cand = outs
        if os.environ.get("RAFTUI_JUDGE_TRACE"):
            print(f"judge: etcdctl {' '.join(a[:40] for a in ref.argv)} -> {ref.norm!r}", file=sys.stderr)
        if rc is not None:
            assert ref.rc == rc, f"the reference itself gave rc={ref.rc}, expected {rc}:\n{ref}"
        assert_same(ref, cand, compare_stderr=stderr)
        return ref, cand

    def same_text(self, ref: Outcome, cand: Outcome, what: str) -> None:
        assert_same(ref, cand, what=what)


def assert_same(ref: Outcome, cand: Outcome, *, compare_stderr: bool = True, what: str = "") -> None:
    r, c = ref.norm, cand.norm
    if not compare_stderr:
        r, c = r[:2], c[:2]
    if r == c:
        return
    lines = [f"etcdctl output differs{(' (' + what + ')') if what else ''}:", str(ref), str(cand),
             "normalised:", f"  {ref.side.label}: {r!r}", f"  {cand.side.label}: {c!r}"]
    raise AssertionError("\n".join(lines))


def compare_values(ref_side: Side, ref_val, cand_side: Side, cand_val, what: str) -> None:
    assert ref_val == cand_val, f"{what} differs: {ref_side.label}={ref_val!r} {cand_side.label}={cand_val!r}"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def parse_member_added(text: str) -> tuple[int, str]:
    """(new member id, ETCD_INITIAL_CLUSTER) from `member add` output."""
    m = _MEMBER_ADDED.search(text)
    ic = _INITIAL_CLUSTER.search(text)
    assert m and ic, f"unexpected member add output: {text!r}"
    return int(m.group(1), 16), ic.group(1)


def sort_initial_cluster(lines: list[str]) -> list[str]:
    """ETCD_INITIAL_CLUSTER comes from a Go map: compare its entries as a set."""
    out = []
    for line in lines:
        if line.startswith('ETCD_INITIAL_CLUSTER="'):
            inner = line[len('ETCD_INITIAL_CLUSTER="'):-1]
            line = 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(inner.split(","))) + '"'
        out.append(line)
    return out
