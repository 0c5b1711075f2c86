"""`raftui --auth` (host mode) and `raftui --endpoints ... --user NAME`
through the console's real entry point (raftui.__main__.main), with the
app driven by Pilot instead of a terminal:

1. host mode --auth on a fresh data dir: the root password is asked for
   (getpass, the prompt says whose), the hosted member gets auth enabled,
   the console's polls and writes carry the token and the header says
   "auth on (root)";
2. attach mode --user root (password asked for, "Password: "): reads the
   key written in 1; --user root:wrong exits 1 with etcd's refusal before
   any screen opens;
3. the password is in no file under HOME, XDG dirs and the data dir (the
   console's cluster.json, the member's log and data), and was never
   printed.
The hosted member is stopped by its PID (adopted from its data dir).
"""
from __future__ import annotations

import asyncio
import getpass
import pathlib
import time

import pytest

from raftui import __main__ as console_main
from raftui.app import RaftuiApp
from raftui.host import raftnode_host

PASSWORD = "console-pw-91b2e6d4"


def _files_containing(root: pathlib.Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _drive(check):
    """RaftuiApp.run replaced: open the app under Pilot and run `check(app, pilot)`."""
    def run(self, *args, **kwargs):
        async def body():
            async with self.run_test(size=(100, 30)) as pilot:
                await check(self, pilot)
        asyncio.run(asyncio.wait_for(body(), 90))
    return run


async def _until(pilot, cond, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)


def _header(app) -> str:
    from raftui.screens.main import MainScreen
    main = next(s for s in app.screen_stack if isinstance(s, MainScreen))
    main._title(main.state)
    return main.query_one("#title-bar").render().plain


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    for var, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_CACHE_HOME", ".cache"), ("XDG_STATE_HOME", ".local/state")):
        (h / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(h / sub))
    return h


def test_console_user_and_host_auth(tmp_path, home, monkeypatch, capsys):
    data = tmp_path / "cluster"
    prompts: list[str] = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="Password: ": prompts.append(prompt) or PASSWORD)
    seen: dict = {}

    async def hosted(app, pilot):
        src = app.source
        await _until(pilot, lambda: src.auth is not None and src.auth.enabled is True
                     and src.state.leader_id != 0, "the hosted member polled with auth on")
        put = await src.put("k", "written-under-auth")
        assert put.ok, put.text
        got = await src.get("k")
        assert got.ok and "written-under-auth" in repr(got.data), got.text
        await _until(pilot, lambda: "auth on (root)" in _header(app), "the header's auth mark")
        seen["endpoints"] = src.endpoints

    monkeypatch.setattr(RaftuiApp, "run", _drive(hosted))
    try:
        assert console_main.main(["--auth", "--data-dir", str(data), "--members", "1"]) == 0
        # A new cluster: asked twice, as etcdctl user add asks.
        assert prompts == ["Password of the hosted cluster's root user: ", "Again: "]
        ep = seen["endpoints"][0]

        async def attached(app, pilot):
            src = app.source
            got = await src.get("k")
            assert got.ok and "written-under-auth" in repr(got.data), got.text
            assert src.auth.enabled is True and src.auth.user == "root"
            await _until(pilot, lambda: "auth on (root)" in _header(app), "the header's auth mark")
            seen["attached"] = True

        prompts.clear()
        monkeypatch.setattr(RaftuiApp, "run", _drive(attached))
        assert console_main.main(["--endpoints", ep, "--user", "root"]) == 0
        assert prompts == ["Password: "] and seen.get("attached")

        def never(self, *a, **k):
            raise AssertionError("the console opened with a wrong password")
        monkeypatch.setattr(RaftuiApp, "run", never)
        assert console_main.main(["--endpoints", ep, "--user", "root:wrong"]) == 1
    finally:
        left = raftnode_host(data, 1).stop_all(strays=True)   # by PID, found from the data dir
        assert left == []
    out = capsys.readouterr()
    assert "raftui: etcdserver: authentication failed, invalid user ID or password" in out.err
    assert PASSWORD not in out.out + out.err
    assert _files_containing(tmp_path, PASSWORD.encode()) == []
    assert (data / "cluster.json").exists() and list(data.glob("*.log"))   # the console did write files


def test_a_new_clusters_root_password_is_asked_twice_and_must_match(tmp_path, monkeypatch, capsys):
    answers = iter(["first-typing", "second-typo"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="Password: ": next(answers))
    assert console_main.main(["--auth", "--data-dir", str(tmp_path / "fresh"), "--members", "1"]) == 2
    assert "the two passwords differ" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "cluster.json").exists()     # nothing was started
