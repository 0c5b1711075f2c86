"""One pair of 1-member clusters (real etcd, raftnode) shared by tests/auth's
real-process tests: the judge session leaves auth off; the permission matrix
cleans up everything it made."""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.auth.support import start_pair
from tests.judge import framework


@pytest.fixture(scope="session")
def auth_pair(etcd_binaries, raftnode_binary, tmp_path_factory) -> Iterator[framework.Judge]:
    j = start_pair(tmp_path_factory.mktemp("authpair"), 1)
    try:
        yield j
    finally:
        j.stop()
