"""`raftui sim`: step through a simulated schedule in the console's own panels.

The cluster panel and the timeline are the dashboard's widgets, fed with the
ClusterState each simulated event left behind (recording.py). Beside them,
the messages of the last events. Nothing runs while you look: the schedule
was recorded once, so stepping back is as exact as stepping forward.

Keys: right / l next event, left / h previous, n / N next / previous change
(a fault, a leader or term change, a node down or up), space play / pause,
+ / - play faster / slower, home / end first / last event (a failing seed
ends on the failure), q quit.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static

import themes
from raftui.render import escape
from raftui.widgets.cluster_panel import ClusterPanel
from raftui.widgets.timeline_panel import TimelinePanel

from .recording import NodeLog, Recording

SPEEDS = (1, 2, 5, 10, 25, 50, 100)     # events per second while playing
MESSAGES_SHOWN = 40


class LogsView(Static):
    """Each live node's log tail on one shared index axis: the term of every entry, committed
    entries plain, uncommitted ones marked -- where a deposed leader's entries differ (Figure 8)."""

    DEFAULT_CSS = """
    LogsView { height: auto; border: round $primary; padding: 0 1; }
    LogsView > .logs--committed { color: $committed; }
    LogsView > .logs--uncommitted { color: $uncommitted; text-style: $uncommitted-text-style; }
    LogsView > .logs--muted { color: $muted; }
    LogsView > .logs--leader { color: $leader; text-style: bold; }
    """
    COMPONENT_CLASSES = {"logs--committed", "logs--uncommitted", "logs--muted", "logs--leader"}
    WIDTH = 16                      # entries shown

    def show(self, logs: tuple[NodeLog, ...], leader: int) -> None:
        style = self.get_component_rich_style
        if not logs:
            self.update(Text("no live node"))
            return
        top = max(x.last for x in logs)
        # As many entries as fit the panel (4 columns each beside the node
        # and its commit), so a row never wraps and indexes stay aligned.
        room = self.content_size.width
        width = self.WIDTH if room <= 0 else max(3, min(self.WIDTH, (room - 6 - 14) // 4))
        lo = max(1, top - width + 1)
        idx = range(lo, top + 1)
        out = Text(no_wrap=True, end="")
        out.append("index " + "".join(f"{i % 1000:>4}" for i in idx), style("logs--muted"))
        for x in logs:
            terms = dict(x.terms)
            out.append("\n")
            who = f"s{x.node}{' ★' if x.node == leader else '  '}"
            out.append(f"{who:<6}", style("logs--leader") if x.node == leader else "")
            for i in idx:
                t = terms.get(i)
                if t is None:
                    out.append(f"{'·' if i > x.last else ' ':>4}", style("logs--muted"))
                else:
                    out.append(f"{t:>4}", style("logs--committed" if i <= x.commit else "logs--uncommitted"))
            out.append(f"   commit {x.commit}", style("logs--muted"))
        self.update(out)


class SimApp(App[None]):
    TITLE = "raftui sim"
    CSS_PATH = themes.STYLESHEETS
    DEFAULT_CSS = """
    #sim-body { height: 1fr; }
    #sim-left { width: 3fr; }
    #sim-cluster { height: auto; max-height: 12; }
    #sim-messages { width: 2fr; border: round $primary; padding: 0 1; }
    #sim-status { height: auto; padding: 0 1; background: $panel; }
    #sim-status.-failed { color: $down; text-style: bold; }
    #sim-note { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        # priority: the cluster table (focused) would take the arrows and home/end for its cursor.
        Binding("right,l", "step(1)", "Next", id="sim_next", priority=True),
        Binding("left,h", "step(-1)", "Previous", id="sim_previous", priority=True),
        Binding("n", "change(1)", "Next change", id="sim_next_change"),
        Binding("N", "change(-1)", "Previous change", id="sim_previous_change"),
        Binding("space", "play", "Play/pause", id="sim_play"),
        Binding("plus,equals_sign", "speed(1)", "Faster", id="sim_faster", key_display="+"),
        Binding("minus", "speed(-1)", "Slower", id="sim_slower", key_display="-"),
        Binding("home", "jump(0)", "First", id="sim_first", priority=True),
        Binding("end", "jump(-1)", "Last", id="sim_last", priority=True),
        Binding("q", "quit", "Quit", id="sim_quit"),
    ]

    def __init__(self, recording: Recording, theme: str = themes.DEFAULT_THEME) -> None:
        super().__init__()
        self.rec = recording
        self.k = 0
        self.playing = False
        self.speed = 3                  # index into SPEEDS
        self._timer = None
        for t in themes.THEMES.values():
            self.register_theme(t)
        self.theme = themes.THEMES[theme].name

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(themes.VARIABLE_DEFAULTS)

    def compose(self) -> ComposeResult:
        yield Static("", id="sim-status")
        with Horizontal(id="sim-body"):
            with Vertical(id="sim-left"):
                yield ClusterPanel(id="sim-cluster").add_class("-active")
                yield LogsView("", id="sim-logs")
                yield TimelinePanel(id="sim-timeline").add_class("-active")
            yield Static("", id="sim-messages")
        yield Static("", id="sim-note")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sim-messages", Static).border_title = "Messages (newest first)"
        self.query_one(LogsView).border_title = "Logs: the term of each entry (uncommitted marked)"
        self.show()

    # ----------------------------------------------------------------- drawing

    def show(self) -> None:
        rec, k = self.rec, self.k
        if not rec.frames:
            self.query_one("#sim-status", Static).update("the simulator reported nothing")
            return
        f = rec.frames[k]
        self.query_one(ClusterPanel).state = f.state
        self.query_one(LogsView).show(f.logs, f.state.leader_id)
        self.query_one(TimelinePanel).events = rec.timeline_at(k)
        playing = f"  ▶ {SPEEDS[self.speed]}/s" if self.playing else ""
        verdict = ("FAILED" if rec.failure else "passed") if k == len(rec.frames) - 1 else ""
        weather = f" · {rec.profile}" if rec.profile else ""
        status = (f"seed {rec.seed} · {rec.nodes} voters{weather} · {rec.steps} steps · event {k + 1}/{len(rec.frames)}"
                  f" · tick {f.tick}{playing}" + (f" · {verdict}" if verdict else "")
                  + (" · (recording truncated)" if rec.truncated else ""))
        st = self.query_one("#sim-status", Static)
        st.update(Text(status))
        st.set_class(bool(rec.failure) and k == len(rec.frames) - 1, "-failed")
        msgs = [x.note for x in rec.frames[max(0, k - 400):k + 1] if x.message][-MESSAGES_SHOWN:]
        self.query_one("#sim-messages", Static).update(Text("\n".join(escape(m, limit=120)
                                                                       for m in reversed(msgs))))
        note = f"{escape(f.note, limit=400)}"
        if k == len(rec.frames) - 1:
            note += (f"\nreplay: {rec.replay}" if rec.failure else f"\n{rec.summary}")
        self.query_one("#sim-note", Static).update(Text(note))

    # ----------------------------------------------------------------- keys

    def _go(self, k: int) -> None:
        k = max(0, min(len(self.rec.frames) - 1, k))
        if k != self.k:
            self.k = k
            self.show()

    def action_step(self, n: int) -> None:
        self._go(self.k + n)

    def action_change(self, direction: int) -> None:
        self._go(self.rec.next_change(self.k, direction))

    def action_jump(self, where: int) -> None:
        self._go(0 if where == 0 else len(self.rec.frames) - 1)

    def action_speed(self, step: int) -> None:
        self.speed = max(0, min(len(SPEEDS) - 1, self.speed + step))
        if self.playing:
            self._arm()
        self.show()

    def action_play(self) -> None:
        self.playing = not self.playing
        if self.playing:
            if self.k >= len(self.rec.frames) - 1:
                self.k = 0
            self._arm()
        elif self._timer is not None:
            self._timer.stop()
        self.show()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(1.0 / SPEEDS[self.speed], self._tick)

    def _tick(self) -> None:
        if self.k >= len(self.rec.frames) - 1:
            self.playing = False
            if self._timer is not None:
                self._timer.stop()
            self.show()
            return
        self.action_step(1)
