"""etcd3gw's own functional tests (OpenStack's client of etcd's JSON gateway)
against a raftnode member's --listen-client-http-urls and against real etcd
3.4.23: raftnode passes what etcd passes. Soak (about a minute, CI
deselects it); skipped unless etcd3gw and oslotest are installed.
Measured: 23 of 23 pass against both (a first run once hung past pytest's
300 s under load; each suite now has 150 s)."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.support import etcd as support_etcd
from tests.support import raftnode as support_raftnode
from tests.support.ports import free_port

etcd3gw = pytest.importorskip("etcd3gw")
pytest.importorskip("oslotest")


def _run_suite(url: str, port: int) -> dict[str, str]:
    """etcd3gw's functional tests against url: {test id: outcome}."""
    tests = pathlib.Path(etcd3gw.__file__).parent / "tests" / "test_etcd3gw.py"
    env = {**os.environ, "TOOZ_TEST_HTTP_URL": url, "TOOZ_TEST_ETCD_PORT": str(port)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(tests.parent), str(tests)],
                       env=env, capture_output=True, text=True, timeout=150, cwd=tests.parent)
    outcomes = dict((name, outcome) for outcome, name in
                    re.findall(r"^(PASSED|FAILED|ERROR|SKIPPED)\S* (\S+)", r.stdout, re.M))
    assert outcomes, r.stdout[-3000:] + r.stderr[-2000:]
    return outcomes


@pytest.mark.soak
@pytest.mark.timeout(420)
def test_etcd3gw_functional_suite_passes_as_against_etcd(etcd_binaries, tmp_path) -> None:
    with support_etcd.start_etcd_cluster(tmp_path / "etcd", size=1) as etcd:
        port = int(etcd.client_urls[0].rsplit(":", 1)[1])
        theirs = _run_suite(f"http://localhost:{port}", port)
    http_port = free_port()
    cluster = support_raftnode.start_raftnode_cluster(
        tmp_path / "ours", 1, fault_injection=False,
        extra_args=[f"--listen-client-http-urls=http://127.0.0.1:{http_port}"])
    with cluster:
        ours = _run_suite(f"http://localhost:{http_port}", http_port)
    passed_by_etcd = {t for t, o in theirs.items() if o == "PASSED"}
    assert passed_by_etcd, theirs
    assert {t for t in passed_by_etcd if ours.get(t) != "PASSED"} == set(), ours
