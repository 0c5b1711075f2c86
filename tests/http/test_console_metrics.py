"""raftui/source/metrics.py in process: the Prometheus text parser survives
anything (hypothesis), its quantiles are Prometheus' histogram_quantile,
deltas handle restarts, the fetch keeps its deadline and size limit against
hostile HTTP servers, and the Rates panel draws server strings as plain
text."""
from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from raftui.source import metrics
from engine.http.metrics import LEGACY_COUNTERS as LEGACY
from raftui.source.metrics import Exposition, MemberLatency, Quantile, parse, quantile

ETCD_LIKE = b"""# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 2
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 6
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 10
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 10
etcd_disk_wal_fsync_duration_seconds_sum 0.012
etcd_disk_wal_fsync_duration_seconds_count 10
# TYPE etcd_network_peer_round_trip_time_seconds histogram
etcd_network_peer_round_trip_time_seconds_bucket{To="ab",le="0.0001"} 0
etcd_network_peer_round_trip_time_seconds_bucket{To="ab",le="0.0002"} 4
etcd_network_peer_round_trip_time_seconds_bucket{To="ab",le="+Inf"} 4
etcd_network_peer_round_trip_time_seconds_bucket{To="cd",le="0.0001"} 1
etcd_network_peer_round_trip_time_seconds_bucket{To="cd",le="0.0002"} 1
etcd_network_peer_round_trip_time_seconds_bucket{To="cd",le="+Inf"} 1
weird_name{a="x\\"y\\\\z\\n",b="}{,"} 3 1700000000000
"""


def test_parse_reads_what_etcd_writes() -> None:
    e = parse(ETCD_LIKE)
    assert e.bad_lines == 0 and not e.truncated
    assert e.types["etcd_disk_wal_fsync_duration_seconds"] == "histogram"
    assert e.samples["weird_name"] == [((("a", 'x"y\\z\n'), ("b", "}{,")), 3.0)]
    h = e.histogram(metrics.PEER_RTT)
    assert h[(("To", "ab"),)][-1] == (math.inf, 4.0)
    only = parse(ETCD_LIKE, metrics.HISTOGRAMS)
    assert "weird_name" not in only.samples and metrics.WAL_FSYNC + "_bucket" in only.samples


def test_parse_agrees_with_prometheus_client_on_our_exposition() -> None:
    from engine.http.metrics import Metrics
    from tests.http.test_http_metrics_unit import _FakeKVS
    m = Metrics(_FakeKVS())
    m.disk.wal_fsync.observe(0.003)
    m.peer.observe(0xab, 0.0004)
    text = asyncio.run(m.render())
    ours = parse(text)
    assert ours.bad_lines == 0
    theirs = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    # prometheus_client's parser names a counter's sample NAME_total even
    # where the text has etcd's bare legacy name; ours keeps the text's.
    mine = {(name + "_total" if name in LEGACY else name, tuple(sorted(labels))): v
            for name, rows in ours.samples.items() for labels, v in rows}
    assert mine == theirs and len(mine) > 800


def test_quantile_is_prometheus_histogram_quantile() -> None:
    inf = math.inf
    # Within a bucket: linear (histogram_quantile(0.5, ...) of 2, 6, 10 over 1/2/4 ms).
    assert quantile(0.5, [(0.001, 2), (0.002, 6), (0.004, 10), (inf, 10)]) == pytest.approx(0.00175)
    assert quantile(0.99, [(0.001, 2), (0.002, 6), (0.004, 10), (inf, 10)]) == pytest.approx(0.00395)
    # In the +Inf bucket: the highest finite bound.
    assert quantile(0.99, [(0.001, 0), (0.002, 0), (inf, 5)]) == 0.002
    # The first bucket starts at 0.
    assert quantile(0.5, [(0.0001, 2), (inf, 2)]) == pytest.approx(0.00005)
    # No observations, no +Inf bucket, fewer than two buckets, a bad q: no answer.
    assert quantile(0.99, [(0.001, 0), (inf, 0)]) is None
    assert quantile(0.99, [(0.001, 3), (0.002, 3)]) is None
    assert quantile(0.99, [(inf, 3)]) is None
    assert quantile(1.5, [(0.001, 3), (inf, 3)]) is None
    # Counts that go down are made monotonic, as Prometheus does.
    assert quantile(0.5, [(0.001, 4), (0.002, 2), (inf, 4)]) == pytest.approx(0.0005)


