"""The console's view of a running scenario: its steps, the one running highlighted.

    screen = ScenarioScreen.open("leader-isolation", source, host)   # or a file path
    if isinstance(screen, str): notify(screen)          # why the file cannot run (line, step)
    else: app.push_screen(screen)                        # runs at once; escape stops it and goes back

The screen shows the steps (left), the cluster and the timeline as the
scenario changes them (right: the console's own panels, fed from the same
ClusterSource the runner polls). `s` stops a running scenario, `r` runs it
again once it has ended, escape stops it and returns to the dashboard.
Step results contain server text: drawn through raftui/render.py only.
"""
from __future__ import annotations

import dataclasses

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from raftui.render import escape, safe_text
from raftui.host import ClusterHost
from raftui.source import ClusterSource
from raftui.widgets.cluster_panel import ClusterPanel
from raftui.widgets.timeline_panel import TimelinePanel

from . import ScriptError, resolve
from .cluster import ScenarioCluster
from .runner import Report, Runner, StepEvent
from .script import Loop, Script, Step

RESULT_SHOWN = 160
MARKS = {"pending": " ", "running": "▶", "done": "✓", "fail": "✗", "note": "↻"}


@dataclasses.dataclass(frozen=True)
class StepRow:
    status: str = "pending"         # pending / running / done / fail / note (a loop that is going round)
    text: str = ""                  # the latest result, or the loop's round
    iteration: tuple[int, ...] = ()
    seconds: float = 0.0


