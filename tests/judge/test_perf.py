"""`etcdctl check perf --load=s` passes against a 3-member raftnode cluster (about 60 s).

The issue's performance target. Runs against the candidate only (with
RAFTUI_JUDGE_CANDIDATE=etcd, against a real etcd cluster -- the check's
expectations validated). Under -m soak, not in the default run: it is a
timed assertion (the standards keep speed in bench/, and
`python bench/bench_vs_etcd.py --check-perf s,m` runs it beside etcd), and
its verdict depends on the machine's load: on a shared 2-core machine at
load 7-10 its slowest-request bound (0.5 s) passed and failed on the same
code. Run it on a quiet machine: `python -m pytest tests/judge/test_perf.py -m soak`.
"""
from __future__ import annotations

import re

import pytest

from tests.judge.framework import candidate_kind
from tests.support.etcd import etcdctl


def parse_check_perf(stdout: str) -> dict:
    """The verdict lines of `check perf` (after its progress bar)."""
    # Verdict lines: "PASS: Throughput is 150 writes/s", "Slowest request took too long: 1.1s",
    # "FAIL: Stddev too high: ...", and a last line "PASS" or "FAIL".
    # The first verdict can follow the progress bar on its line ("100.00% 1m0sFAIL: ...").
    stdout = re.sub(r"(?<=[^\r\n])(PASS|FAIL)(?=: Throughput)", r"\n\1", stdout)
    out: dict = {"lines": [line.strip() for line in re.split(r"[\r\n]", stdout)
                           if re.match(r"\s*(PASS|FAIL|Throughput|Slowest|Stddev)", line)]}
    m = re.search(r"Throughput (?:is|too low: )?\s*(\d+) writes/s", stdout)
    out["writes_per_s"] = int(m.group(1)) if m else None
    m = re.search(r"Slowest request took (?:too long: )?([0-9.]+)s", stdout)
    out["slowest_s"] = float(m.group(1)) if m else None
    m = re.search(r"Stddev (?:is|too high: )?\s*([0-9.]+)s", stdout)
    out["stddev_s"] = float(m.group(1)) if m else None
    out["passed"] = bool(out["lines"]) and out["lines"][-1] == "PASS"
    return out


@pytest.mark.soak
def test_check_perf_load_s(request, tmp_path) -> None:
    if candidate_kind() == "raftnode":
        cluster = request.getfixturevalue("raftnode_cluster_factory")(3)
    else:
        cluster = request.getfixturevalue("etcd_cluster_factory")(3)
    r = etcdctl(cluster.endpoints, "check", "perf", "--load=s", timeout=240)
    verdict = parse_check_perf(r.stdout)
    print(f"check perf --load=s against {candidate_kind()}: {verdict}")
    assert r.returncode == 0 and verdict["passed"], (
        f"check perf --load=s failed (rc={r.returncode}): {verdict['lines']}\nstderr: {r.stderr[-2000:]}")
    assert verdict["writes_per_s"] is not None and verdict["writes_per_s"] >= 135, verdict


def test_parse_check_perf_reads_a_verdict_glued_to_the_progress_bar() -> None:
    glued = parse_check_perf(" 60000 / 60000 [====] 100.00% 1m0sFAIL: Throughput too low: 899 writes/s\n"
                             "Slowest request took too long: 0.6s\nPASS: Stddev is 0.073905s\nFAIL\n")
    assert glued["lines"] == ["FAIL: Throughput too low: 899 writes/s", "Slowest request took too long: 0.6s",
                              "PASS: Stddev is 0.073905s", "FAIL"]
    assert (glued["writes_per_s"], glued["slowest_s"], glued["passed"]) == (899, 0.6, False)
    clean = parse_check_perf("100.00% 1m0s\nPASS: Throughput is 150 writes/s\nPASS: Slowest request took 0.02s\n"
                             "PASS: Stddev is 0.0007s\nPASS\n")
    assert clean["passed"] and clean["lines"][0] == "PASS: Throughput is 150 writes/s"
