"""The cluster summary line under the title: quorum, leader, term, revision,
alarms with what they mean, db size against the quota, leader changes,
loop lag. Always visible; a narrow terminal drops the least important parts
(raftui/source/summary.py decides which), never the quorum or an alarm."""
from __future__ import annotations

import time

from rich.text import Text
from textual.events import Resize
from textual.reactive import reactive
from textual.widgets import Static

from raftui.render import escape
from raftui.source.model import ClusterState
from raftui.source.summary import fit, summary

SEP = " · "


class SummaryBar(Static):
    COMPONENT_CLASSES = {"summary--ok", "summary--bad", "summary--warn", "summary--info", "summary--sep"}

    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)

    def __init__(self, *, id: str | None = None, clock=time.time) -> None:
        super().__init__("", id=id)
        self._clock = clock
        self._shown: tuple = ()

    def watch_state(self) -> None:
        self._draw()

    def on_resize(self, event: Resize) -> None:
        self._draw()

    @property
    def plain(self) -> str:
        return SEP.join(text for text, _ in self._shown)

    def _draw(self) -> None:
        width = max(1, self.size.width - 2) if self.size.width else 200
        # Member names are data: escaped here, the one place they become text.
        parts = [(escape(p.text), p.kind) for p in fit(summary(self.state, self._clock()), width, SEP)]
        shown = tuple(parts)
        if shown == self._shown:
            return
        self._shown = shown
        line = Text(no_wrap=True, end="")
        for i, (text, kind) in enumerate(parts):
            if i:
                line.append(SEP, self.get_component_rich_style("summary--sep"))
            line.append(text, self.get_component_rich_style(f"summary--{kind}"))
        self.update(line, layout=False)
