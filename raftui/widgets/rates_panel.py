"""Rates panel: writes/s for the cluster, and per member the commit-index
advance per second (sparkline) and the apply lag, from the last polls; then
per member the p99 of WAL fsync, backend commit and peer round trip since
the previous scrape of its /metrics (raftui/source/metrics.py), or why not."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from rich.text import Text
from textual.widgets import Sparkline, Static

from raftui.render import safe_text
from raftui.source.metrics import MemberLatency, Quantile
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


LATENCY_HEADER = "p99 since the last /metrics scrape"


def duration(q: Quantile | None) -> Text:
    """A p99 in at most five characters: 850µs, 3.9ms, 31ms, 1.2s; '-' when
    not exported or nothing observed yet; dim when held (nothing observed
    since the last scrape)."""
    if q is None or q.seconds is None:
        return Text("-", style="dim")
    v = q.seconds
    # (the bounds are where rounding would make the next unit's text)
    if v < 0.0009995:
        text = f"{v * 1e6:.0f}µs"
    elif v < 0.00995:
        text = f"{v * 1e3:.1f}ms"
    elif v < 0.9995:
        text = f"{v * 1e3:.0f}ms"
    elif v < 9.95:
        text = f"{v:.1f}s"
    else:
        text = f"{min(v, 99999):.0f}s"
    return Text(text, style="dim" if q.held else "")


def latency_line(name: str, lat: MemberLatency, width: int = 8) -> Text:
    """One member's latency row (~37 columns with a 2-letter name). Every
    string that came from outside (the member's name, a server's error
    text) goes through safe_text."""
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    line.append_text(safe_text(f"{name[:8]:<{width}} "))
    if lat.note and lat.wal_fsync is None and lat.backend_commit is None and lat.peer_rtt is None:
        line.append_text(safe_text(lat.note, "dim", limit=120))
        return line
    for label, q in (("fsync", lat.wal_fsync), ("commit", lat.backend_commit), ("rtt", lat.peer_rtt)):
        line.append(f"{label} " if label == "fsync" else f" {label} ")
        line.append_text(duration(q))
    return line


class RatesPanel(Vertical):
    rates: reactive[tuple[RateSample, ...]] = reactive((), init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Rates"
        self._members: tuple[str, ...] = ()
        self._latency_rows: tuple[str, ...] = ()

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
            await self.query(".latency-row").remove()   # re-mounted below the new rate rows
            self._latency_rows = ()
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
        await self._show_latency(getattr(last, "latency", ()))

    async def _show_latency(self, latency: tuple[tuple[str, MemberLatency], ...]) -> None:
        """A header and a text row per member, mounted after the rate rows
        (none until the source scrapes /metrics, so panels without it look
        as before). One line each, cut with an ellipsis when narrow."""
        names = tuple(name for name, _ in latency)
        if names != self._latency_rows:
            await self.query(".latency-row").remove()
            self._latency_rows = names
            rows = [Static(LATENCY_HEADER, id="rate-lh", classes="latency-row", markup=False)] if names else []
            rows += [Static("", id=f"rate-l{i}", classes="latency-row") for i in range(len(names))]
            for row in rows:
                row.styles.height = 1
            await self.mount_all(rows)
        width = max((len(n[:8]) for n in names), default=2)
        for i, (name, lat) in enumerate(latency):
            try:
                row = self.query_one(f"#rate-l{i}", Static)
            except NoMatches:
                continue
            row.update(latency_line(name, lat, width), layout=False)
