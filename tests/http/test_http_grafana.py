"""etcd 3.4.23's Grafana dashboard and the console's Rates panel against a
live 3-member raftnode cluster (real processes, each with its own
--listen-metrics-urls), and the console's scraper against real etcd:

  * every target of every panel evaluates to data over two scrapes with
    traffic between them (tests/http/grafana_check.py, tests/http/promql.py),
    and every series raftnode exports that etcd 3.4.23 also writes has
    etcd's type and label names (tests/http/data/etcd-3.4.23-series.tsv);
  * docs/grafana.md names every panel;
  * raftui's MetricsPoller turns two scrapes into WAL fsync and backend
    commit p99s (and the peer round trip, once the transport measures it),
    for raftnode by its metrics URLs and for etcd by its client URL.
"""
from __future__ import annotations

import asyncio
import math
import pathlib
import queue
import time
import uuid

import grpc
import pytest

from engine.proto import rpc_pb2, rpc_pb2_grpc
from raftui.source import metrics
from tests.http import grafana_check, promql
from tests.support import ports
from tests.support.raftnode import RaftnodeCluster, RaftnodeMember, _member_args, _member_id

ROOT = pathlib.Path(__file__).resolve().parents[2]


def start_with_metrics(root: pathlib.Path, size: int = 3, *,
                       fault_injection: bool = False) -> tuple[RaftnodeCluster, list[str]]:
    """start_raftnode_cluster, with a metrics URL of its own for each member."""
    allocated = ports.free_ports(3 * size)
    token = f"raftui-grafana-{uuid.uuid4().hex[:12]}"
    members = [RaftnodeMember(name=f"n{i + 1}", client_port=allocated[3 * i], peer_port=allocated[3 * i + 1],
                              data_dir=root / f"n{i + 1}.data", log_path=root / f"n{i + 1}.log")
               for i in range(size)]
    urls = [f"http://127.0.0.1:{allocated[3 * i + 2]}" for i in range(size)]
    cluster = RaftnodeCluster(members=members, data_dir=root, token=token, fault_injection=fault_injection)
    for m, url in zip(members, urls):
        m.member_id = _member_id(m.peer_url, token)
        m.args = _member_args(m, cluster.initial_cluster, "new", token, fault_injection,
                              [f"--listen-metrics-urls={url}"])
    cluster.track()
    try:
        for m in members:
            cluster._spawn(m)
        cluster.wait_listening(30.0)
        cluster.wait_leader(30.0)
    except BaseException:
        cluster.stop()
        raise
    return cluster, urls


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    cluster, urls = start_with_metrics(tmp_path_factory.mktemp("grafana"))
    try:
        yield cluster, urls
    finally:
        cluster.stop()


def _scrape_all(urls: list[str]) -> tuple[promql.Scrape, list[str]]:
    at = time.time()
    texts = [grafana_check.scrape(u) for u in urls]
    got = [s for u, text in zip(urls, texts) for s in grafana_check.series(text, u.split("//")[1])]
    return promql.Scrape(at, got), texts


