"""The live linearizability check in the console.

    screen = LincheckScreen.open(app, source, Config(clients=4, rate=20))   # starts the run if none is
    app.push_screen(screen)                                                 # escape: back, it keeps running

The run belongs to the app (an app worker), not to the screen: the operator
goes back to the dashboard, cuts the network or kills the leader, and comes
back to see the verdict. Faults the console makes meanwhile (its timeline's
partition / heal / kill / pause lines) are recorded in the history as
nemesis events, so a counterexample's timeline shows them.

The panel shows ops/s, ok / fail / info counts and the commonest errors,
then either "linearizable ✓ (12,431 ops)" or, on a violation, the smallest
counterexample the checker found, drawn as one bar per operation on a
shared time axis, and where the history was saved (`raftui lincheck FILE`
replays it). Keys: s stops the run (a last check of everything, history
saved), n starts a new one once stopped, escape goes back.
"""
from __future__ import annotations

import os
import time
import weakref

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from raftui.render import escape
from raftui.source import ClusterSource
from raftui.source.connection import TlsFiles
from raftui.widgets.cluster_panel import ClusterPanel
from raftui.widgets.timeline_panel import TimelinePanel

from .live import LiveSession, LiveStatus, OpLine, Verdict
from .workload import Config

BAR_WIDTH = 24
NEMESIS_KINDS = {"partition", "heal", "fault", "host", "killed", "paused", "down", "up", "leader"}
_SESSIONS: "weakref.WeakKeyDictionary[App, LiveSession]" = weakref.WeakKeyDictionary()


def default_save_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "raftui", "lincheck")


def session_of(app: App) -> LiveSession | None:
    """The app's live check, running or finished (None: never started)."""
    return _SESSIONS.get(app)


def start(app: App, source: ClusterSource, config: Config = Config(), *, tls: TlsFiles | None = None,
          save_dir: str | None = None, in_process: bool = False) -> LiveSession | str:
    """Start a run as an app worker (a new one only if none is running); the reason if it cannot."""
    old = _SESSIONS.get(app)
    if old is not None and old.workload.stats().running:
        return old
    try:
        session = LiveSession(source.endpoints, config, tls, save_dir=save_dir or default_save_dir(),
                              in_process=in_process, auth=getattr(source, "auth", None))
    except ValueError as exc:
        return f"lincheck: {exc}"
    _SESSIONS[app] = session
    source.note(f"linearizability check started: {config.clients} clients on {config.keys} keys, "
                f"{config.rate:g} ops/s (keys {session.workload.keys[0].rsplit('/', 1)[0]}/*)", kind="action")

    async def run() -> None:
        seen = {e.seq for e in source.state.timeline}      # what was there before the run

        def faults_to_history() -> None:
            # Timeline lines are ordered by when they happened, numbered by when the console learned
            # them: every new number once, whatever its place.
            for e in reversed(source.state.timeline):
                if e.seq and e.seq not in seen:
                    seen.add(e.seq)
                    if e.kind in NEMESIS_KINDS:
                        session.nemesis(e.text)

        timer = app.set_interval(0.5, faults_to_history)
        try:
            final = await session.run()
        except Exception as exc:   # never silent: the operator reads why in the timeline
            source.note(f"linearizability check failed: {type(exc).__name__}: {exc}", ok=False, kind="error")
            raise
        finally:
            timer.stop()
        v = final.verdict
        text = _verdict_line(final) + (f"; history saved to {final.saved}" if final.saved else "")
        source.note(text, ok=v is None or v.valid is not False, kind="action" if v and v.valid else "error")

    app.run_worker(run(), group="lincheck", exclusive=True, exit_on_error=False)
    return session


def _verdict_line(st: LiveStatus) -> str:
    v = st.verdict
    ops = st.stats.ops if st.stats else 0
    if st.error:
        return st.error
    if v is None:
        return f"checking… ({ops:,} ops so far)" if ops else "waiting for the first operations"
    if v.valid is True:
        return f"linearizable ✓ ({v.ops:,} ops)"
    if v.valid is None:
        return f"undecided after {v.ops:,} ops: the search gave up (not a proof either way)"
    return f"NOT linearizable ✗ on key {v.key}: a counterexample of {len(v.counterexample)} ops"


