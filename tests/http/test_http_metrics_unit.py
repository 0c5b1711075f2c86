"""engine/http/metrics with a stand-in KVServer: the families that appear once
the member counts mvcc ops and peer bytes (KVServer.metric_counts with
put/delete/range/txn totals, KVServer.peer_traffic), with etcd 3.4.23's
names, types and labels; and the histograms' bucket arithmetic."""
from __future__ import annotations

import asyncio
import re
import types

from engine.http.metrics import DISK_BUCKETS, Histogram, Metrics


class _FakeKVS:
    leader_id = member_id = 0x10
    is_learner = False
    committed_index = applied_index = 7
    config = types.SimpleNamespace(quota_backend_bytes=1 << 30)

    def metric_counts(self) -> dict[str, int]:
        return {"leader_changes": 2, "keys": 3, "put_total": 5, "delete_total": 1, "range_total": 9,
                "txn_total": 4}

    def peer_traffic(self) -> dict[int, tuple[int, int]]:
        return {0xab: (100, 200), 0xcd: (0, 5)}

    def db_size(self) -> int:
        return 4096

    def db_size_in_use(self) -> int:
        return 2048


def test_mvcc_and_peer_families_once_counted() -> None:
    m = Metrics(_FakeKVS())
    text = asyncio.run(m.render()).decode()
    for op, n in (("put", 5), ("delete", 1), ("range", 9), ("txn", 4)):
        assert f"# TYPE etcd_mvcc_{op}_total counter" in text
        assert re.search(rf"^etcd_mvcc_{op}_total {n}(\.0)?$", text, re.M)
    assert "# TYPE etcd_network_peer_sent_bytes_total counter" in text
    assert re.search(r'^etcd_network_peer_sent_bytes_total\{To="ab"\} 100(\.0)?$', text, re.M)
    assert re.search(r'^etcd_network_peer_received_bytes_total\{From="cd"\} 5(\.0)?$', text, re.M)
    assert re.search(r"^etcd_server_leader_changes_seen_total 2(\.0)?$", text, re.M)
    assert re.search(r"^etcd_debugging_mvcc_keys_total 3(\.0)?$", text, re.M)
    assert re.search(r"^etcd_server_is_leader 1(\.0)?$", text, re.M)
    # etcd's legacy counters keep their bare names on the HELP/TYPE lines too.
    assert "# TYPE etcd_server_health_success counter" in text and "health_success_total" not in text


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = Histogram("x_seconds", "doc", DISK_BUCKETS)
    for v in (0.0005, 0.001, 0.0011, 0.5, 100.0):
        h.observe(v)
    fam = h.family()
    counts = {s.labels["le"]: s.value for s in fam.samples if s.name.endswith("_bucket")}
    assert counts["0.001"] == 2 and counts["0.002"] == 3 and counts["0.512"] == 4
    assert counts["8.192"] == 4 and counts["+Inf"] == 5
    assert [s.value for s in fam.samples if s.name.endswith("_count")] == [5]


def test_no_peer_families_without_peers() -> None:
    class Alone(_FakeKVS):
        def peer_traffic(self) -> dict[int, tuple[int, int]]:
            return {}
    text = asyncio.run(Metrics(Alone()).render()).decode()
    assert "etcd_network_peer_" not in text   # etcd writes no empty labelled family either


class _WithRttHook(_FakeKVS):
    """KVServer.observe_peer_rtt as LEAD adds it: the transport calls fn(peer id, seconds) per pong."""
    rtt_fn = None

    def observe_peer_rtt(self, fn) -> None:
        self.rtt_fn = fn