class _Traffic:
    """Puts, a watch stream and a lease keep-alive stream held open, through gRPC."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self._watch_q: queue.Queue = queue.Queue()
        self._lease_q: queue.Queue = queue.Queue()
        self.watch = rpc_pb2_grpc.WatchStub(self.channel).Watch(iter(self._watch_q.get, None))
        self._watch_q.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"g")))
        next(self.watch)   # created
        lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.lease_id = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
        self.keepalive = lease.LeaseKeepAlive(iter(self._lease_q.get, None))
        self._lease_q.put(rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id))
        next(self.keepalive)

    def puts(self, n: int) -> None:
        for i in range(n):
            self.kv.Put(rpc_pb2.PutRequest(key=b"g%d" % i, value=b"v" * 100), timeout=10)

    def close(self) -> None:
        self._watch_q.put(None)
        self._lease_q.put(None)
        self.channel.close()


def test_every_dashboard_panel_has_data(live) -> None:
    cluster, urls = live
    leader = cluster.wait_leader(15.0)
    traffic = _Traffic(cluster.members[leader].endpoint)
    try:
        first, texts = _scrape_all(urls)
        traffic.puts(20)
        second, more = _scrape_all(urls)
    finally:
        traffic.close()
    assert second.at > first.at
    exported = grafana_check.merged_families(texts + more)
    reference = grafana_check.load_reference()
    rows = grafana_check.check([first, second], exported, reference, grafana_check.load_dashboard())
    assert len(rows) == 18
    assert [r for r in rows if not r.data or r.missing or r.mismatched or r.unknown] == [], \
        grafana_check.markdown(rows)
    # The values themselves, where they say something definite.
    active = promql.evaluate('sum(grpc_server_started_total{grpc_service="etcdserverpb.Watch",'
                             'grpc_type="bidi_stream"}) - sum(grpc_server_handled_total{grpc_service='
                             '"etcdserverpb.Watch",grpc_type="bidi_stream"})', [first, second])
    assert active == [({}, 1.0)]
    assert promql.evaluate('sum(etcd_server_has_leader{job="raftnode"})', [second]) == [({}, 3.0)]
    fsync = promql.evaluate('histogram_quantile(0.99, sum(rate(etcd_disk_wal_fsync_duration_seconds_bucket'
                            '{job="raftnode"}[5m])) by (instance, le))', [first, second])
    assert len(fsync) == 3 and all(0 < v < 8.192 for _, v in fsync)
    # The dashboard's variable: label_values(etcd_server_has_leader, job).
    assert [q for _, q in grafana_check.template_queries()] == ["label_values(etcd_server_has_leader, job)"]


def test_exported_series_have_etcds_types_and_labels(live) -> None:
    """Not only the dashboard's: every sample name raftnode writes that etcd
    3.4.23 writes too, with the same type and label names; and raftnode
    writes no name etcd does not."""
    _, urls = live
    rtt = "etcd_network_peer_round_trip_time_seconds_bucket"
    deadline = time.monotonic() + 15
    while True:   # each member's first probe answers within a few 0.2 s rounds of start
        exported = grafana_check.merged_families([grafana_check.scrape(u) for u in urls])
        if rtt in exported or time.monotonic() > deadline:
            break
    assert exported[rtt] == ("histogram", frozenset({"To"}))
    reference = grafana_check.load_reference()
    assert {n: (exported[n], reference[n]) for n in exported
            if n in reference and exported[n] != reference[n]} == {}
    assert sorted(n for n in exported if n not in reference) == []


def test_docs_name_every_panel() -> None:
    doc = (ROOT / "docs" / "grafana.md").read_text()
    for t in grafana_check.load_dashboard():
        assert f"| {t.panel} |" in doc, t.panel


def test_console_poller_on_raftnode(live) -> None:
    cluster, urls = live
    endpoints = [m.endpoint for m in cluster.members]
    leader = cluster.wait_leader(15.0)

    async def scenario():
        poller = metrics.MetricsPoller(dict(zip(endpoints, urls)))
        first = await poller.poll(endpoints, deadline=5.0)
        channel = grpc.aio.insecure_channel(endpoints[leader])
        kv = rpc_pb2_grpc.KVStub(channel)
        for i in range(10):
            await kv.Put(rpc_pb2.PutRequest(key=b"p%d" % i, value=b"x"), timeout=10)
        await channel.close()
        second = await poller.poll(endpoints, deadline=5.0)
        # raftnode's gRPC port is no metrics URL: said so, within the deadline, and not retried at once
        guess = metrics.MetricsPoller()
        t0 = time.monotonic()
        derived = await guess.poll(endpoints[:1], deadline=2.0)
        took = time.monotonic() - t0
        again = await guess.poll(endpoints[:1], deadline=2.0)
        return first, second, derived, took, again

    first, second, derived, took, again = asyncio.run(scenario())
    assert all(r.wal_fsync is not None and r.wal_fsync.seconds is None for r in first.values())
    for ep in endpoints:
        r = second[ep]
        assert r.note == "" and r.url
        for q in (r.wal_fsync, r.backend_commit):
            assert q is not None and q.observed >= 1 and 0 < q.seconds <= 8.192 and not q.held
        if r.peer_rtt is not None:   # once the transport measures round trips (LEAD's probe)
            assert r.peer_rtt.seconds is None or 0 <= r.peer_rtt.seconds <= 3.2768
    assert derived[endpoints[0]] == metrics.MemberLatency(note=metrics.NO_URL)
    assert took < 3.0
    assert again[endpoints[0]].note == metrics.NO_URL


def test_console_poller_on_etcd_client_url(etcd) -> None:
    """etcd 3.4 serves /metrics on its plain-http client URL: found without
    --metrics-urls; a 1-member etcd has no peers, so no round trip."""
    ep = etcd.endpoints[0]

    async def scenario():
        poller = metrics.MetricsPoller()
        await poller.poll([ep], deadline=5.0)
        channel = grpc.aio.insecure_channel(ep)
        kv = rpc_pb2_grpc.KVStub(channel)
        for i in range(5):
            await kv.Put(rpc_pb2.PutRequest(key=b"e%d" % i, value=b"x"), timeout=10)
        await channel.close()
        r = await poller.poll([ep], deadline=5.0)
        fsync = r[ep].wal_fsync
        # etcd commits its backend every 100 ms, not per put: scrape until a
        # window saw a commit (a deadline, not a sleep)
        deadline = time.monotonic() + 10
        while r[ep].backend_commit is not None and not r[ep].backend_commit.observed:
            assert time.monotonic() < deadline
            r = await poller.poll([ep], deadline=5.0)
        return r[ep], fsync

    r, fsync = asyncio.run(scenario())
    assert r.url == f"http://{ep}/metrics" and r.note == ""
    assert fsync.observed >= 1 and math.isfinite(fsync.seconds)
    assert r.backend_commit.observed >= 1 and math.isfinite(r.backend_commit.seconds)
    assert r.peer_rtt is None


def test_cluster_source_carries_latency_to_the_rates(live, monkeypatch) -> None:
    """The console's data layer end to end: ClusterSource with the members'
    metrics URLs files each member's p99s in the Rates sample."""
    from raftui.source import ClusterSource, cluster_source
    monkeypatch.setattr(cluster_source, "METRICS_EVERY", 0.0)   # a scrape every round, not every 2 s
    cluster, urls = live
    endpoints = [m.endpoint for m in cluster.members]
    leader = cluster.wait_leader(15.0)

    async def scenario():
        source = ClusterSource(endpoints, metrics_urls=dict(zip(endpoints, urls)))
        try:
            await source.poll()
            channel = grpc.aio.insecure_channel(endpoints[leader])
            kv = rpc_pb2_grpc.KVStub(channel)
            for i in range(10):
                await kv.Put(rpc_pb2.PutRequest(key=b"s%d" % i, value=b"x"), timeout=10)
            await channel.close()
            return await source.poll()
        finally:
            await source.close()

    state = asyncio.run(scenario())
    latency = dict(state.rates[-1].latency)
    assert sorted(latency) == sorted(m.label for m in state.members)
    for lat in latency.values():
        assert lat.note == "" and lat.wal_fsync.observed >= 1 and lat.wal_fsync.seconds > 0


