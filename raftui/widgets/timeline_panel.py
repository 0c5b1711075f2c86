"""Timeline panel: elections, leader/term changes, members down/up, alarms,
maintenance and every action's result -- newest on top, with time stamps."""
from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive

from raftui.render import count, escape
from raftui.source.model import TimelineLine

from .line_list import LineList

KIND_GLYPH = {"leader": "★", "term": "↑", "election": "⚑", "partition": "⊘", "partitioned": "⊘", "heal": "∞", "down": "✕", "up": "●", "paused": "‖", "killed": "☠",
              "alarm": "!", "compact": "⌫", "defrag": "♻", "error": "✕", "watch": "◉", "host": "⚙"}


LINE_SHOWN = 1000


class TimelineList(LineList[TimelineLine]):
    COMPONENT_CLASSES = {"timeline--time", "timeline--ok", "timeline--error", "timeline--leader"}

    def render_item(self, e: TimelineLine) -> Text:
        stamp = time.strftime("%H:%M:%S", time.localtime(e.at))
        if not e.ok:
            style = self.get_component_rich_style("timeline--error")
        elif e.kind in ("leader", "term"):
            style = self.get_component_rich_style("timeline--leader")
        else:
            style = self.get_component_rich_style("timeline--ok")
        glyph = KIND_GLYPH.get(e.kind, "·")
        return Text.assemble((stamp, self.get_component_rich_style("timeline--time")), " ",
                             (f"{glyph} {escape(e.text, limit=LINE_SHOWN)}", style))


class TimelinePanel(Vertical):
    events: reactive[tuple[TimelineLine, ...]] = reactive((), init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Timeline"

    def compose(self) -> ComposeResult:
        lines = TimelineList(id="timeline-list")
        lines.empty_text = "nothing has happened yet"
        yield lines

    def watch_events(self, events: tuple[TimelineLine, ...]) -> None:
        self.query_one(TimelineList).set_items(events)
        self.border_subtitle = count(len(events), "event")
