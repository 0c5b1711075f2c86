"""/metrics: etcd 3.4's metrics in the Prometheus text format, through prometheus_client.

Names, types, help texts, labels and units are etcd 3.4.23's (as its
/metrics shows them), for what a raftnode member has:

  * read when scraped, from the member through its KVServer (no hooks, no
    cost between scrapes): etcd_server_has_leader, is_leader, is_learner,
    leader_changes_seen_total, proposals_committed_total and
    proposals_applied_total (gauges in etcd: the committed and applied
    index), proposals_pending, proposals_failed_total, slow_apply_total,
    heartbeat_send_failures_total, quota_backend_bytes, etcd_server_version,
    etcd_server_id, etcd_mvcc_db_total_size_in_bytes and _in_use_in_bytes,
    etcd_debugging_mvcc_db_total_size_in_bytes, etcd_debugging_mvcc_keys_total,
    and, once the store and the transport count them, etcd_mvcc_put/delete/
    range/txn_total, etcd_network_peer_sent/received_bytes_total and
    etcd_network_peer_sent_failures_total (messages lost before a peer got
    them: queue full or stream down, as etcd counts them) and
    etcd_network_active_peers{Local,Remote};
  * counted here: etcd_server_health_success / health_failures (/health),
    grpc_server_started_total, handled_total, msg_received_total,
    msg_sent_total and etcd_network_client_grpc_received/sent_bytes_total
    (engine/http/grpc_metrics.py, a server interceptor);
  * histograms fed by the lower layers' observers, with etcd's buckets
    (1 ms doubling to 8.192 s): etcd_disk_wal_fsync_duration_seconds
    (engine.wal.wal.fsync_observer) and
    etcd_disk_backend_commit_duration_seconds
    (engine.mvcc.backend.commit_observer);
  * etcd_network_peer_round_trip_time_seconds{To} (0.1 ms doubling to
    3.2768 s, etcd 3.4's rafthttp buckets), one observation per ping/pong
    round trip the transport measures on a peer stream
    (KVServer.observe_peer_rtt). etcd 3.4 observes its prober's smoothed RTT
    every 30 s (5 s while a peer is unhealthy) instead: the same name, type,
    label and unit; raftnode's samples are raw and more frequent, so a
    dashboard's histogram_quantile over rate() reads the same way, sooner;
  * process_* from prometheus_client's ProcessCollector.

Every member has a registry of its own (several members may share a
process in tests); the observers are module-level in the lower layers, so
the last member started in a process gets the disk timings.
"""
from __future__ import annotations

import asyncio
import bisect
import threading
from typing import Iterable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from engine.api.maintenance import VERSION
from engine.server.kvserver import KVServer

# etcd's disk histograms: prometheus.ExponentialBuckets(0.001, 2, 14).
DISK_BUCKETS = tuple(0.001 * 2 ** i for i in range(14))
# etcd 3.4's peer round-trip buckets (rafthttp/metrics.go):
# prometheus.ExponentialBuckets(0.0001, 2, 16), 0.1 ms to 3.2768 s.
RTT_BUCKETS = tuple(0.0001 * 2 ** i for i in range(16))
# The text format etcd's promhttp answers with.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
assert CONTENT_TYPE_LATEST.startswith("text/plain")

# etcd's counters whose names do not end in _total. prometheus_client always
# writes a counter's HELP/TYPE lines as NAME_total (OpenMetrics' rule); etcd's
# text has the bare name, so those two lines are written back (see render).
LEGACY_COUNTERS = ("etcd_server_health_success", "etcd_server_health_failures")


