"""Cluster panel: one row per member -- role, health, raft numbers, db size, alarms.

The leader's row is marked with a star and the leader style; a term change
flashes the term column for a moment; a member that does not answer keeps its
last numbers, dimmed, with its health saying why.
"""
from __future__ import annotations

import dataclasses
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from raftui.render import safe_lines, safe_text
from raftui.source import links
from raftui.source.actions import human_bytes
from raftui.widgets.table import Table
from raftui.source.model import ClusterState, Member

FLASH_SECONDS = 1.5
COLUMNS = ("#", "member", "role", "health", "term", "commit", "applied", "last",
           "match/next", "progress", "db size", "in use", "loop lag", "reach", "alarms / errors", "id")
SLOW_LOOP_MS = 100           # a member whose loop wakes this late is drawn in the slow style
# A panel too narrow for every column keeps the most important ones (the
# table still shows them in COLUMNS order) instead of cutting the right-hand
# ones off; the first three stay whatever the width.
# At 80x24 that is the member, its role and health, term, db size and problems
# (what the operator must see for every member), then commit.
# "reach" (whom the member talks to, by the Fault service's cuts) comes after
# commit; a narrow panel says it in the selected member's detail lines instead.
PRIORITY = ("member", "role", "health", "#", "term", "db size", "alarms / errors", "commit", "reach", "applied",
            "loop lag", "last", "in use", "match/next", "progress", "id")
ESSENTIAL = 3
PROBLEMS = "alarms / errors"
PROBLEMS_RESERVED = 40       # the problems column's share before optional columns (less if its text is shorter)
PROBLEMS_MIN = 12            # narrower than this, problems are left to the selected member's detail lines
CELL_PAD = 2                 # a DataTable cell's padding, one each side
ROLE_GLYPH = {"leader": "★", "follower": "·", "candidate": "?", "learner": "○", "unknown": " "}
HEALTH_GLYPH = {"up": "●", "down": "✕", "unknown": "?", "paused": "‖", "killed": "☠", "partitioned": "⊘"}


class ClusterTable(Table, inherit_bindings=True):
    COMPONENT_CLASSES = {
        "cluster--leader", "cluster--follower", "cluster--learner", "cluster--candidate",
        "cluster--up", "cluster--down", "cluster--paused", "cluster--unknown",
        "cluster--flash", "cluster--muted", "cluster--alarm", "cluster--slow",
    }


