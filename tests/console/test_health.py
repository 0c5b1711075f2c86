"""Health from what members report, not from what the console last did.

One hosted single-member raftnode cluster (cheap: one process), driven by
key presses: the member is killed from the console, then started again by
hand behind the console's back, as an operator would from a shell.
"""
from __future__ import annotations

import os
import signal
import subprocess

from raftui.host import raftnode_host
from raftui.host.health import with_process_health
from raftui.screens.quit import QuitScreen
from raftui.source.model import ClusterState, Member

from .conftest import run, until
from .ui import COL, make_app, ready, row_of, screen, timeline


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _start_by_hand(host, name: str) -> subprocess.Popen:
    """The same member started from a shell: same flags and data, not the console's child."""
    m = host.layout.member(name)
    with open(host.data_dir / f"{name}.by-hand.log", "ab") as log:
        return subprocess.Popen([*host.command, *host.member_args(m)], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_killed_then_restarted_by_hand_is_up_restart_refused_and_quit_stops_it(raftnode_binary, tmp_path):
    host = raftnode_host(tmp_path / "cluster", 1)
    by_hand = None
    try:
        host.start()
        host.wait_listening(30.0)
        pid_file = host.data_dir / "n1.pid"

        async def body():
            nonlocal by_hand
            app = make_app(host.endpoints, host=host)
            async with app.run_test(size=(120, 36)) as pilot:
                await ready(app, pilot, members=1)
                assert "hosting 1 member" in str(screen(app).query_one("#title-bar").render())
                await pilot.press("1", "k", "y")
                await until(pilot, lambda: "killed" in row_of(app, "n1")[COL["health"]],
                            what="n1 shown killed")
                dead_pid = pid_file.read_text()

                by_hand = _start_by_hand(host, "n1")
                await until(pilot, lambda: "up" in row_of(app, "n1")[COL["health"]], timeout=20,
                            what="n1 up again: it answers, whatever the console did last")
                assert host.state("n1") == "killed"          # the host's memory is not what is shown

                await pilot.press("s")                        # restart a member that is running
                line = await until(pilot, lambda: next((t for t in timeline(app) if t.startswith("restart n1")),
                                                       None), what="the refused restart")
                assert "it is running" in line and "nothing started" in line, line
                assert not any(t.startswith("restarted n1") for t in timeline(app))
                assert pid_file.read_text() == dead_pid      # no new (dying) PID written
                assert host.state("n1") == "killed" and _alive(by_hand.pid)

                # Quit-stop: the member started by hand on n1's data dir is stopped too,
                # and the console exits only once no member's port answers.
                await pilot.press("q")
                await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
                await pilot.press("s")
                await until(pilot, lambda: not app.is_running, timeout=20, what="the console to exit")
            return app.return_code

        assert run(body(), timeout=60) == 0
        assert by_hand.wait(10) is not None                  # the hand-started member was stopped
    finally:
        host.stop_all()
        if by_hand is not None and by_hand.poll() is None:
            os.kill(by_hand.pid, signal.SIGKILL)
            by_hand.wait(5)


class _Host:
    """Just the host's view of its processes."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.names = list(states)

    def state(self, name: str) -> str:
        return self.states[name]


def test_the_host_explains_only_members_that_do_not_answer():
    members = (Member("n1", 1, "a:1", health="up"), Member("n2", 2, "a:2", health="down"),
               Member("n3", 3, "a:3", health="down"), Member("n4", 4, "a:4", health="down"),
               Member("n5", 5, "a:5", health="partitioned"))
    host = _Host({"n1": "killed", "n2": "paused", "n3": "killed", "n4": "exited", "n5": "paused"})
    shown = {m.name: m for m in with_process_health(ClusterState(members=members), host).members}
    assert {n: m.health for n, m in shown.items()} == {
        "n1": "up",            # killed by the console, started by hand: it answers
        "n2": "paused", "n3": "killed", "n4": "down", "n5": "partitioned"}
    assert "its process exited" in shown["n4"].errors[-1]


def test_quit_stop_stays_open_naming_a_member_that_still_answers(monkeypatch):
    """The verification behind quit-stop: a port that still answers after stopping
    keeps the console open with the member named (never "members stopped")."""
    import raftui.app as app_module
    from raftui.app import RaftuiApp
    from .fake_state import FakeSource

    class Host(_Host):
        data_dir = "/nowhere"
        endpoints = ["127.0.0.1:1"]

        def stop_all(self, timeout=10.0, *, strays=False):
            return []

    class Source(FakeSource):
        def __init__(self):
            super().__init__()
            self.notes = []

        def note(self, text, ok=True, kind="action"):
            self.notes.append(text)

    monkeypatch.setattr(app_module, "still_listening", lambda host: [("n1", "127.0.0.1:1")])

    async def body():
        app = RaftuiApp(Source, host=Host({"n1": "running"}), live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, QuitScreen), what="the quit question")
            await pilot.press("s")
            await until(pilot, lambda: app.source.notes, what="the stop verified")
            assert app.source.notes[-1].startswith("not every member stopped: n1 still answers on 127.0.0.1:1")
            assert app.is_running
    run(body())
