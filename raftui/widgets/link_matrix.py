"""The link matrix: one row per sending member, one column per receiving one;
each cell is the directed link row -> column (cut, drop %, delay ms), as the
members' Fault statuses say (raftui/source/links.py reads them).

Below the grid, the highlighted link spelled out (which member's rule acts
on it) and whom each of its two ends reaches. Data comes down as `state`;
the cursor's link goes up as LinkHighlighted. No gRPC here.
"""
from __future__ import annotations

import dataclasses

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from raftui.render import safe_lines, safe_text
from raftui.source import links
from raftui.source.model import ClusterState, Member
from raftui.widgets.table import Table

CELL = {"ok": "·", "self": "—", "unknown": "?"}
LABEL_WIDTH = 12        # a member's name in the first column and the headers, cut to this


def cell_text(link: links.Link | None) -> tuple[str, str]:
    """A link as a short cell and its style name: "✗ cut", "30%", "+200ms", "30% +200", "·"."""
    if link is None:
        return CELL["self"], "self"
    if link.cut:
        return "✗ cut", "cut"
    parts = []
    if link.drop:
        parts.append(f"{link.drop:.0%}")
    if link.delay_ms:
        parts.append(f"+{link.delay_ms}ms" if not link.drop else f"+{link.delay_ms}")
    if parts:
        return " ".join(parts), "slow"
    if not link.known:
        return CELL["unknown"], "unknown"
    return CELL["ok"], "ok"


def describe(link: links.Link, names: dict[int, str]) -> str:
    """The highlighted link in words, for the line under the grid."""
    src, dst = names.get(link.src, "?"), names.get(link.dst, "?")
    if link.cut:
        what = f"cut: {src}'s messages to {dst} are lost"
    elif link.active:
        what = f"drop {link.drop:.0%} · delay {link.delay_ms} ms"
    else:
        what = "open"
    by = f" (rules: {', '.join(link.by)})" if link.by else ""
    unknown = "" if link.known else " · one end's faults not known (not answering)"
    return f"{src} → {dst}: {what}{by}{unknown}"


class LinkTable(Table):
    COMPONENT_CLASSES = {"links--cut", "links--slow", "links--ok", "links--self", "links--unknown",
                         "links--from"}


class LinkMatrix(Vertical):
    @dataclasses.dataclass
    class LinkHighlighted(Message):
        src: int
        dst: int

    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._ids: list[int] = []
        self._matrix: dict[tuple[int, int], links.Link] = {}
        self._shown: dict[tuple[int, int], tuple[str, str]] = {}

    def compose(self) -> ComposeResult:
        yield LinkTable(id="link-table", cursor_type="cell", zebra_stripes=False)
        yield Static("", id="link-detail")
        yield Static("", id="link-reach")

    @property
    def table(self) -> LinkTable:
        return self.query_one(LinkTable)

    def members(self) -> list[Member]:
        return [m for m in self.state.members if m.id > 0]

    def highlighted(self) -> tuple[int, int] | None:
        """(src id, dst id) of the link under the cursor; None on the names column or the diagonal."""
        row, col = self.table.cursor_coordinate
        if not (0 <= row < len(self._ids)) or not (1 <= col <= len(self._ids)):
            return None
        src, dst = self._ids[row], self._ids[col - 1]
        return None if src == dst else (src, dst)

    def link(self, src: int, dst: int) -> links.Link | None:
        return self._matrix.get((src, dst))

    def watch_state(self, state: ClusterState) -> None:
        members = self.members()
        ids = [m.id for m in members]
        self._matrix = links.matrix(state)
        table = self.table
        cells = {}
        rows = []
        for a in members:
            row = [safe_text(a.label, self._style("from"), limit=LABEL_WIDTH)]
            for b in members:
                text, style = cell_text(self._matrix.get((a.id, b.id)))
                cells[(a.id, b.id)] = (text, style)
                row.append(Text(text, style=self._style(style)))
            rows.append(row)
        if ids != self._ids:
            cursor = table.cursor_coordinate
            with table.prevent(DataTable.CellHighlighted):
                table.clear(columns=True)
                table.add_column(Text("from \\ to"), key="from")
                for m in members:
                    table.add_column(safe_text(m.label, limit=LABEL_WIDTH), key=str(m.id))
                for m, row in zip(members, rows):
                    table.add_row(*row, key=str(m.id))
            self._ids = ids
            self._shown = cells
            # The first link off the diagonal (row 0 -> column 2), or where the cursor was.
            if len(ids) > 1:
                table.cursor_coordinate = cursor if (cursor.column >= 1 and cursor.row < len(ids)
                                                     and cursor.row != cursor.column - 1) else Coordinate(0, 2)
        else:
            for (a, b), value in cells.items():
                if self._shown.get((a, b)) != value:
                    self._shown[(a, b)] = value
                    table.update_cell(str(a), str(b), Text(value[0], style=self._style(value[1])),
                                      update_width=True)
        self._explain()

    def _style(self, name: str):
        return self.table.get_component_rich_style(f"links--{name}")

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        event.stop()
        if event.coordinate.column == 0 and len(self._ids) > 1:
            # The names column holds no link: on to the first link of the row.
            self.table.cursor_coordinate = Coordinate(event.coordinate.row, 2 if event.coordinate.row == 0 else 1)
            return
        self._explain()
        picked = self.highlighted()
        if picked is not None:
            self.post_message(self.LinkHighlighted(*picked))

    def _explain(self) -> None:
        names = {m.id: m.label for m in self.members()}
        picked = self.highlighted()
        if picked is None:
            detail = "a member has no link to itself: pick a cell off the diagonal"
            reach_lines = []
        else:
            detail = describe(self._matrix.get(picked, links.Link(*picked)), names)
            reach_lines = [f"{names[i]} reaches {links.reach(self.state, i, self._matrix).describe()}"
                           for i in picked]
        self.query_one("#link-detail", Static).update(safe_text(detail, limit=300))
        self.query_one("#link-reach", Static).update(safe_lines(reach_lines))
