"""etcd's member flags: good and bad command lines, and the derived ids."""
from __future__ import annotations

import pytest

from engine.cli.flags import (DEFAULT_QUOTA_BYTES, FlagError, MemberConfig, cluster_id,
                              member_id, parse_args)

CLUSTER3 = ("n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380,"
            "n3=http://127.0.0.1:32380")


def member_args(i: int, *extra: str) -> list[str]:
    return [f"--name=n{i}",
            "--listen-client-urls", f"http://127.0.0.1:{i}2379",
            "--advertise-client-urls", f"http://127.0.0.1:{i}2379",
            "--listen-peer-urls", f"http://127.0.0.1:{i}2380",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{i}2380",
            "--initial-cluster", CLUSTER3,
            "--initial-cluster-token", "tok-1",
            "--initial-cluster-state", "new", *extra]


def test_defaults_are_etcds() -> None:
    c = parse_args([])
    assert c.name == "default" and c.data_dir == "default.etcd"
    assert c.listen_client_urls == ("http://127.0.0.1:2379",)
    assert c.advertise_client_urls == ("http://127.0.0.1:2379",)
    assert c.listen_peer_urls == c.initial_advertise_peer_urls == ("http://127.0.0.1:2380",)
    assert [(m.name, m.peer_urls) for m in c.initial_cluster] == [
        ("default", ("http://127.0.0.1:2380",))]
    assert c.initial_cluster_state == "new" and c.initial_cluster_token == "etcd-cluster"
    assert (c.heartbeat_interval_ms, c.election_timeout_ms, c.election_ticks) == (100, 1000, 10)
    assert c.snapshot_count == 100_000
    assert c.quota_backend_bytes == DEFAULT_QUOTA_BYTES == 2 * 1024**3
    assert c.max_request_bytes == 1_572_864 and c.max_txn_ops == 128
    assert (c.auto_compaction_mode, c.auto_compaction_retention) == ("periodic", "0")
    assert c.auto_compaction_period_seconds == 0
    assert not (c.client_cert_auth or c.peer_client_cert_auth or c.enable_fault_injection)
    assert c.log_level == "info" and c.peers == ()
    assert c.member_id == c.initial_cluster[0].id != 0 and c.cluster_id != 0


def test_three_members_agree_on_every_id() -> None:
    configs = [parse_args(member_args(i)) for i in (1, 2, 3)]
    assert len({c.cluster_id for c in configs}) == 1
    ids = {c.name: c.member_id for c in configs}
    assert len(set(ids.values())) == 3 and 0 not in ids.values()
    for c in configs:
        assert {m.name: m.id for m in c.initial_cluster} == ids
        assert [m.name for m in c.peers] == [n for n in ("n1", "n2", "n3") if n != c.name]
    # Same as computing them directly, and stable across runs (pinned).
    assert ids["n1"] == member_id(["http://127.0.0.1:12380"], "tok-1")
    assert configs[0].cluster_id == cluster_id(ids.values(), "tok-1")


def test_ids_are_the_ones_real_etcd_reports() -> None:
    # etcd's well-known default member (`etcd` with no flags).
    assert member_id(["http://localhost:2380"], "etcd-cluster") == 0x8E9E05C52164694D
    assert cluster_id([0x8E9E05C52164694D]) == 0xCDF818194E3A8C32
    # Measured: etcd 3.4.23 --name n1 --initial-cluster n1=http://127.0.0.1:37978
    # --initial-cluster-token tok-x, then `etcdctl endpoint status -w json`.
    m = parse_args(["--name", "n1", "--initial-cluster-token", "tok-x",
                    "--listen-peer-urls", "http://127.0.0.1:37978",
                    "--initial-advertise-peer-urls", "http://127.0.0.1:37978",
                    "--initial-cluster", "n1=http://127.0.0.1:37978"])
    assert (m.member_id, m.cluster_id) == (1187582753666238656, 8302679588022138883)


def test_ids_depend_on_urls_and_token_not_on_order() -> None:
    a, b = "http://10.0.0.1:2380", "http://10.0.0.1:2381"
    assert member_id([a, b], "t") == member_id([b, a], "t")
    assert member_id([a], "t") != member_id([b], "t")
    assert member_id([a], "t") != member_id([a], "u")
    assert cluster_id([1, 2, 3]) == cluster_id([3, 1, 2])
    assert cluster_id([1, 2, 3]) != cluster_id([1, 2, 4])
    # The token reaches the cluster id through the member ids.
    assert (cluster_id([member_id([a], "t"), member_id([b], "t")])
            != cluster_id([member_id([a], "u"), member_id([b], "u")]))
    for v in (member_id([a], "t"), cluster_id([1])):
        assert 0 < v < 2**64