def draw_counterexample(lines: tuple[OpLine, ...], width: int = BAR_WIDTH, ok_style="", bad_style="",
                        muted="") -> Text:
    """One bar per operation on a shared axis: |----| from invoke to completion, |~~~> never completed."""
    out = Text(end="", no_wrap=True, overflow="ellipsis")
    if not lines:
        return out
    end = max([x.end_ms for x in lines if x.end_ms is not None] + [x.start_ms for x in lines]) or 1.0

    def col(ms: float) -> int:
        return min(width - 1, max(0, int(ms / end * (width - 1))))

    for n, x in enumerate(lines):
        a = col(x.start_ms)
        if x.end_ms is None:
            bar = " " * a + "|" + "~" * max(0, width - a - 2) + ">"
            when = f"{x.start_ms:8.1f} ..   open"
        else:
            b = max(col(x.end_ms), a)
            bar = " " * a + "|" + "─" * max(0, b - a - 1) + ("|" if b > a else "")
            when = f"{x.start_ms:8.1f} .. {x.end_ms:6.1f}"
        if n:
            out.append("\n")
        out.append(f"{escape(x.process, limit=8):>5} ", muted)
        out.append(f"{bar:<{width}}", bad_style if n == len(lines) - 1 else ok_style)
        out.append(f"  {escape(x.text, limit=120)}")
        out.append(f"  {when} ms", muted)
    return out