@pytest.mark.soak
def test_the_check_says_the_same_of_real_etcd(etcd_binaries, live, tmp_path) -> None:
    """The tool itself against a 3-member etcd 3.4.23 with the same traffic:
    every panel has data there too (the evaluator is not just agreeing with
    raftnode), and etcd's peer RTT family, once written (5 s after start),
    has the same type, labels and bucket bounds as raftnode's."""
    from tests.support import etcd as support_etcd
    real = support_etcd.start_etcd_cluster(tmp_path / "etcd3", size=3)
    try:
        urls = real.client_urls
        traffic = _Traffic(real.endpoints[0])
        try:
            first, texts = _scrape_all(urls)
            traffic.puts(20)
            deadline = time.monotonic() + 20
            while True:   # etcd commits its backend every 100 ms and writes RTT after 5 s
                second, more = _scrape_all(urls)
                rows = grafana_check.check([first, second], grafana_check.merged_families(texts + more),
                                           grafana_check.load_reference(), grafana_check.load_dashboard())
                if all(r.data for r in rows) and "etcd_network_peer_round_trip_time_seconds_bucket" in \
                        grafana_check.families(more[0]) or time.monotonic() > deadline:
                    break
        finally:
            traffic.close()
        assert [r for r in rows if not r.data] == [], grafana_check.markdown(rows)

        def bounds(text: str) -> list[str]:
            import re
            first_to = re.search(r'^etcd_network_peer_round_trip_time_seconds_bucket\{To="([0-9a-f]+)"', text, re.M)
            return re.findall(rf'^etcd_network_peer_round_trip_time_seconds_bucket\{{To="{first_to.group(1)}",'
                              r'le="([^"]+)"\}', text, re.M)
        ours = grafana_check.scrape(live[1][0])
        assert bounds(ours) == bounds(more[0]) and len(bounds(ours)) == 17
        assert grafana_check.families(ours)["etcd_network_peer_round_trip_time_seconds_bucket"] == \
            grafana_check.families(more[0])["etcd_network_peer_round_trip_time_seconds_bucket"]
    finally:
        real.stop()


