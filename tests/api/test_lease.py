"""Lease through etcdctl: grant, keep-alive, time-to-live with keys, list,
revoke, put --lease -- asked of the leader and of followers (forwarded)."""
from __future__ import annotations

import re
import subprocess

from tests.support import etcd as support_etcd
from tests.support.require import etcdctl_path

from .conftest import ctl, error_line, ok


def _grant(eps, ttl: int) -> str:
    out = ok(eps, "lease", "grant", str(ttl))
    m = re.fullmatch(r"lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)\n", out)
    assert m, out
    return m.group(1)


def test_lease_lifecycle_on_every_member(cluster3):
    eps = cluster3.endpoints
    leader = cluster3.wait_leader(10)
    for i, ep in enumerate(eps):
        lid = _grant([ep], 60)
        ok([ep], "put", f"lease/{i}", "v", f"--lease={lid}")
        out = ok([ep], "lease", "keep-alive", "--once", lid)
        assert out == f"lease {lid} keepalived with TTL(60)\n", f"member {i} (leader {leader})"
        out = ok([ep], "lease", "timetolive", lid, "--keys")
        m = re.fullmatch(rf"lease {lid} granted with TTL\(60s\), remaining\((\d+)s\), "
                         rf"attached keys\(\[lease/{i}\]\)\n", out)
        assert m and 55 <= int(m.group(1)) <= 60, out
        assert lid in ok([ep], "lease", "list").split()
        assert ok([ep], "lease", "revoke", lid) == f"lease {lid} revoked\n"
        assert ok([ep], "get", f"lease/{i}") == ""
        assert ok([ep], "lease", "timetolive", lid) == f"lease {lid} already expired\n"


def test_lease_errors(cluster1):
    eps = cluster1.endpoints
    assert error_line(eps, "lease", "revoke", "1234") == \
        "Error: failed to revoke lease (etcdserver: requested lease not found)"
    assert error_line(eps, "lease", "keep-alive", "--once", "1234") == \
        "Error: etcdserver: requested lease not found"
    assert error_line(eps, "lease", "grant", "9000000001") == \
        "Error: failed to grant lease (etcdserver: too large lease TTL)"
    assert ok(eps, "lease", "timetolive", "1234") == "lease 0000000000001234 already expired\n"
    # A TTL under the minimum is raised to it, as etcd does (2 s at these timeouts? etcd: 3/2 election).
    out = ok(eps, "lease", "grant", "1")
    assert re.fullmatch(r"lease [0-9a-f]{16} granted with TTL\(\d+s\)\n", out)


def test_lock_and_elect(cluster3):
    """etcd's recipes: txn + watch + lease together."""
    eps = cluster3.endpoints
    assert ok(eps, "lock", "api-lock", "echo", "held") == "held\n"
    leader = subprocess.Popen([etcdctl_path(), f"--endpoints={eps[0]}", "elect", "api-elect", "p1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=support_etcd._clean_env({"ETCDCTL_API": "3"}))
    try:
        first = leader.stdout.readline()   # blocks until elected
        assert re.fullmatch(r"api-elect/[0-9a-f]+\n", first), first
        r = ctl(eps[1:], "elect", "-l", "api-elect", timeout=2)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        assert out.startswith(first + "p1\n"), out
    else:
        raise AssertionError(f"elect -l returned: {r}")
    finally:
        leader.terminate()
        leader.communicate(timeout=10)
