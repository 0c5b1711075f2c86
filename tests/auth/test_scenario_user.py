"""`raftui run --endpoints ... --user` and its live check on an
auth-enabled raftnode member: the scenario's calls and the workload's carry
the token, a wrong password stops it before any step, and without --user
the same scenario is refused by the member (so the token is what lets it in)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from raftui.host.auth import enable_root_auth
from raftui.source.connection import ClientAuth
from tests.support import raftnode as support_raftnode

PASSWORD = "pw-scenario-3b1d"
SCENARIO = """\
[scenario]
name = "auth smoke"
description = "writes and reads as root on an auth-enabled member"
members = 1
steps = [
  "put s/a 1",
  "assert committed s/a",
  "assert s/a == 1",
]
"""


@pytest.fixture
def auth_member(tmp_path):
    c = support_raftnode.start_raftnode_cluster(tmp_path / "raftnode", size=1, fault_injection=False)
    try:
        enable_root_auth(c.endpoints, ClientAuth("root", PASSWORD), None)
        yield c
    finally:
        c.stop()


def _run(tmp_path, endpoints, *extra) -> subprocess.CompletedProcess:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    return subprocess.run([sys.executable, "-m", "raftui", "run", str(path), "--endpoints",
                           ",".join(endpoints), *extra], capture_output=True, text=True, timeout=120)


def test_a_scenario_and_its_live_check_run_as_the_user_given(auth_member, tmp_path) -> None:
    eps = auth_member.endpoints
    ok = _run(tmp_path, eps, "--user", f"root:{PASSWORD}", "--lincheck", "40")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED" in ok.stdout and "linearizable ✓" in ok.stdout, ok.stdout
    wrong = _run(tmp_path, eps, "--user", "root:wrong")
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr, wrong.stderr
    assert "step" not in wrong.stdout
    anonymous = _run(tmp_path, eps)
    assert anonymous.returncode == 1, anonymous.stdout
    assert "user name is empty" in anonymous.stdout + anonymous.stderr, anonymous.stdout
