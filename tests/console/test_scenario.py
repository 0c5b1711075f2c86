"""Scenario scripts (raftui/scenario): the format, hostile files, and the proof
that shipped scenarios run headless.

Cheap first: every shipped scenario parses; every kind of bad file is a
ScriptError naming its line or step (exit 2), never a traceback. Then the
real runs, one cluster each: a shipped fault scenario (leader isolation)
through the runner on a hosted 3-member raftnode cluster, `raftui run` as
a subprocess hosting its own member, and `raftui run --endpoints` against
a real 3-member etcd 3.4.23, where the KV/maintenance scenario passes and
the fault scenario is refused as not possible, naming its steps.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from raftui.scenario import ScenarioCluster, Runner, ScriptError, library, parse, resolve
from raftui.scenario.headless import main as run_main
from raftui.scenario.script import MAX_STEPS_RUN, parse_step

from .conftest import run

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _env() -> dict:
    """Member processes and subprocesses import this checkout (whatever pip installed)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


# ------------------------------------------------------------------ the format


def test_every_shipped_scenario_parses_and_says_what_it_needs() -> None:
    names = library.names()
    assert {"leader-isolation", "split-brain", "flapping-network", "learner-catch-up", "rolling-restart",
            "nospace-recovery", "leader-churn", "leader-transfer", "asymmetric-leader"} <= set(names)
    for name in names:
        s = resolve(name)
        assert s.description and s.steps, name
        assert all(x.line for x in s.flat()), f"{name}: every step has its line"
    assert resolve("leader-isolation").needs()["faults"]
    assert resolve("rolling-restart").needs()["host"]
    lt = resolve("leader-transfer").needs()
    assert not lt["faults"] and not lt["host"]


def test_a_small_script_parses_with_loops_variables_and_lines() -> None:
    s = parse('[scenario]\nname = "t"\nmembers = 3\nsteps = [\n'
              '  "put k v",\n'
              '  "kill leader as old",\n'
              '  { repeat = 2, steps = ["wait leader != $old within 5s"] },\n'
              '  { for = "m", in = "each", steps = ["defrag $m"] },\n'
              '  "partition [n1] | [n2, n3]",\n'
              ']\n')
    flat = s.flat()
    assert [x.line for x in flat] == [5, 6, 7, 7, 8, 8, 9]
    assert flat[1].verb == "kill" and flat[1].args["as"] == "old"
    assert flat[2].repeat == 2 and flat[4].var == "m"
    assert [r.text for r in flat[6].args["b"]] == ["n2", "n3"]
    assert [name for _, name in s.member_names()] == ["n1", "n2", "n3"]


@pytest.mark.parametrize("step, verb", [
    ("pause n2 3s", "pause"), ("restart n2", "restart"), ("heal", "heal"), ("defrag each", "defrag"),
    ("assert committed k", "assert_committed"), ("wait leader != n1 within 5s", "wait_leader"),
    ("wait 500ms", "sleep"), ("drop each 20%", "drop"), ("delay n1 30ms", "delay"),
    ("put 'a key' 'a value' on leader expect fail", "put"), ("fill blob until nospace max 32MiB", "fill"),
    ("transfer leader to follower", "transfer"), ("add learner as l", "add_learner"),
    ("assert leader == n1", "assert_leader"), ("wait caught up each", "wait_caught_up"),
    ("cut n1 -> [n2, n3]", "cut"), ("uncut $x -> rest", "cut"),
])
def test_the_issue_steps_parse(step: str, verb: str) -> None:
    assert parse_step(step)[0] == verb