@pytest.mark.soak
def test_a_delayed_member_shows_in_the_round_trip(tmp_path) -> None:
    """A 100 ms delay on every link of n1 (the Fault service) shows in n1's
    peer round-trip p99 as the console computes it, and not in the RTT
    between the two other members."""
    from engine.proto import fault_pb2, fault_pb2_grpc
    cluster, urls = start_with_metrics(tmp_path, fault_injection=True)
    try:
        endpoints = [m.endpoint for m in cluster.members]
        with grpc.insecure_channel(endpoints[0]) as ch:
            fault_pb2_grpc.FaultStub(ch).Delay(fault_pb2.DelayRequest(all=True, ms=100), timeout=10)

        async def watch():
            poller = metrics.MetricsPoller(dict(zip(endpoints, urls)))
            seen: dict[str, list[float]] = {ep: [] for ep in endpoints}
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for ep, r in (await poller.poll(endpoints, deadline=5.0)).items():
                    if r.peer_rtt is not None and r.peer_rtt.observed and r.peer_rtt.seconds is not None:
                        seen[ep].append(r.peer_rtt.seconds)
                if len(seen[endpoints[0]]) >= 2 and all(seen.values()):
                    break
                await asyncio.sleep(0.5)   # the scrape interval (the console's is 2 s), not synchronisation
            return seen

        seen = asyncio.run(watch())
        assert len(seen[endpoints[0]]) >= 2, seen
        assert min(seen[endpoints[0]]) >= 0.1, seen        # out and back through n1's delayed links
        assert all(seen[ep] for ep in endpoints[1:]), seen
        # n2's own histogram, peer by peer: its probes to n1 since the delay
        # took over 100 ms (its first ones, before, did not); most of those to
        # n3 far less (one of 2 cores under load may stall one).
        n1, n3 = (f"{cluster.members[i].member_id:x}" for i in (0, 2))
        hist = metrics.parse(grafana_check.scrape(urls[1]), [metrics.PEER_RTT]).histogram(metrics.PEER_RTT)
        to_n1, to_n3 = dict(hist[(("To", n1),)]), dict(hist[(("To", n3),)])
        assert to_n1[math.inf] - to_n1[0.1024] >= 1, to_n1
        assert to_n3[0.0512] >= 0.5 * to_n3[math.inf] > 0, to_n3
    finally:
        cluster.stop()
