"""Policy for tests that need the real etcd/etcdctl binaries.

Locally a missing etcd is a skip. In CI (RAFTUI_REQUIRE_ETCD=1) it is a
failure: interoperability is the point of those tests, and a silently
skipped judge is no judge.
"""
from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_ENV = "RAFTUI_REQUIRE_ETCD"


def _find(name: str, env_override: str) -> str | None:
    explicit = os.environ.get(env_override)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)


def etcd_path() -> str | None:
    """Path of the etcd server binary ($RAFTUI_ETCD, else PATH, else /usr/bin)."""
    return _find("etcd", "RAFTUI_ETCD")


def etcdctl_path() -> str | None:
    """Path of the etcdctl binary ($RAFTUI_ETCDCTL, else PATH, else /usr/bin)."""
    return _find("etcdctl", "RAFTUI_ETCDCTL")


def etcd_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def require_etcd() -> tuple[str, str]:
    """Return (etcd, etcdctl) paths, or skip the test -- fail it when REQUIRE_ENV=1."""
    server, ctl = etcd_path(), etcdctl_path()
    missing = [n for n, p in (("etcd", server), ("etcdctl", ctl)) if p is None]
    if missing:
        msg = f"{' and '.join(missing)} not installed (Debian: etcd-server, etcd-client)"
        if etcd_required():
            pytest.fail(f"{msg}, but {REQUIRE_ENV}=1 demands it", pytrace=False)
        pytest.skip(msg)
    assert server is not None and ctl is not None
    return server, ctl