class Histogram:
    """A thread-safe histogram (observe() may run on a worker thread, e.g.
    the WAL's fsync). prometheus_client's own Histogram would add a
    _created series etcd does not have."""

    def __init__(self, name: str, documentation: str, buckets: Iterable[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(buckets)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.bounds, seconds)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=())
        self.add_to(family, ())
        return family

    def add_to(self, family: HistogramMetricFamily, labels: tuple[str, ...]) -> None:
        """Add this histogram's series to `family` under `labels`."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, acc = [], 0
        for bound, n in zip((*self.bounds, float("inf")), counts):
            acc += n
            cumulative.append((_bound_text(bound), acc))
        family.add_metric(list(labels), cumulative, total)


class HistogramVec:
    """A histogram per label value (etcd's HistogramVec with one label): a
    child appears with its first observation, as in client_golang."""

    def __init__(self, name: str, documentation: str, label: str, buckets: Iterable[float]) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = tuple(buckets)
        self._children: dict[str, Histogram] = {}
        self._lock = threading.Lock()

    def observe(self, value: str, seconds: float) -> None:
        with self._lock:
            child = self._children.get(value)
            if child is None:
                child = self._children[value] = Histogram(self.name, self.documentation, self.bounds)
        child.observe(seconds)

    def remove(self, value: str) -> None:
        with self._lock:
            self._children.pop(value, None)

    def families(self) -> list[HistogramMetricFamily]:
        """[] without children: client_golang writes nothing for an empty vector."""
        with self._lock:
            children = sorted(self._children.items())
        if not children:
            return []
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, child in children:
            child.add_to(family, (value,))
        return [family]


def _bound_text(bound: float) -> str:
    """Go's strconv.FormatFloat(b, 'g', -1, 64), as client_golang writes `le`
    (0.0001, 0.0002, ..., 3.2768; 0.001 ... 8.192), for the bounds used here."""
    if bound == float("inf"):
        return "+Inf"
    return repr(round(bound, 10))


class ServerCollector:
    """What etcd's server and mvcc packages export, read from the member when scraped."""

    def __init__(self, kvs: KVServer) -> None:
        self._kvs = kvs
        self.health_success = 0
        self.health_failures = 0
        self._ever_active: set[int] = set()   # peers whose stream was up at a scrape

    def collect(self) -> Iterator[Metric]:
        kvs = self._kvs
        leader = kvs.leader_id
        counts = _counts(kvs)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        yield gauge("etcd_server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
                    1 if leader else 0)
        yield gauge("etcd_server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                    1 if leader and leader == kvs.member_id else 0)
        yield gauge("etcd_server_is_learner",
                    "Whether or not this member is a learner. 1 if is, 0 otherwise.",
                    1 if kvs.is_learner else 0)
        yield counter("etcd_server_leader_changes_seen_total", "The number of leader changes seen.",
                      counts["leader_changes"])
        yield gauge("etcd_server_proposals_committed_total",
                    "The total number of consensus proposals committed.", kvs.committed_index)
        yield gauge("etcd_server_proposals_applied_total",
                    "The total number of consensus proposals applied.", kvs.applied_index)
        yield gauge("etcd_server_proposals_pending",
                    "The current number of pending proposals to commit.", counts["proposals_pending"])
        yield counter("etcd_server_proposals_failed_total", "The total number of failed proposals seen.",
                      counts["proposals_failed"])
        yield counter("etcd_server_slow_apply_total",
                      "The total number of slow apply requests (likely overloaded from slow disk).",
                      counts["slow_applies"])
        yield counter("etcd_server_heartbeat_send_failures_total",
                      "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
                      counts["heartbeat_send_failures"])
        yield gauge("etcd_server_quota_backend_bytes", "Current backend storage quota size in bytes.",
                    kvs.config.quota_backend_bytes)
        version = GaugeMetricFamily("etcd_server_version", "Which version is running. 1 for "
                                    "'server_version' label with current version.",
                                    labels=["server_version"])
        version.add_metric([VERSION], 1)
        yield version
        sid = GaugeMetricFamily("etcd_server_id", "Server or member ID in hexadecimal format. 1 for "
                                "'server_id' label with current ID.", labels=["server_id"])
        sid.add_metric([f"{kvs.member_id:x}"], 1)
        yield sid
        for name, doc, value in (
                ("etcd_server_health_success", "The total number of successful health checks",
                 self.health_success),
                ("etcd_server_health_failures", "The total number of failed health checks",
                 self.health_failures)):
            m = Metric(name, doc, "counter")
            m.add_sample(name, {}, value)
            yield m
        yield gauge("etcd_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.", kvs.db_size())
        yield gauge("etcd_mvcc_db_total_size_in_use_in_bytes",
                    "Total size of the underlying database logically in use in bytes.",
                    kvs.db_size_in_use())
        # etcd 3.4's Grafana dashboard draws "DB Size" from the debugging name.
        yield gauge("etcd_debugging_mvcc_db_total_size_in_bytes",
                    "Total size of the underlying database physically allocated in bytes.", kvs.db_size())
        yield gauge("etcd_debugging_mvcc_keys_total", "Total number of keys.", counts["keys"])
        for op in ("put", "delete", "range", "txn"):
            if f"{op}_total" in counts:   # once the store counts them
                yield counter(f"etcd_mvcc_{op}_total", f"Total number of {op}s seen by this member.",
                              counts[f"{op}_total"])
        traffic = getattr(kvs, "peer_traffic", None)
        traffic = traffic() if traffic is not None else {}
        if traffic:   # as in etcd, a labelled family without peers is not written at all
            sent = CounterMetricFamily("etcd_network_peer_sent_bytes_total",
                                       "The total number of bytes sent to peers.", labels=["To"])
            received = CounterMetricFamily("etcd_network_peer_received_bytes_total",
                                           "The total number of bytes received from peers.", labels=["From"])
            for peer, (out, into) in sorted(traffic.items()):
                sent.add_metric([f"{peer:x}"], out)
                received.add_metric([f"{peer:x}"], into)
            yield sent
            yield received
        yield from self._active_peers(kvs, traffic)
        failures = getattr(kvs, "peer_send_failures", None)
        failures = {p: n for p, n in (failures() if failures is not None else {}).items() if n > 0}
        if failures:   # etcd makes a peer's child on its first failure
            family = CounterMetricFamily("etcd_network_peer_sent_failures_total",
                                         "The total number of send failures from peers.", labels=["To"])
            for peer, n in sorted(failures.items()):
                family.add_metric([f"{peer:x}"], n)
            yield family


    def _active_peers(self, kvs: KVServer, peers) -> Iterator[Metric]:
        """etcd_network_active_peers{Local,Remote}: etcd increments a peer's
        gauge when its stream comes up and decrements it when it goes down,
        so a peer that was ever active is written, 1 or 0."""
        active = getattr(kvs, "peer_active_since", None)
        if active is None:
            return
        for peer in peers:
            if active(peer) is not None:
                self._ever_active.add(peer)
        if not self._ever_active:
            return
        family = GaugeMetricFamily("etcd_network_active_peers", "The current number of active peer connections.",
                                   labels=["Local", "Remote"])
        for peer in sorted(self._ever_active):
            family.add_metric([f"{kvs.member_id:x}", f"{peer:x}"],
                              1 if peer in peers and active(peer) is not None else 0)
        yield family


def _counts(kvs: KVServer) -> dict[str, int]:
    """KVServer.metric_counts(), with 0 for a count it does not have."""
    counts = dict(kvs.metric_counts())
    for name in ("leader_changes", "proposals_pending", "proposals_failed", "slow_applies",
                 "heartbeat_send_failures", "keys"):
        counts.setdefault(name, 0)
    return counts


class DiskCollector:
    def __init__(self) -> None:
        self.wal_fsync = Histogram("etcd_disk_wal_fsync_duration_seconds",
                                   "The latency distributions of fsync called by WAL.", DISK_BUCKETS)
        self.backend_commit = Histogram("etcd_disk_backend_commit_duration_seconds",
                                        "The latency distributions of commit called by backend.",
                                        DISK_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        yield self.backend_commit.family()
        yield self.wal_fsync.family()

    def attach(self) -> None:
        """Become the WAL's and the backend's observer (where those hooks exist)."""
        from engine.mvcc import backend
        from engine.wal import wal
        if hasattr(wal, "fsync_observer"):
            wal.fsync_observer = self.wal_fsync.observe
        if hasattr(backend, "commit_observer"):
            backend.commit_observer = self.backend_commit.observe

    def detach(self) -> None:
        from engine.mvcc import backend
        from engine.wal import wal
        if getattr(wal, "fsync_observer", None) == self.wal_fsync.observe:
            wal.fsync_observer = None
        if getattr(backend, "commit_observer", None) == self.backend_commit.observe:
            backend.commit_observer = None


class PeerCollector:
    """etcd_network_peer_round_trip_time_seconds{To}: fed by the transport's
    ping/pong round trips (on the loop), per peer id in etcd's hex form."""

    def __init__(self) -> None:
        self.rtt = HistogramVec("etcd_network_peer_round_trip_time_seconds",
                                "Round-Trip-Time histogram between peers", "To", RTT_BUCKETS)
        self._kvs: KVServer | None = None

    def observe(self, peer_id: int, seconds: float) -> None:
        """The transport's callback: never raises (a bad value is dropped)."""
        try:
            if peer_id > 0 and 0 <= seconds < float("inf"):
                self.rtt.observe(f"{peer_id:x}", float(seconds))
        except (TypeError, ValueError):
            pass

    def collect(self) -> Iterator[Metric]:
        yield from self.rtt.families()

    def attach(self, kvs: KVServer) -> None:
        """Become the member's peer RTT observer, where KVServer offers the hook."""
        hook = getattr(kvs, "observe_peer_rtt", None)
        if hook is not None:
            hook(self.observe)
            self._kvs = kvs

    def detach(self) -> None:
        if self._kvs is not None:
            self._kvs.observe_peer_rtt(None)
            self._kvs = None


class _Collected:
    """Metric families collected already, for generate_latest on a worker thread."""

    def __init__(self, families: list[Metric], process: ProcessCollector) -> None:
        self._families, self._process = families, process

    def collect(self) -> Iterator[Metric]:
        yield from self._families
        yield from self._process.collect()   # reads /proc: on the worker too


class Metrics:
    """One member's collectors, and the text a scrape gets."""

    def __init__(self, kvs: KVServer) -> None:
        from .grpc_metrics import GrpcCollector
        self.server = ServerCollector(kvs)
        self.disk = DiskCollector()
        self.grpc = GrpcCollector()
        self.peer = PeerCollector()
        self.process = ProcessCollector(registry=None)
        # Also as a registry, for whoever wants prometheus_client's own tools.
        self.registry = CollectorRegistry(auto_describe=False)
        for c in (self.server, self.disk, self.peer, self.grpc, self.process):
            self.registry.register(c)

    async def render(self) -> bytes:
        """The exposition text. The values are read on the loop (the member's
        state is the loop's; ~1 ms), the formatting (~10 ms for the ~900
        series of a member) runs on a worker thread."""
        families = [m for c in (self.server, self.disk, self.peer, self.grpc) for m in c.collect()]
        return await asyncio.to_thread(render_text, _Collected(families, self.process))


def render_text(collector) -> bytes:
    text = generate_latest(collector)
    for name in LEGACY_COUNTERS:
        text = text.replace(f"# HELP {name}_total ".encode(), f"# HELP {name} ".encode())
        text = text.replace(f"# TYPE {name}_total counter".encode(), f"# TYPE {name} counter".encode())
    return text
