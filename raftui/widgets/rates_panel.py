"""Rates panel: writes/s for the cluster, and per member the commit-index
advance per second (sparkline) and the apply lag, from the last polls."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widgets import Sparkline, Static

from raftui.render import safe_text
from raftui.source.model import RateSample

SPARK_POINTS = 60


class RateRow(Horizontal):
    """A label with the latest value, and a sparkline of the history."""

    def __init__(self, label: str, *, id: str | None = None, member: bool = False) -> None:
        super().__init__(id=id, classes="rate-row member-rate" if member else "rate-row")
        self.label = label
        self._text = label

    def compose(self) -> ComposeResult:
        yield Static(safe_text(self.label), classes="rate-label")
        yield Sparkline([], classes="rate-spark")

    def show(self, text: str, values: list[float]) -> None:
        if text != self._text:
            self._text = text
            self.query_one(".rate-label", Static).update(safe_text(text), layout=False)
        self.query_one(Sparkline).data = values or [0.0]


class RatesPanel(Vertical):
    rates: reactive[tuple[RateSample, ...]] = reactive((), init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Rates"
        self._members: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        yield RateRow("writes/s", id="rate-writes")

    async def watch_rates(self, rates: tuple[RateSample, ...]) -> None:
        recent = rates[-SPARK_POINTS:]
        if not recent:
            return
        last = recent[-1]
        names = tuple(name for name, _ in last.commit_per_s)
        if names != self._members:
            await self.query(".member-rate").remove()
            self._members = names
            await self.mount_all([RateRow(name, id=f"rate-m{i}", member=True)
                                  for i, name in enumerate(names)])
        subtitle = "Inspect.Rates" if last.from_inspect else "from polls (no rate counters)"
        if self.border_subtitle != subtitle:
            self.border_subtitle = subtitle
        writes = [s.writes_per_s for s in recent]
        self.query_one("#rate-writes", RateRow).show(f"writes/s {last.writes_per_s:7.1f}", writes)
        for i, name in enumerate(names):
            series = [dict(s.commit_per_s).get(name, 0.0) for s in recent]
            lag = dict(last.apply_lag).get(name, 0)
            try:
                row = self.query_one(f"#rate-m{i}", RateRow)
            except NoMatches:  # still being mounted by an earlier update; the next poll fills it
                continue
            row.show(f"{name[:8]:<8} commit/s {series[-1]:7.1f} lag {lag}", series)