class LincheckPanel(Vertical):
    """Shows a LiveStatus (data down; the panel makes no call)."""

    DEFAULT_CSS = """
    LincheckPanel { border: round $primary; height: 1fr; padding: 0 1; }
    LincheckPanel > #lincheck-stats { height: auto; }
    LincheckPanel > #lincheck-verdict { height: auto; text-style: bold; padding: 1 0 0 0; }
    LincheckPanel > #lincheck-verdict.-ok { color: $up; }
    LincheckPanel > #lincheck-verdict.-bad { color: $down; }
    LincheckPanel > #lincheck-cex { height: 1fr; }
    LincheckPanel #lincheck-timeline { text-wrap: nowrap; text-overflow: ellipsis; }
    LincheckPanel > #lincheck-saved { height: auto; color: $muted; }
    LincheckPanel > .lincheck--muted { color: $muted; }
    LincheckPanel > .lincheck--ok { color: $foreground; }
    LincheckPanel > .lincheck--bad { color: $down; text-style: bold; }
    """
    COMPONENT_CLASSES = {"lincheck--muted", "lincheck--ok", "lincheck--bad"}
    status: reactive[LiveStatus | None] = reactive(None, init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Linearizability (live)"

    def compose(self) -> ComposeResult:
        yield Static("", id="lincheck-stats")
        yield Static("", id="lincheck-verdict")
        with VerticalScroll(id="lincheck-cex"):
            yield Static("", id="lincheck-timeline")
        yield Static("", id="lincheck-saved")

    def watch_status(self, st: LiveStatus | None) -> None:
        stats = self.query_one("#lincheck-stats", Static)
        verdict = self.query_one("#lincheck-verdict", Static)
        if st is None or st.stats is None:
            stats.update(Text("no check running (the command line's lincheck starts one)"))
            return
        s = st.stats
        lines = [f"{s.ops:,} ops  (ok {s.ok:,} · fail {s.fail:,} · info {s.info:,})  {s.per_second:.1f} ops/s"
                 + ("" if s.running else "  — stopped") + ("  — history full, recording stopped" if s.full else "")]
        for err, n in s.errors:
            lines.append(f"  {n:,} × {err}")
        stats.update(Text("\n".join(escape(x, limit=200) for x in lines)))
        v: Verdict | None = st.verdict
        verdict.update(Text(escape(_verdict_line(st), limit=300)
                            + ("" if v is None or st.checking else
                               f"  (checked {time.monotonic() - st.checked_at:.0f}s ago in {v.seconds:.2f}s)")))
        verdict.set_class(v is not None and v.valid is True, "-ok")
        verdict.set_class((v is not None and v.valid is False) or bool(st.error), "-bad")
        timeline = self.query_one("#lincheck-timeline", Static)
        if v is not None and v.valid is False:
            timeline.update(draw_counterexample(
                v.counterexample, ok_style=self.get_component_rich_style("lincheck--ok"),
                bad_style=self.get_component_rich_style("lincheck--bad"),
                muted=self.get_component_rich_style("lincheck--muted")))
        elif v is not None and v.valid is None:
            timeline.update(Text(escape(v.report, limit=2000)))
        else:
            timeline.update("")
        saved = self.query_one("#lincheck-saved", Static)
        saved.update(Text(f"history: {escape(st.saved, limit=200)}  (replay: raftui lincheck FILE)")
                     if st.saved else "")


class LincheckScreen(Screen[None]):
    DEFAULT_CSS = """
    LincheckScreen > Horizontal { height: 1fr; }
    LincheckScreen LincheckPanel { width: 3fr; }
    LincheckScreen #lincheck-side { width: 2fr; }
    LincheckScreen #lincheck-cluster { height: auto; max-height: 14; }
    """
    BINDINGS = [
        Binding("escape", "back", "Back (keeps running)", id="lincheck_back"),
        Binding("s", "stop", "Stop and check all", id="lincheck_stop"),
        Binding("n", "new", "New run", id="lincheck_new"),
    ]

    def __init__(self, source: ClusterSource, config: Config = Config(), *, tls: TlsFiles | None = None,
                 save_dir: str | None = None, in_process: bool = False) -> None:
        super().__init__()
        self.source = source
        self.config = config
        self.tls = tls
        self.save_dir = save_dir
        self.in_process = in_process

    @classmethod
    def open(cls, app: App, source: ClusterSource, config: Config = Config(), *, tls: TlsFiles | None = None,
             save_dir: str | None = None, readonly: bool = False,
             in_process: bool = False) -> "LincheckScreen | str":
        """The screen, with a run started if none is running; or why not (one line)."""
        if readonly:
            return "the linearizability check writes keys; this console is read-only"
        problem = config.check()
        if problem:
            return f"lincheck: {problem}"
        screen = cls(source, config, tls=tls, save_dir=save_dir, in_process=in_process)
        started = start(app, source, config, tls=tls, save_dir=save_dir, in_process=in_process)
        return started if isinstance(started, str) else screen

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield LincheckPanel(id="lincheck")
            with Vertical(id="lincheck-side"):
                yield ClusterPanel(id="lincheck-cluster").add_class("-active")
                yield TimelinePanel(id="lincheck-timeline-panel").add_class("-active")
        yield Footer()

    def on_mount(self) -> None:
        self._show()
        self.set_interval(0.5, self._show)

    def _show(self) -> None:
        if not self.is_attached:
            return
        session = session_of(self.app)
        state = self.source.state
        try:
            self.query_one(LincheckPanel).status = session.status() if session is not None else None
            self.query_one(ClusterPanel).state = state
            self.query_one(TimelinePanel).events = state.timeline
        except NoMatches:               # closing
            pass

    def action_stop(self) -> None:
        session = session_of(self.app)
        if session is not None:
            session.stop()

    def action_new(self) -> None:
        session = session_of(self.app)
        if session is not None and session.workload.stats().running:
            self.notify("a check is running: s stops it first", markup=False)
            return
        started = start(self.app, self.source, self.config, tls=self.tls, save_dir=self.save_dir,
                        in_process=self.in_process)
        if isinstance(started, str):
            self.notify(started, severity="error", markup=False)

    def action_back(self) -> None:
        self.dismiss(None)