def test_peer_round_trip_histogram_as_etcd_writes_it() -> None:
    """etcd 3.4.23's family, as scraped from a 2-member etcd: HELP without a
    final period, label To = the peer's id in hex, 16 buckets 0.0001 .. 3.2768."""
    kvs = _WithRttHook()
    m = Metrics(kvs)
    text = asyncio.run(m.render()).decode()
    assert "etcd_network_peer_round_trip_time_seconds" not in text   # no children yet: nothing written
    m.peer.attach(kvs)
    kvs.rtt_fn(0x1fc57146339b21c5, 0.00015)
    kvs.rtt_fn(0x1fc57146339b21c5, 0.003)
    kvs.rtt_fn(0xab, 9.0)
    kvs.rtt_fn(0xab, float("nan"))      # garbage from a caller is dropped, never raised
    kvs.rtt_fn(0, 0.1)
    text = asyncio.run(m.render()).decode()
    assert "# HELP etcd_network_peer_round_trip_time_seconds Round-Trip-Time histogram between peers\n" in text
    assert "# TYPE etcd_network_peer_round_trip_time_seconds histogram" in text
    les = re.findall(r'^etcd_network_peer_round_trip_time_seconds_bucket\{To="1fc57146339b21c5",le="([^"]+)"\} ',
                     text, re.M)
    assert les == ["0.0001", "0.0002", "0.0004", "0.0008", "0.0016", "0.0032", "0.0064", "0.0128", "0.0256",
                   "0.0512", "0.1024", "0.2048", "0.4096", "0.8192", "1.6384", "3.2768", "+Inf"]
    assert re.search(r'_bucket\{To="1fc57146339b21c5",le="0.0002"\} 1(\.0)?$', text, re.M)
    assert re.search(r'_bucket\{To="1fc57146339b21c5",le="0.0032"\} 2(\.0)?$', text, re.M)
    assert re.search(r'_bucket\{To="ab",le="3.2768"\} 0(\.0)?$', text, re.M)
    assert re.search(r'_count\{To="ab"\} 1(\.0)?$', text, re.M)
    assert "_created" not in text
    m.peer.detach()
    assert kvs.rtt_fn is None


def test_disk_bucket_bounds_unchanged() -> None:
    text = asyncio.run(Metrics(_FakeKVS()).render()).decode()
    les = re.findall(r'^etcd_disk_wal_fsync_duration_seconds_bucket\{le="([^"]+)"\}', text, re.M)
    assert les == ["0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
                   "1.024", "2.048", "4.096", "8.192", "+Inf"]


def test_peer_send_failures_only_for_peers_that_failed() -> None:
    """etcd_network_peer_sent_failures_total{To}: etcd's counter (its alert
    etcdMembersDown reads it), a child per peer from its first failure."""
    class Failing(_FakeKVS):
        def peer_send_failures(self) -> dict[int, int]:
            return {0xab: 0, 0xcd: 7}
    text = asyncio.run(Metrics(Failing()).render()).decode()
    assert "# HELP etcd_network_peer_sent_failures_total The total number of send failures from peers.\n" in text
    assert "# TYPE etcd_network_peer_sent_failures_total counter" in text
    assert re.search(r'^etcd_network_peer_sent_failures_total\{To="cd"\} 7(\.0)?$', text, re.M)
    assert 'sent_failures_total{To="ab"}' not in text
    assert "sent_failures" not in asyncio.run(Metrics(_FakeKVS()).render()).decode()


def test_active_peers_as_etcd_counts_them() -> None:
    """etcd_network_active_peers{Local,Remote}: 1 while the peer's stream is
    up, 0 once it went down (etcd's gauge is incremented and decremented, its
    child stays), nothing for a peer never seen up."""
    up = {0xab: 1.0, 0xcd: None}

    class Peers(_FakeKVS):
        def peer_active_since(self, peer: int):
            return up.get(peer)
    m = Metrics(Peers())
    text = asyncio.run(m.render()).decode()
    assert "# HELP etcd_network_active_peers The current number of active peer connections.\n" in text
    assert "# TYPE etcd_network_active_peers gauge" in text
    assert re.search(r'^etcd_network_active_peers\{Local="10",Remote="ab"\} 1(\.0)?$', text, re.M)
    assert 'Remote="cd"' not in text
    up[0xab] = None
    text = asyncio.run(m.render()).decode()
    assert re.search(r'^etcd_network_active_peers\{Local="10",Remote="ab"\} 0(\.0)?$', text, re.M)
