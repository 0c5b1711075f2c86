"""WAL panel: the selected member's latest raft log entries, newest on top.

Committed entries are drawn normally, not-yet-committed ones in the
uncommitted style, conf changes in their own. The entries come from
raftnode's Inspect service; against etcd the panel says so in one line.
"""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive

from raftui.source.model import ClusterState, WalEntry

from .line_list import LineList

NO_INSPECT = "WAL entries need raftnode's Inspect service (etcd has none)"


class WalList(LineList[WalEntry]):
    COMPONENT_CLASSES = {"wal--committed", "wal--uncommitted", "wal--conf", "wal--index"}

    def render_item(self, e: WalEntry) -> Text:
        if not e.committed:
            style = self.get_component_rich_style("wal--uncommitted")
        elif e.type != "normal":
            style = self.get_component_rich_style("wal--conf")
        else:
            style = self.get_component_rich_style("wal--committed")
        mark = "✓" if e.applied else ("c" if e.committed else "…")
        return Text.assemble(
            (f"{e.index:>8} t{e.term:<4}", self.get_component_rich_style("wal--index")),
            f" {mark} ", (e.text, style),
        )


class WalPanel(Vertical):
    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)
    selected: reactive[int] = reactive(0, init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "WAL"

    def compose(self) -> ComposeResult:
        yield WalList(id="wal-list")

    def watch_state(self) -> None:
        self._redraw()

    def watch_selected(self) -> None:
        self._redraw()

    def _redraw(self) -> None:
        lines = self.query_one(WalList)
        state = self.state
        member = state.member(self.selected) or state.leader
        if state.inspect is False or (member is not None and member.inspect is False):
            lines.empty_text = NO_INSPECT
            lines.set_items(())
            self.border_subtitle = ""
            return
        if member is None or state.wal_member != member.id:
            lines.empty_text = "waiting for the member's log ..."
            lines.set_items(())
            return
        lines.empty_text = "the log is empty"
        lines.set_items(tuple(reversed(state.wal)))
        subtitle = f"{member.label} · {len(state.wal)} entries"
        if self.border_subtitle != subtitle:
            self.border_subtitle = subtitle
