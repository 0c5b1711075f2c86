"""Lease through etcdctl: grant, keep-alive, time-to-live with keys, list,
revoke, put --lease -- asked of the leader and of followers (forwarded)."""
from __future__ import annotations

import re

from .conftest import error_line, ok


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