def test_deltas_and_restarts() -> None:
    before = {(): [(0.001, 5.0), (math.inf, 5.0)]}
    now = {(): [(0.001, 5.0), (math.inf, 9.0)]}
    assert metrics.deltas(now, before) == [(0.001, 0.0), (math.inf, 4.0)]
    restarted = {(): [(0.001, 1.0), (math.inf, 2.0)]}
    assert metrics.deltas(restarted, before) == [(0.001, 1.0), (math.inf, 2.0)]


def _exp(counts: dict[str, list[tuple[float, float]]]) -> Exposition:
    e = Exposition()
    for family, buckets in counts.items():
        e.samples[family + "_bucket"] = [((("le", "+Inf" if b == math.inf else repr(b)),), c) for b, c in buckets]
    return e


def test_latency_holds_the_last_value_when_nothing_was_observed() -> None:
    a = _exp({metrics.WAL_FSYNC: [(0.001, 0), (0.002, 0), (math.inf, 0)]})
    b = _exp({metrics.WAL_FSYNC: [(0.001, 0), (0.002, 10), (math.inf, 10)]})
    first = metrics.latency_between("u", a, None, None)
    assert first.wal_fsync == Quantile(None) and first.peer_rtt is None and first.backend_commit is None
    second = metrics.latency_between("u", b, a, first)
    assert second.wal_fsync.observed == 10 and second.wal_fsync.seconds == pytest.approx(0.00199)
    third = metrics.latency_between("u", b, b, second)
    assert third.wal_fsync == Quantile(second.wal_fsync.seconds, 0, held=True)
    assert metrics.latency_between("u", Exposition(), None, None).note


# -- hostile input ------------------------------------------------------------------------

_line = st.one_of(
    st.text(max_size=80),
    st.sampled_from([l.decode() for l in ETCD_LIKE.splitlines()]),
    st.builds(lambda n, l, v: f"{n}{{{l}}} {v}",
              st.sampled_from([metrics.WAL_FSYNC + "_bucket", metrics.PEER_RTT + "_bucket", "x"]),
              st.text(alphabet='le="+Inf0.1,\\{}To ab', max_size=30),
              st.one_of(st.floats(allow_nan=True).map(repr), st.text(max_size=8),
                        st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "-3"]))),
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2000), st.lists(_line, max_size=40).map(lambda ls: "\n".join(ls).encode())))
def test_parse_never_raises(data: bytes) -> None:
    e = parse(data)
    assert e.bad_lines >= 0
    for family in metrics.HISTOGRAMS:
        for buckets in e.histogram(family).values():
            assert all(not math.isnan(b) and not math.isnan(c) for b, c in buckets)
    # and what the poller does with two such scrapes never raises either
    other = parse(data[::-1])
    r = metrics.latency_between("u", e, other, None)
    for q in (r.wal_fsync, r.backend_commit, r.peer_rtt):
        assert q is None or q.seconds is None or not math.isnan(q.seconds)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.floats(), st.just(math.inf)), st.floats()), max_size=20),
       st.floats(min_value=0, max_value=1))
def test_quantile_never_raises(buckets, q) -> None:
    v = quantile(q, buckets)
    assert v is None or not math.isnan(v)