class ClusterPanel(Vertical):
    """Shows `state`; posts MemberSelected when the cursor moves to a member."""

    @dataclasses.dataclass
    class MemberSelected(Message):
        member_id: int

    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)
    selected: reactive[int] = reactive(0, init=False, repaint=False)

    def __init__(self, *, id: str | None = None, clock=time.monotonic) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Cluster"
        self._clock = clock
        self._flash_until = 0.0
        self._row_ids: list[int] = []
        self._layout: tuple[tuple[str, ...], int | None] = (COLUMNS, None)   # columns shown, problems width
        self._shown: dict[int, list] = {}     # member id -> the cells last drawn
        self.flashes = 0                      # term changes flashed so far
        self._detail_text: tuple[str, ...] = ()
        self._subtitle = ""
        self._links: dict | None = None      # the state's link matrix, made once per redraw

    def compose(self) -> ComposeResult:
        table = ClusterTable(id="cluster-table", cursor_type="row", zebra_stripes=False)
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table
        # On a narrow screen the table's right-hand columns are off to the
        # side: the selected member's row, spelled out (themes/cluster.tcss
        # hides it when the table fits).
        yield Static("", id="member-detail")

    @property
    def table(self) -> ClusterTable:
        return self.query_one(ClusterTable)

    @property
    def flashing(self) -> bool:
        """True while the term column flashes after a term change."""
        return self._clock() < self._flash_until

    def watch_state(self, old: ClusterState, new: ClusterState) -> None:
        if old.term and new.term != old.term:
            self.flashes += 1
            self._flash_until = self._clock() + FLASH_SECONDS
            self.set_timer(FLASH_SECONDS + 0.05, self._redraw)
        self._redraw()

    def watch_selected(self, member_id: int) -> None:
        self._detail()
        if member_id in self._row_ids:
            row = self._row_ids.index(member_id)
            if self.table.cursor_row != row:
                self.table.move_cursor(row=row)

    def on_resize(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        table = self.table
        members = self.state.members
        ids = [m.id for m in members]
        flash = self._clock() < self._flash_until
        self._links = links.matrix(self.state) if self.state.fault else None
        full = [self._cells(i, m, flash) for i, m in enumerate(members)]
        layout = choose_columns(full, table.size.width)
        names, problems_width = layout
        rows = [_shown_cells(cells, names, problems_width) for cells in full]
        if layout != self._layout or ids != self._row_ids:
            # Rebuilt: the cursor jumps to the first row meanwhile, which must
            # not select that member (prevent), and goes back to the selected one.
            with table.prevent(DataTable.RowHighlighted):
                if layout != self._layout:
                    table.clear(columns=True)
                    for name in names:
                        table.add_column(name, key=name, width=problems_width if name == PROBLEMS else None)
                    self._layout = layout
                table.clear()
                for mid, cells in zip(ids, rows):
                    table.add_row(*cells, key=str(mid))
                self._row_ids = ids
                self._shown = {mid: [_signature(c) for c in cells] for mid, cells in zip(ids, rows)}
                self.watch_selected(self.selected)
        else:
            # Only the cells that changed: every update makes the table
            # re-measure its columns, and most polls change one or two numbers.
            for mid, cells in zip(ids, rows):
                shown = self._shown[mid]
                for i, (col, value) in enumerate(zip(table.columns, cells)):
                    sig = _signature(value)
                    if shown[i] != sig:
                        shown[i] = sig
                        table.update_cell(str(mid), col, value, update_width=True)
        self._detail()
        leader = self.state.leader
        subtitle = f"leader {leader.label} · term {self.state.term}" if leader else "no leader"
        if self._subtitle != subtitle:
            self._subtitle = subtitle
            self.border_subtitle = safe_text(subtitle, limit=80)

    def _detail(self) -> None:
        m = self.state.member(self.selected)
        if m is None:
            lines = []
        else:
            p = m.progress
            lines = [
                f"{m.label} · id {m.id:x} · {m.endpoint} · {m.role} · {m.health}" if m.id > 0
                else f"{m.label} · {m.endpoint} · {m.role} · {m.health}",
                f"term {m.term} · commit {m.commit_index} · applied {m.applied_index}"
                + (f" · last {m.last_index}" if m.last_index is not None else "")
                + (f" · match/next {p.match}/{p.next} {p.state}{' (paused)' if p.paused else ''}" if p else ""),
                f"db {human_bytes(m.db_size)} · in use {human_bytes(m.db_size_in_use)}"
                + (f" · loop lag {m.loop_lag_ms} ms" if m.loop_lag_ms is not None else "")
                + (f" · alarms {', '.join(m.alarms)}" if m.alarms else ""),
            ]
            reach = self._reach(m)
            if reach is not None and not reach.whole:
                lines.append(f"reaches {reach.describe()}")
            if m.errors:
                lines.append("; ".join(m.errors))
        # Each line escaped on its own: a newline in a name or an error stays "\\n".
        text = tuple(lines)
        if text != self._detail_text:
            self._detail_text = text
            self.query_one("#member-detail", Static).update(safe_lines(lines))

    def _style(self, name: str):
        return self.table.get_component_rich_style(f"cluster--{name}")

    def _cells(self, index: int, m: Member, flash: bool) -> list:
        answering = m.health == "up"
        number_style = "" if answering else self._style("muted")
        role_style = self._style(m.role if m.role != "unknown" else "muted")
        role = Text(f"{ROLE_GLYPH.get(m.role, ' ')} {m.role}", style=role_style)
        health = Text(f"{HEALTH_GLYPH.get(m.health, '?')} {m.health}",
                      style=self._style(m.health if m.health in ("up", "paused", "unknown") else "down"))
        term = Text(str(m.term), style=self._style("flash") if flash and answering else number_style)
        p = m.progress
        progress_cols = (f"{p.match}/{p.next}", f"{p.state}{' (paused)' if p.paused else ''}") if p else ("", "")
        problems = ", ".join((*m.alarms, *m.errors))
        return [
            Text(str(index + 1)),
            safe_text(m.label, role_style if m.role == "leader" else "", limit=64),
            role,
            health,
            term,
            Text(str(m.commit_index), style=number_style),
            Text(str(m.applied_index), style=number_style),
            Text("" if m.last_index is None else str(m.last_index), style=number_style),
            Text(progress_cols[0]),
            Text(progress_cols[1]),
            Text(human_bytes(m.db_size), style=number_style),
            Text(human_bytes(m.db_size_in_use), style=number_style),
            self._lag(m.loop_lag_ms, number_style),
            self._reach_cell(m),
            safe_text(problems, self._style("alarm") if m.alarms else self._style("muted"), limit=200),
            Text(f"{m.id:x}" if m.id > 0 else ""),
        ]

    def _reach(self, m: Member) -> links.Reach | None:
        """Whom `m` talks to by the members' cuts; None where the Fault service is not known."""
        if self._links is None or m.id <= 0:
            return None
        return links.reach(self.state, m.id, self._links)

    def _reach_cell(self, m: Member) -> Text:
        reach = self._reach(m)
        if reach is None:
            return Text("")
        # Member names are data: escaped; the arrows are ours.
        return safe_text(reach.describe(), "" if reach.whole else self._style("alarm"), limit=80)

    def _lag(self, lag_ms: int | None, number_style) -> Text:
        if lag_ms is None:
            return Text("")
        return Text(f"{lag_ms} ms", style=self._style("slow") if lag_ms > SLOW_LOOP_MS else number_style)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value is not None:
            member_id = int(event.row_key.value)
            if member_id != self.selected:
                self.post_message(self.MemberSelected(member_id))


def choose_columns(rows: list[list[Text]], room: int) -> tuple[tuple[str, ...], int | None]:
    """The columns a table `room` cells wide shows (in COLUMNS order) and the
    width of the problems column (None: as wide as its text). `room` 0 (not
    laid out yet): every column."""
    widths = {name: max([len(name)] + [row[i].cell_len for row in rows]) for i, name in enumerate(COLUMNS)}
    if room <= 0:
        return COLUMNS, None
    kept: list[str] = []
    used = 0
    for rank, name in enumerate(PRIORITY):
        width = widths[name] + CELL_PAD
        if name == PROBLEMS:
            # Its share, or what is left if at least PROBLEMS_MIN: it is truncated, not dropped.
            width = max(min(widths[name], PROBLEMS_RESERVED, room - used - CELL_PAD), PROBLEMS_MIN) + CELL_PAD
        if rank < ESSENTIAL or used + width <= room:
            kept.append(name)
            used += width
    problems = None
    if PROBLEMS in kept:
        others = sum(widths[n] + CELL_PAD for n in kept if n != PROBLEMS)
        fits = room - others - CELL_PAD
        if fits < widths[PROBLEMS]:
            problems = max(PROBLEMS_MIN, fits)
    return tuple(name for name in COLUMNS if name in kept), problems


def _shown_cells(cells: list[Text], names: tuple[str, ...], problems_width: int | None) -> list[Text]:
    out = []
    for name in names:
        cell = cells[COLUMNS.index(name)]
        if name == PROBLEMS and problems_width is not None and cell.cell_len > problems_width:
            cell = cell.copy()
            cell.truncate(problems_width, overflow="ellipsis")
        out.append(cell)
    return out


def _signature(cell) -> tuple:
    """What a cell looks like: rich's Text equality ignores the base style
    (a flash or a dimmed number would compare equal)."""
    if isinstance(cell, Text):
        return (cell.plain, str(cell.style))
    return (cell, "")
