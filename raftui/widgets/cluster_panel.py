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
from textual.widgets import DataTable

from raftui.source.actions import human_bytes
from raftui.source.model import ClusterState, Member

FLASH_SECONDS = 1.5
COLUMNS = ("#", "member", "role", "health", "term", "commit", "applied", "last",
           "match/next", "progress", "db size", "in use", "alarms / errors", "id")
ROLE_GLYPH = {"leader": "★", "follower": "·", "candidate": "?", "learner": "○", "unknown": " "}
HEALTH_GLYPH = {"up": "●", "down": "✕", "unknown": "?", "paused": "‖", "killed": "☠", "partitioned": "⊘"}


class ClusterTable(DataTable, inherit_bindings=True):
    COMPONENT_CLASSES = {
        "cluster--leader", "cluster--follower", "cluster--learner", "cluster--candidate",
        "cluster--up", "cluster--down", "cluster--paused", "cluster--unknown",
        "cluster--flash", "cluster--muted", "cluster--alarm",
    }


class ClusterPanel(Vertical):
    """Shows `state`; posts MemberSelected when the cursor moves to a member."""

    @dataclasses.dataclass
    class MemberSelected(Message):
        member_id: int

    state: reactive[ClusterState] = reactive(ClusterState, always_update=False, init=False)
    selected: reactive[int] = reactive(0, init=False)

    def __init__(self, *, id: str | None = None, clock=time.monotonic) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Cluster"
        self._clock = clock
        self._flash_until = 0.0
        self._row_ids: list[int] = []

    def compose(self) -> ComposeResult:
        table = ClusterTable(id="cluster-table", cursor_type="row", zebra_stripes=False)
        table.add_columns(*COLUMNS)
        yield table

    @property
    def table(self) -> ClusterTable:
        return self.query_one(ClusterTable)

    def watch_state(self, old: ClusterState, new: ClusterState) -> None:
        if old.term and new.term != old.term:
            self._flash_until = self._clock() + FLASH_SECONDS
            self.set_timer(FLASH_SECONDS + 0.05, self._redraw)
        self._redraw()

    def watch_selected(self, member_id: int) -> None:
        if member_id in self._row_ids:
            row = self._row_ids.index(member_id)
            if self.table.cursor_row != row:
                self.table.move_cursor(row=row)

    def _redraw(self) -> None:
        table = self.table
        members = self.state.members
        ids = [m.id for m in members]
        flash = self._clock() < self._flash_until
        rows = [self._cells(i, m, flash) for i, m in enumerate(members)]
        if ids != self._row_ids:
            table.clear()
            for mid, cells in zip(ids, rows):
                table.add_row(*cells, key=str(mid))
            self._row_ids = ids
            self.watch_selected(self.selected)
        else:
            for mid, cells in zip(ids, rows):
                for col, value in zip(table.columns, cells):
                    table.update_cell(str(mid), col, value)
        leader = self.state.leader
        self.border_subtitle = (f"leader {leader.label} · term {self.state.term}" if leader
                                else "no leader")

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
            str(index + 1),
            Text(m.label, style=role_style if m.role == "leader" else ""),
            role,
            health,
            term,
            Text(str(m.commit_index), style=number_style),
            Text(str(m.applied_index), style=number_style),
            Text("" if m.last_index is None else str(m.last_index), style=number_style),
            progress_cols[0],
            progress_cols[1],
            Text(human_bytes(m.db_size), style=number_style),
            Text(human_bytes(m.db_size_in_use), style=number_style),
            Text(problems, style=self._style("alarm") if m.alarms else self._style("muted")),
            f"{m.id:x}" if m.id > 0 else "",
        ]

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value is not None:
            member_id = int(event.row_key.value)
            if member_id != self.selected:
                self.post_message(self.MemberSelected(member_id))