def test_parse_bounds_what_it_keeps(monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MAX_SAMPLES", 100)
    e = parse(b"x 1\n" * 1000)
    assert e.truncated and len(e.samples["x"]) == 100
    assert parse(b"x" * (metrics.MAX_LINE + 1) + b" 1\n").bad_lines == 1


# -- hostile servers ------------------------------------------------------------------------

class _Server:
    """One answer per connection, from `respond(request bytes) -> bytes`, or a
    server that never answers."""

    def __init__(self, respond=None, *, silent: bool = False, trickle: bool = False) -> None:
        self.respond, self.silent, self.trickle = respond, silent, trickle
        self.held: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        for w in self.held:
            w.close()
        self.server.close()

    async def _handle(self, reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if self.silent:
            self.held.append(writer)
            return
        data = self.respond()
        if self.trickle:
            self.held.append(writer)
            for i in range(len(data)):
                writer.write(data[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0.05)   # a slow server, byte by byte (what is tested)
            return
        writer.write(data)
        await writer.drain()
        writer.close()


def _poll_one(respond=None, deadline: float = 0.5, **kw) -> tuple[MemberLatency, float]:
    async def go():
        async with _Server(respond, **kw) as url:
            poller = metrics.MetricsPoller({"ep": url})
            t0 = time.monotonic()
            r = await poller.poll(["ep"], deadline=deadline)
            return r["ep"], time.monotonic() - t0
    return asyncio.run(go())


def test_fetch_survives_hostile_servers() -> None:
    ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + ETCD_LIKE
    r, _ = _poll_one(lambda: ok)
    assert r.note == "" and r.wal_fsync == Quantile(None)
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(ETCD_LIKE) + ETCD_LIKE + b"\r\n0\r\n\r\n")
    assert _poll_one(lambda: chunked)[0].note == ""
    cases = {
        b"HTTP/1.0 500 [red]boom\x1b[2J\r\n\r\n": "metrics: HTTP 500 [red]boom\x1b[2J",
        b"garbage without a head": "metrics: not an HTTP answer",
        b"\x00\x01\x02\r\n\r\nbody": "metrics: not an HTTP answer",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n\x1f\x8b": "metrics: compressed answer",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n": "metrics: broken chunked answer",
        b"HTTP/1.1 200 OK\r\n\r\n<html>not metrics</html>": "metrics: none of etcd's latency histograms",
    }
    for answer, note in cases.items():
        r, _ = _poll_one(lambda: answer)
        assert r.note == note and r.wal_fsync is None, answer
    # Silent and trickling servers: the deadline holds.
    for kw in ({"silent": True}, {"trickle": True}):
        r, took = _poll_one(lambda: ok, deadline=0.3, **kw)
        assert r.note == "metrics: no answer in 0.3 s" and took < 2.0


def test_fetch_refuses_oversize_answers(monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MAX_BODY", 1000)
    big = b"HTTP/1.0 200 OK\r\n\r\n" + b"x 1\n" * 100_000
    r, _ = _poll_one(lambda: big, deadline=5.0)
    assert r.note.startswith("metrics: answer over")


def test_nothing_listening_and_bad_urls() -> None:
    async def go():
        from tests.support.ports import free_port
        poller = metrics.MetricsPoller({"a": f"http://127.0.0.1:{free_port()}", "b": "ftp://x/y",
                                        "c": "http://[::1"}, derive=False)
        return await poller.poll(["a", "b", "c", "d"], deadline=1.0)
    r = asyncio.run(go())
    assert r["a"].note.startswith("metrics: cannot connect to 127.0.0.1:")
    assert r["b"].note.startswith("not an http(s) URL")
    assert r["c"].note
    assert r["d"] == MemberLatency(note=metrics.NO_URL)


def test_parse_metrics_urls() -> None:
    assert metrics.parse_metrics_urls("http://a:1, ,https://b:2/m", ["x", "y", "z"]) == {
        "x": "http://a:1", "z": "https://b:2/m"}
    with pytest.raises(ValueError, match="2 URL"):
        metrics.parse_metrics_urls("http://a:1,http://b:2", ["x"])
    with pytest.raises(ValueError, match="not an http"):
        metrics.parse_metrics_urls("a:1", ["x"])


# -- drawing ----------------------------------------------------------------------------------

def test_latency_line_is_plain_text() -> None:
    from raftui.widgets.rates_panel import latency_line
    hostile = MemberLatency(note="metrics: HTTP 500 [red]boom[/]\x1b[2J")
    line = latency_line("[bold]n1\x07", hostile)
    assert "[red]boom[/]" in line.plain and "\x1b" not in line.plain and "\x07" not in line.plain
    assert line.spans == [] or all(s.style in ("", "dim") for s in line.spans)
    ok = MemberLatency("u", Quantile(0.0012, 5), Quantile(0.0004, 3), Quantile(0.2, 0, held=True))
    assert latency_line("n1", ok, 2).plain == "n1 fsync 1.2ms commit 400µs rtt 200ms"
    assert latency_line("n2", MemberLatency("u", Quantile(None), None, None), 2).plain == \
        "n2 fsync - commit - rtt -"
    from raftui.widgets.rates_panel import duration
    shown = [duration(Quantile(v)).plain for v in (0.00085, 0.0039, 0.0314, 0.999, 1.2, 12.0, 0.0)]
    assert shown == ["850µs", "3.9ms", "31ms", "999ms", "1.2s", "12s", "0µs"]
    edges = (0.0009996, 0.009996, 0.9996, 9.96, 1e9)
    assert [duration(Quantile(v)).plain for v in edges] == ["1.0ms", "10ms", "1.0s", "10s", "99999s"]
    assert all(len(duration(Quantile(v)).plain) <= 6 for v in (*edges, 0.00099949, 0.0099499, 0.99949))


def test_rates_panel_shows_latency_rows() -> None:
    """The panel mounts a latency row per member under its rate rows (none
    before the first scrape) and draws them as plain text."""
    import types

    from textual.app import App

    from raftui.widgets.rates_panel import RatesPanel

    def sample(latency):
        return types.SimpleNamespace(at=1.0, writes_per_s=2.0, commit_per_s=(("n1", 1.0), ("[b]n2", 0.5)),
                                     apply_lag=(("n1", 0), ("[b]n2", 1)), from_inspect=True, latency=latency)

    class One(App):
        def compose(self):
            yield RatesPanel(id="rates")

    async def body():
        app = One()
        async with app.run_test(size=(80, 24)) as pilot:
            panel = app.query_one(RatesPanel)
            panel.rates = (sample(()),)
            await pilot.pause()
            assert not panel.query(".latency-row")
            lat = (("n1", MemberLatency("u", Quantile(0.0021, 4), Quantile(0.0009, 4), Quantile(0.0003, 1))),
                   ("[b]n2", MemberLatency(note="metrics: HTTP 500 [red]x[/]")))
            panel.rates = (sample(()), sample(lat))
            await pilot.pause()
            rows = [str(r.render()) for r in panel.query(".latency-row")]
            assert rows == ["p99 since the last /metrics scrape",
                            "n1    fsync 2.1ms commit 900µs rtt 300µs",
                            "[b]n2 metrics: HTTP 500 [red]x[/]"]
            assert all(r.region.height == 1 for r in panel.query(".latency-row"))
            children = list(panel.children)
            assert children.index(panel.query_one("#rate-l0")) > children.index(panel.query_one("#rate-m1"))
    asyncio.run(body())


def test_rates_sample_files_latency_by_member() -> None:
    import dataclasses

    from raftui.source import rates
    from raftui.source.model import ClusterState, Member, RateSample
    fields = {f.name for f in dataclasses.fields(Member)}
    if "latency" not in {f.name for f in dataclasses.fields(RateSample)}:
        pytest.skip("RateSample has no latency field yet (CONSOLE-A)")
    m1 = Member(**{k: v for k, v in dict(id=1, name="n1", endpoint="e1", health="up").items() if k in fields})
    old = ClusterState(members=(m1,), polled_at=1.0, revision=1)
    new = dataclasses.replace(old, polled_at=2.0, revision=3)
    lat = MemberLatency("u", Quantile(0.001, 1))
    s = rates.sample(old, new, latency={"e1": lat, "other": MemberLatency()})
    assert s.latency == ((m1.label, lat),)