def test_both_flag_forms_and_go_single_dash() -> None:
    spaced = parse_args(["--name", "x", "--heartbeat-interval", "50",
                         "--election-timeout", "500", "--log-level", "debug",
                         "--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
    equals = parse_args(["--name=x", "--heartbeat-interval=50", "--election-timeout=500",
                         "--log-level=debug"])
    go = parse_args(["-name", "x", "-heartbeat-interval=50", "-election-timeout", "500",
                     "-log-level", "debug"])
    assert spaced == equals == go
    assert spaced.election_ticks == 10 and spaced.data_dir == "x.etcd"


def test_booleans_like_go() -> None:
    assert parse_args(["--enable-fault-injection"]).enable_fault_injection
    assert parse_args(["--enable-fault-injection=true"]).enable_fault_injection
    assert not parse_args(["--enable-fault-injection=false"]).enable_fault_injection
    c = parse_args(["--client-cert-auth", "--trusted-ca-file", "ca.pem", "--name", "z"])
    assert c.client_cert_auth and c.name == "z"


def test_member_with_several_urls() -> None:
    c = parse_args(["--name", "n1",
                    "--initial-advertise-peer-urls", "http://10.0.0.1:2380,http://10.0.0.2:2380",
                    "--initial-cluster",
                    "n1=http://10.0.0.2:2380,n1=http://10.0.0.1:2380,n2=http://10.0.0.3:2380"])
    assert c.initial_cluster[0].peer_urls == ("http://10.0.0.2:2380", "http://10.0.0.1:2380")
    assert c.member_id == member_id(["http://10.0.0.1:2380", "http://10.0.0.2:2380"],
                                    "etcd-cluster")
    assert len(c.initial_cluster) == 2 and c.peers[0].name == "n2"


def test_existing_cluster_and_other_settings() -> None:
    c = parse_args(member_args(2, "--initial-cluster-state=existing", "--data-dir", "/d/n2",
                               "--snapshot-count", "0", "--quota-backend-bytes", "1024",
                               "--auto-compaction-mode", "revision",
                               "--auto-compaction-retention", "1000",
                               "--max-request-bytes", "2048", "--max-txn-ops", "16"))
    assert not c.is_new_cluster and c.data_dir == "/d/n2"
    assert c.snapshot_count == 100_000 and c.quota_backend_bytes == 1024
    assert c.auto_compaction_revisions == 1000 and c.auto_compaction_period_seconds == 0
    assert (c.max_request_bytes, c.max_txn_ops) == (2048, 16)


@pytest.mark.parametrize("retention,seconds", [
    ("0", 0), ("1", 3600), ("5m", 300), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400),
    ("500ms", 0.5),
])
def test_periodic_retention(retention: str, seconds: float) -> None:
    c = parse_args(["--auto-compaction-retention", retention])
    assert c.auto_compaction_period_seconds == pytest.approx(seconds)
    assert c.auto_compaction_retention == retention


def test_tls_flags() -> None:
    c = parse_args(["--listen-client-urls", "https://127.0.0.1:2379",
                    "--advertise-client-urls", "https://127.0.0.1:2379",
                    "--cert-file", "s.crt", "--key-file", "s.key",
                    "--trusted-ca-file", "ca.crt", "--client-cert-auth",
                    "--listen-peer-urls", "https://127.0.0.1:2380",
                    "--initial-advertise-peer-urls", "https://127.0.0.1:2380",
                    "--peer-cert-file", "p.crt", "--peer-key-file", "p.key",
                    "--peer-trusted-ca-file", "pca.crt", "--peer-client-cert-auth=true"])
    assert c.client_tls and c.peer_tls and c.client_cert_auth and c.peer_client_cert_auth
    assert (c.cert_file, c.key_file, c.trusted_ca_file) == ("s.crt", "s.key", "ca.crt")
    assert (c.peer_cert_file, c.peer_key_file, c.peer_trusted_ca_file) == (
        "p.crt", "p.key", "pca.crt")


@pytest.mark.parametrize("argv,message", [
    (member_args(4)[1:] + ["--name", "n4"], "--initial-cluster has no entry for --name n4"),
    (["--initial-cluster-state", "old"], "--initial-cluster-state must be new or existing"),
    (["--listen-peer-urls", "127.0.0.1:2380"], "is not an http(s)://host:port URL"),
    (["--initial-advertise-peer-urls", "http://127.0.0.1"], "is not an http(s)://host:port"),
    (["--initial-advertise-peer-urls", "ftp://127.0.0.1:2380"], "http(s)://host:port"),
    (["--initial-advertise-peer-urls", "http://127.0.0.1:99999"], "http(s)://host:port"),
    (["--listen-peer-urls", "http://127.0.0.1:2380/raft"], "must not have a path"),
    (["--listen-peer-urls", "http://example.com:2380"], "expected an IP address to bind"),
    (["--listen-client-urls", "http://127.0.0.1:2379"],
     "--advertise-client-urls is required when --listen-client-urls is set explicitly"),
    (["--listen-client-urls", "https://127.0.0.1:2379",
      "--advertise-client-urls", "https://127.0.0.1:2379"],
     "client URL https://127.0.0.1:2379 is https but --cert-file and --key-file are not set"),
    (["--listen-peer-urls", "https://127.0.0.1:2380"], "--peer-cert-file and --peer-key-file"),
    (["--cert-file", "a.crt"], "--cert-file and --key-file must be given together"),
    (["--peer-client-cert-auth"], "--peer-client-cert-auth needs --peer-trusted-ca-file"),
    (["--heartbeat-interval", "300"],
     "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"),
    (["--heartbeat-interval", "0"], "--heartbeat-interval must be >0 (set to 0ms)"),
    (["--election-timeout", "60000"], "is too long"),
    (["--heartbeat-interval", "-5"], "must be a non-negative integer"),
    (["--snapshot-count", "lots"], "must be a non-negative integer"),
    (["--auto-compaction-mode", "daily"], "--auto-compaction-mode must be periodic or revision"),
    (["--auto-compaction-retention", "1d"], "neither a number of hours nor a duration"),
    (["--auto-compaction-mode", "revision", "--auto-compaction-retention", "5m"],
     "revision mode needs a number of revisions"),
    (["--initial-cluster", "default"], "is not name=url"),
    (["--initial-cluster", "default=http://127.0.0.1:2380,x=http://127.0.0.1:2380"],
     "is listed for both default and x"),
    (["--initial-cluster", "default=http://127.0.0.1:9999"],
     "--initial-cluster has default=http://127.0.0.1:9999 but "
     "--initial-advertise-peer-urls is http://127.0.0.1:2380"),
    (["--log-level", "loud"], "--log-level must be one of"),
    (["--max-request-bytes", "0"], "--max-request-bytes must be > 0"),
    (["--enable-fault-injection=maybe"], "must be true or false"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--name"], "expected one argument"),
    (["--name", ""], "--name must not be empty"),
    (["--initial-cluster-token="], "--initial-cluster-token must not be empty"),
    (["--listen-peer-urls", "http://127.0.0.1:2380,"], "empty URL"),
])
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(FlagError) as e:
        parse_args(argv)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_config_is_frozen() -> None:
    c = parse_args([])
    assert isinstance(c, MemberConfig)
    with pytest.raises(AttributeError):
        c.name = "other"  # type: ignore[misc]


def test_snapshot_catchup_entries() -> None:
    # etcd's SnapshotCatchUpEntries: 5000 whatever the snapshot count (a
    # smaller --snapshot-count no longer caps it: that was a livelock).
    c = parse_args(member_args(1, "--snapshot-count", "50"))
    assert c.snapshot_catchup_entries == 5000
    c = parse_args(member_args(1, "--experimental-snapshot-catchup-entries", "20"))
    assert c.snapshot_catchup_entries == 20


def test_http_listener_urls() -> None:
    c = parse_args(member_args(1, "--listen-metrics-urls", "http://127.0.0.1:12381",
                               "--listen-client-http-urls=http://127.0.0.1:12382,http://127.0.0.1:12383"))
    assert c.listen_metrics_urls == ("http://127.0.0.1:12381",)
    assert c.listen_client_http_urls == ("http://127.0.0.1:12382", "http://127.0.0.1:12383")
    assert parse_args(member_args(1)).listen_metrics_urls == ()
    with pytest.raises(FlagError, match="https"):   # served with the client TLS files: none given
        parse_args(member_args(1, "--listen-metrics-urls", "https://127.0.0.1:12381"))
    with pytest.raises(FlagError, match="IP address"):
        parse_args(member_args(1, "--listen-client-http-urls", "http://example.com:1"))