BAD = [
    ('steps = ["put k v"\n', "not valid TOML", "line"),
    ('steps = ["put k v", "frobnicate n1"]\n', "unknown step 'frobnicate'", "step 2 (line 1)"),
    ('steps = [\n "put k v",\n "wait leader != n1 within soon"]\n', "not a duration", "line 3"),
    ('steps = ["wait 2h"]\n', "longer than", "step 1"),
    ('steps = ["restart $x"]\n', "$x is used before anything binds it", "step 1"),
    ('steps = [{ repeat = 1000, steps = [{ repeat = 1000, steps = ["put k v"] }] }]\n',
     f"at most {MAX_STEPS_RUN}", "1000000"),
    ('steps = [{ repeat = 0, steps = ["put k v"] }]\n', "repeat must be", "step 1"),
    ('steps = [{ repeat = true, steps = ["put k v"] }]\n', "repeat must be", "step 1"),
    ('steps = [{ repeat = 2 }]\n', "non-empty steps", "step 1"),
    ('steps = [{ repeat = 2, steps = ["x"], extra = 1 }]\n', "not extra", "step 1"),
    ('steps = [{ for = "m", in = "nobody", steps = ["kill $m"] }]\n', "in = ", "step 1"),
    ('steps = [1]\n', "a step is a string", "step 1"),
    ('steps = "put k v"\n', "steps must be a list", ""),
    ('[scenario]\nname = "x"\n', "no steps", ""),
    ('[scenario]\nmembers = 99\nsteps = ["heal"]\n', "members must be", ""),
    ('[scenario]\nflags = ["--data-dir=/etc"]\nsteps = ["heal"]\n', "not one a scenario may set", ""),
    ('[scenario]\nbogus = 1\nsteps = ["heal"]\n', "unknown setting", "bogus"),
    ('steps = ["partition [n1] | "]\n', "two sides", "step 1"),
    ('steps = ["partition [rest] | [rest]"]\n', "only one side", "step 1"),
    ('steps = ["partition [] | [n1]"]\n', "empty group", "step 1"),
    ('steps = ["cut n1 n2"]\n', "usage: cut A -> B", "step 1"),
    ('steps = ["cut rest -> rest"]\n', "only one end", "step 1"),
    ('steps = ["kill [red]x"]\n', "not a member", "step 1"),
    ('steps = ["put k \\"unclosed"]\n', "cannot split", "step 1"),
    ('steps = ["drop n1 140%"]\n', "percentage", "step 1"),
    ('steps = [""]\n', "empty step", "step 1"),
    ("steps = [" + "{ repeat = 1, steps = [" * 6 + '"heal"' + "] }" * 6 + "]\n", "nested deeper", "step"),
]


@pytest.mark.parametrize("text, message, where", BAD, ids=[b[1][:24] for b in BAD])
def test_bad_files_are_refused_with_the_line_and_the_reason(tmp_path, capsys, text, message, where) -> None:
    with pytest.raises(ScriptError) as err:
        parse(text, "bad.toml")
    assert message in str(err.value) and where in str(err.value), str(err.value)
    p = tmp_path / "bad.toml"
    p.write_text(text)
    assert run_main([str(p)]) == 2                    # raftui run exits 2 before starting anything
    assert message in capsys.readouterr().err


def test_unreadable_files_exit_2(tmp_path, capsys) -> None:
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00steps")
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * 2_000_000)
    for path, why in ((binary, "not UTF-8"), (huge, "larger than"), (tmp_path / "missing.toml", "No such file")):
        assert run_main([str(path)]) == 2
        assert why in capsys.readouterr().err
    assert run_main(["no-such-scenario"]) == 2
    assert "shipped:" in capsys.readouterr().err


