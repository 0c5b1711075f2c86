"""engine.cli.launch with small stand-in processes (no member starts; ~1 s)."""
from __future__ import annotations

import signal
import sys

from engine.cli import launch
from engine.cli.flags import parse_args

# Sleeps until told; with "ignore", SIGTERM does not stop it.
_SLEEPER = ("import signal, sys, time\n"
            "if sys.argv[1] == 'ignore':\n"
            "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('up', flush=True)\n"
            "time.sleep(60)\n")


def _sleeper(tmp_path, mode: str = "default", **kw) -> launch.MemberProcess:
    p = launch.spawn([sys.executable, "-c", _SLEEPER, mode, f"--data-dir={tmp_path / 'd'}"],
                     tmp_path / "log", **kw)
    launch._wait_for(lambda: (tmp_path / "log").read_text() == "up\n", 10.0)
    return p


def test_member_flags_are_what_raftnode_parses() -> None:
    flags = launch.member_flags("n1", "/d/n1", "http://127.0.0.1:12379", "http://127.0.0.1:12380",
                                "n1=http://127.0.0.1:12380", "tok", state="existing",
                                fault_injection=True)
    cfg = parse_args(flags)
    assert (cfg.name, cfg.data_dir, cfg.initial_cluster_state, cfg.initial_cluster_token) == \
        ("n1", "/d/n1", "existing", "tok")
    assert cfg.advertise_client_urls == ("http://127.0.0.1:12379",)
    assert cfg.enable_fault_injection
    assert "--enable-fault-injection" not in launch.member_flags("n1", "d", "u", "p", "i", "t")


def test_free_ports_are_distinct() -> None:
    got = launch.free_ports(10) + launch.free_ports(10)
    assert len(set(got)) == 20


def test_pause_resume_and_stop(tmp_path) -> None:
    p = _sleeper(tmp_path)
    try:
        p.pause()
        assert p.paused() and p.alive()
        p.resume()
        assert not p.paused()
        p.pause()
        launch.stop([p], timeout=5.0)     # a paused member still sees SIGTERM
        assert not p.alive()
        assert p.popen.returncode == -signal.SIGTERM
    finally:
        p.kill()


def test_stop_kills_at_the_deadline(tmp_path) -> None:
    p = _sleeper(tmp_path, "ignore")
    try:
        launch.stop([p], timeout=0.3)
        assert p.popen.returncode == -signal.SIGKILL
    finally:
        p.kill()


def test_adopt_by_pid_file_only_the_same_data_dir(tmp_path) -> None:
    p = _sleeper(tmp_path, pid_file=tmp_path / "n1.pid")
    try:
        adopted = launch.adopt(tmp_path / "n1.pid", tmp_path / "d")
        assert adopted is not None and adopted.pid == p.pid and adopted.alive()
        assert launch.adopt(tmp_path / "n1.pid", tmp_path / "other") is None   # PID reused
        assert launch.adopt(tmp_path / "none.pid", tmp_path / "d") is None
        launch.stop([adopted], timeout=5.0)
        p.reap(5.0)
        assert launch.adopt(tmp_path / "n1.pid", tmp_path / "d") is None       # gone
    finally:
        p.kill()


def test_find_by_data_dir_sees_a_member_started_elsewhere(tmp_path) -> None:
    p = _sleeper(tmp_path)          # runs with --data-dir=<tmp>/d, no PID file anywhere
    try:
        found = launch.find_by_data_dir(tmp_path / "d")
        assert found is not None and found.pid == p.pid
        assert launch.find_by_data_dir(tmp_path / "d2") is None
        assert launch.stop([found], timeout=5.0) == []
    finally:
        p.kill()