class ScenarioPanel(Vertical):
    """The script's steps in reading order, each with its latest result; follows the running one."""

    DEFAULT_CSS = """
    ScenarioPanel { border: round $primary; height: 1fr; }
    ScenarioPanel > #scenario-steps { height: 1fr; }
    ScenarioPanel #scenario-lines { text-wrap: nowrap; text-overflow: ellipsis; }
    ScenarioPanel > #scenario-result { height: auto; padding: 0 1; }
    ScenarioPanel .-pass { color: $up; text-style: bold; }
    ScenarioPanel .-fail { color: $down; text-style: bold; }
    ScenarioPanel > .scenario--running { color: $accent; text-style: bold; }
    ScenarioPanel > .scenario--done { color: $up; }
    ScenarioPanel > .scenario--fail { color: $down; text-style: bold; }
    ScenarioPanel > .scenario--pending { color: $muted; }
    """
    COMPONENT_CLASSES = {"scenario--running", "scenario--done", "scenario--fail", "scenario--pending",
                         "scenario--muted"}
    rows: reactive[tuple[StepRow, ...]] = reactive((), init=False, repaint=False)

    def __init__(self, script: Script, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.script = script
        self.flat = script.flat()
        self.border_title = safe_text(f"Scenario: {script.name}", limit=80)   # a file's text: never markup
        self.set_reactive(ScenarioPanel.rows, tuple(StepRow() for _ in self.flat))
        self.current: int | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="scenario-steps"):
            yield Static(self._render_steps(), id="scenario-lines")
        yield Static(Text(escape(self.script.description, limit=300)), id="scenario-result")

    def reset(self) -> None:
        self.current = None
        self.rows = tuple(StepRow() for _ in self.flat)
        self.query_one("#scenario-result", Static).update(Text(escape(self.script.description, limit=300)))
        self.query_one("#scenario-result", Static).set_classes("")

    def step_event(self, ev: StepEvent) -> None:
        """One runner event (called on the UI loop, where the runner runs)."""
        if ev.step is None:
            return
        i = ev.step.index
        status = {"start": "running", "done": "done", "fail": "fail", "note": "note"}[ev.kind]
        rows = list(self.rows)
        if 0 <= i < len(rows):
            rows[i] = StepRow(status, ev.text, ev.iteration, ev.seconds)
            if ev.kind == "start":
                # A loop going round again: its body's earlier results are last round's.
                self.current = i
        self.rows = tuple(rows)

    def finished(self, report: Report) -> None:
        """The verdict under the steps: the first line, and for a failure what was seen instead
        (report.text() is escaped already; every line of it when the scenario was not possible)."""
        result = self.query_one("#scenario-result", Static)
        lines = report.text().splitlines()
        shown = lines if report.not_possible else lines[:1] if report.ok else lines[:2]
        result.update(Text("\n".join(shown)))
        result.set_classes("-pass" if report.ok else "-fail")

    def watch_rows(self) -> None:
        self.query_one("#scenario-lines", Static).update(self._render_steps())
        if self.current is not None:
            scroll = self.query_one("#scenario-steps", VerticalScroll)
            line = self.current
            if not (scroll.scroll_y <= line < scroll.scroll_y + max(1, scroll.size.height - 1)):
                scroll.scroll_to(y=max(0, line - 2), animate=False)

    def _style(self, status: str):
        name = {"running": "scenario--running", "done": "scenario--done", "fail": "scenario--fail",
                "note": "scenario--running"}.get(status, "scenario--pending")
        try:
            return self.get_component_rich_style(name)
        except Exception:      # not mounted yet: plain
            return ""

    def _render_steps(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        muted = self._style("pending")
        for n, (s, row) in enumerate(zip(self.flat, self.rows)):
            if n:
                out.append("\n")
            style = self._style(row.status)
            line = f"{s.line:>3}" if s.line else "   "
            indent = "  " * s.depth
            loop = "".join(f"[{k}]" for k in row.iteration)
            out.append(f"{MARKS[row.status]} {line} ", style)
            out.append(indent + escape(s.text if isinstance(s, Step) else f"{s.text}:", limit=RESULT_SHOWN),
                       style)
            if loop:
                out.append(f" {loop}", muted)
            if row.text:
                took = f" {row.seconds:.1f}s" if row.status in ("done", "fail") else ""
                out.append(f"  {escape(row.text, limit=RESULT_SHOWN)}{took}",
                           style if row.status == "fail" else muted)
        return out



def scenario_question(script) -> str:
    """What the console asks before running `script` on the cluster shown."""
    needs = script.needs()
    does = []
    if needs["faults"]:
        does.append("cut, drop or delay links")
    if needs["host"]:
        does.append("kill, pause or restart members")
    does.append("write keys")
    steps = len(script.flat())
    return (f"Run scenario '{escape(script.name, limit=200)}' on this cluster now? It will "
            f"{', '.join(does)} ({steps} steps). {escape(script.description, limit=500)}").strip()

class ScenarioScreen(Screen[Report | None]):
    """A scenario running against the console's cluster, with the cluster and timeline beside it."""

    DEFAULT_CSS = """
    ScenarioScreen > Horizontal { height: 1fr; }
    ScenarioScreen ScenarioPanel { width: 3fr; }
    ScenarioScreen #scenario-side { width: 2fr; }
    ScenarioScreen #scenario-cluster { height: auto; max-height: 14; }
    """
    BINDINGS = [
        Binding("escape", "back", "Stop and back", id="scenario_back"),
        Binding("s", "stop", "Stop", id="scenario_stop"),
        Binding("r", "rerun", "Run again", id="scenario_rerun"),
    ]

    def __init__(self, script: Script, source: ClusterSource, host: ClusterHost | None = None,
                 *, readonly: bool = False, autostart: bool = True) -> None:
        super().__init__()
        self.script = script
        self.source = source
        self.host = host
        self.readonly = readonly
        self.autostart = autostart          # False: shown, not run (snapshots feed it events)
        self.report: Report | None = None
        self.running = False

    @classmethod
    def open(cls, name_or_path: str, source: ClusterSource, host: ClusterHost | None = None,
             *, readonly: bool = False) -> "ScenarioScreen | str":
        """The screen for a shipped scenario or a file, or the one-line reason it cannot run."""
        if readonly:
            return "scenarios change the cluster; this console is read-only"
        try:
            return cls(resolve(name_or_path.strip()), source, host)
        except ScriptError as exc:
            return str(exc)

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield ScenarioPanel(self.script, id="scenario")
            with Vertical(id="scenario-side"):
                # The dashboard's own panels ("-active": shown, whatever the layout hides).
                yield ClusterPanel(id="scenario-cluster").add_class("-active")
                yield TimelinePanel(id="scenario-timeline").add_class("-active")
        yield Footer()

    @property
    def panel(self) -> ScenarioPanel:
        return self.query_one(ScenarioPanel)

    def on_mount(self) -> None:
        self._show_state()
        self.set_interval(0.5, self._show_state)
        if self.autostart:
            self._start()

    def _show_state(self) -> None:
        if not self.is_attached:        # a runner event after the screen was closed
            return
        state = self.source.state
        try:
            self.query_one(ClusterPanel).state = state
            self.query_one(TimelinePanel).events = state.timeline
        except NoMatches:               # closing
            pass

    def _start(self) -> None:
        self.report = None
        self.running = True
        self.panel.reset()
        self.run_worker(self._run(), exclusive=True, group="scenario")

    async def _run(self) -> None:
        cluster = ScenarioCluster(self.source.endpoints, self.host, source=self.source)
        self.source.note(f"scenario {self.script.name!r} started", kind="action")

        def on_event(ev: StepEvent) -> None:
            if self.is_attached:
                self.panel.step_event(ev)
                self._show_state()

        try:
            report = await Runner(self.script, cluster, on_event=on_event).run()
        finally:
            self.running = False
            await cluster.close()
        self.report = report
        if self.is_attached:
            self.panel.finished(report)
        first = report.text().splitlines()[0]
        self.source.note(first, ok=report.ok, kind="action" if report.ok else "error")
        self.notify(escape(first, limit=300), severity="information" if report.ok else "error", markup=False)

    def action_stop(self) -> None:
        if self.running:
            self.workers.cancel_group(self, "scenario")
            self.running = False
            self.source.note(f"scenario {self.script.name!r} stopped by the operator", ok=False, kind="error")
            self.query_one("#scenario-result", Static).update(Text("stopped"))

    def action_rerun(self) -> None:
        if not self.running:
            self._start()

    def action_back(self) -> None:
        self.action_stop()
        self.dismiss(self.report)