def test_the_package_imports_no_textual() -> None:
    code = ("import sys, raftui.scenario, raftui.scenario.headless, raftui.lincheck.live, raftui.lincheck.replay\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'textual'], 'textual loaded'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ real clusters


@pytest.fixture(scope="module")
def hosted3(shared_hosted):
    """conftest's hosted cluster, shared with the console's other hosted modules (CI time);
    members restarted by a scenario import this checkout, as the members it started
    (shared_hosted puts this checkout first on PYTHONPATH while it lives)."""
    return shared_hosted


def test_leader_isolation_passes_on_hosted_raftnode(hosted3) -> None:
    """The shipped fault scenario, step by step through the runner, on three real members."""
    events = []

    async def body():
        cluster = ScenarioCluster(hosted3.endpoints, hosted3)
        try:
            return await Runner(resolve("leader-isolation"), cluster, on_event=events.append).run()
        finally:
            await cluster.close()

    report = run(body(), timeout=120)
    assert report.ok, report.text() + "\n" + "\n".join(e.line() for e in events)
    done = [e for e in events if e.kind == "done"]
    assert len(done) == 13 and "refused as expected" in done[6].text
    assert [e.kind for e in events[:2]] == ["start", "done"]


def test_a_failing_step_is_named_and_members_are_checked_first(hosted3) -> None:
    async def body(text: str):
        cluster = ScenarioCluster(hosted3.endpoints, hosted3)
        try:
            return await Runner(parse(text, "t.toml"), cluster).run()
        finally:
            await cluster.close()

    report = run(body('steps = ["put t/k v", "assert t/k == other"]\n'))
    assert not report.ok and report.failed.step.index == 1
    assert "FAILED at step 2 (line 1): assert t/k == other" in report.text() and "'v'" in report.text()
    report = run(body('steps = ["kill n7", "restart n9"]\n'))
    assert report.not_possible and report.steps_run == 0
    assert "no member named 'n7'" in report.text() and "n1, n2, n3" in report.text()


def test_raftui_run_hosts_its_own_cluster(raftnode_binary, tmp_path) -> None:
    script = tmp_path / "s.toml"
    script.write_text('[scenario]\nname = "one"\nsteps = ["wait leader within 15s", "put a/k v1", "kill leader as x",'
                      ' "restart $x", "wait healthy within 20s", "assert committed a/k"]\n')
    history = tmp_path / "history.jsonl"
    proc = subprocess.run([sys.executable, "-m", "raftui", "run", str(script), "--members", "1",
                           "--data-dir", str(tmp_path / "d"), "--lincheck", "60", "--history", str(history)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED, 6 steps" in proc.stdout and "restarted n1" in proc.stdout
    assert not list((tmp_path / "d").glob("*.pid")), "members left running"
    # The live check ran through it: judged, saved, the kill and restart in its history.
    assert "linearizable ✓" in proc.stdout
    from raftui.lincheck import history as saved

    _, events = saved.load(str(history))
    assert {e["what"] for e in events if e["type"] == "nemesis"} >= {"killed n1"}


def test_on_real_etcd_the_api_scenario_passes_and_faults_are_not_possible(real_etcd3) -> None:
    eps = ",".join(real_etcd3.client_urls)

    def raftui_run(name: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "raftui", "run", name, "--endpoints", eps], cwd=ROOT,
                              env=_env(), capture_output=True, text=True, timeout=120)

    ok = raftui_run("leader-transfer")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASSED, 14 steps" in ok.stdout and "leadership moved to" in ok.stdout
    refused = raftui_run("leader-isolation")
    assert refused.returncode == 1
    assert "NOT POSSIBLE" in refused.stdout and "step 4 (line 13): isolate $old" in refused.stdout
    assert "Fault service" in refused.stdout


def test_the_console_screen_marks_each_step_as_it_runs(hosted3) -> None:
    """:run's screen on the hosted members: every step ends marked done, in order, and
    a bad file is refused with its reason instead of a screen."""
    from raftui.scenario.ui import ScenarioPanel, ScenarioScreen

    from .conftest import until
    from .ui import make_app

    async def body():
        app = make_app(hosted3.endpoints, host=hosted3)
        async with app.run_test(size=(140, 40)) as pilot:
            screen = ScenarioScreen.open("leader-transfer", app.source, hosted3)
            assert not isinstance(screen, str), screen
            seen_running = []
            app.push_screen(screen)
            await until(pilot, lambda: (screen.is_mounted and seen_running.append(screen.panel.current))
                        or screen.report is not None,
                        60.0, "the scenario to end")
            panel = screen.query_one(ScenarioPanel)
            lines = str(screen.query_one("#scenario-lines").render()).splitlines()
            result = str(screen.query_one("#scenario-result").render())
            await pilot.press("escape")
            await until(pilot, lambda: type(app.screen).__name__ == "MainScreen", 10.0, "back to the dashboard")
            return screen.report, [r.status for r in panel.rows], lines, result, seen_running

    report, statuses, lines, result, seen = run(body(), timeout=90)
    assert report.ok, report.text()
    assert statuses == ["done"] * 14 and len(lines) == 14
    assert all(line.startswith("✓") for line in lines) and "transfer leader to follower" in lines[3]
    assert "PASSED, 14 steps" in result
    assert any(c is not None for c in seen)
    assert ScenarioScreen.open("frobnicate.toml", None).startswith("frobnicate.toml")
    assert "read-only" in ScenarioScreen.open("leader-transfer", None, readonly=True)


def test_the_command_line_refuses_conflicting_flags_before_starting_anything(capsys) -> None:
    from raftui.__main__ import main

    assert main(["--auth", "--endpoints", "127.0.0.1:1"]) == 2
    assert "--auth is for host mode" in capsys.readouterr().err
    assert main(["--metrics-urls", "http://127.0.0.1:1/metrics"]) == 2
    assert "attach mode" in capsys.readouterr().err
    assert main(["--endpoints", "127.0.0.1:1,127.0.0.1:2", "--metrics-urls", "http://127.0.0.1:1/metrics"]) == 2
    assert main(["sim", "--nodes", "0"]) == 2 and main(["run", "--steps"]) == 0


def test_printed_reports_carry_no_control_characters() -> None:
    """A scenario file (or a member's error text) cannot send escape sequences to the terminal."""
    from raftui.scenario.runner import Report, StepEvent

    s = parse('[scenario]\nname = "\\u001b]0;pwned\\u0007"\nsteps = ["put \\"\\u001b[2J\\" v"]\n')
    ev = StepEvent("fail", s.steps[0], "etcdserver: \x1b[31mred\x9b", 1.0)
    report = Report(s, failed=ev)
    for text in (ev.line(), report.text()):
        assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in text), repr(text)
        assert "\\x1b" in text


def test_scenario_screen_snapshot(snap_compare, fixed_clock_and_tz) -> None:
    """README's picture: leader isolation stopped at a failed step, fed fixed events (no cluster)."""
    from raftui.app import RaftuiApp
    from raftui.scenario.runner import Report
    from raftui.scenario.ui import ScenarioPanel, ScenarioScreen

    from .fake_state import STATE, FakeSource

    script = resolve("leader-isolation")
    steps = script.flat()
    results = ["n1 leads term 7", "put iso/before at revision 512 (via n1)", "$old = n1",
               "partitioned {n1} | {n2, n3}", "n2 leads term 8", "put iso/during at revision 513 (via n2)"]

    from raftui.scenario.runner import StepEvent

    async def show(pilot):
        screen = ScenarioScreen(script, pilot.app.source, autostart=False)
        pilot.app.push_screen(screen)
        await pilot.pause(0.2)
        panel = screen.query_one(ScenarioPanel)
        for step, text in zip(steps, results):
            panel.step_event(StepEvent("start", step))
            panel.step_event(StepEvent("done", step, text, 0.3))
        failed = StepEvent("fail", steps[6], "the put was accepted (put iso/lost at revision 514 (via n1)); "
                                             "expected it refused", 0.1)
        panel.step_event(StepEvent("start", steps[6]))
        panel.step_event(failed)
        panel.finished(Report(script, failed=failed, steps_run=7, seconds=6.4))
        await pilot.pause()

    app = RaftuiApp(lambda: FakeSource(STATE), theme="dark", mode_label="hosting 3 members", live=False)
    assert snap_compare(app, terminal_size=(120, 32), run_before=show)


@pytest.mark.soak
@pytest.mark.parametrize("name", library.names())
def test_every_shipped_scenario_passes_headless_on_hosted_raftnode(raftnode_binary, tmp_path, name) -> None:
    """Soak (-m soak, ~90 s in all): each shipped scenario, `raftui run NAME` hosting its own members."""
    proc = subprocess.run([sys.executable, "-m", "raftui", "run", name, "--data-dir", str(tmp_path / "d")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "PASSED" in proc.stdout


@pytest.mark.soak
@pytest.mark.parametrize("name", ["rolling-restart", "nospace-recovery", "leader-transfer", "learner-catch-up"])
def test_process_scenarios_pass_on_hosted_etcd(etcd_binaries, tmp_path, name) -> None:
    """Soak: the scenarios without Fault steps on hosted real etcd 3.4.23 (raftui run --etcd)."""
    etcd, _ = etcd_binaries
    proc = subprocess.run([sys.executable, "-m", "raftui", "run", name, "--etcd", str(etcd),
                           "--data-dir", str(tmp_path / "d")], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_raftui_run_stops_its_members_when_terminated(raftnode_binary, tmp_path) -> None:
    """SIGTERM (a CI timeout, kill) mid-scenario: the members it hosts are stopped, not left behind
    (they run in their own session, so nothing else would stop them)."""
    import signal

    script = tmp_path / "long.toml"
    script.write_text('steps = ["wait leader within 15s", "note waiting", "wait 60s"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "raftui", "run", str(script), "--members", "1",
                             "--data-dir", str(tmp_path / "d")], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:            # waits on the runner's own output, line by line
            if "waiting" in line:
                proc.send_signal(signal.SIGTERM)
                break
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "the members it started were stopped" in out
    assert not list((tmp_path / "d").glob("*.pid"))
    from raftui.host.layout import ClusterLayout
    from engine.cli import launch

    layout = ClusterLayout.load(tmp_path / "d")
    assert layout is not None and not any(launch.listening(m.client_port, "127.0.0.1") for m in layout.members)
