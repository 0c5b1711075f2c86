"""WAL panel: the selected member's latest raft log entries, newest on top.

Committed entries are drawn normally, not-yet-committed ones in the
uncommitted style, conf changes in their own. The entries come from
raftnode's Inspect service; against etcd the panel says so in one line.

Scrolling to the bottom (the oldest entry shown) pages back through the
member's log: the panel posts NeedOlder(member, before_index) and the screen
answers with add_older() from Inspect.WalTail(before_index), page after page,
until the member's first index. The list is a LineList (Line API): only the
visible lines are drawn, however many entries are held.
"""
from __future__ import annotations

import dataclasses

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip

from raftui.render import escape, safe_text
from raftui.source.model import ClusterState, WalEntry

from .line_list import LineList

NO_INSPECT = "WAL entries need raftnode's Inspect service (etcd has none; with auth on, root only)"


class WalList(LineList[WalEntry]):
    COMPONENT_CLASSES = {"wal--committed", "wal--uncommitted", "wal--conf", "wal--index"}

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.near_end = None        # called when the last line comes into view

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        if self.near_end is not None and self.items and self.scroll_offset.y + y == len(self.items) - 1:
            self.near_end()
        return strip

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
            # The member escaped keys and values already (engine/wal/describe.py);
            # anything else that is not printable is escaped here, the same way.
            f" {mark} ", (escape(e.text, backslash=False, limit=1000), style),
        )


class WalPanel(Vertical):
    @dataclasses.dataclass
    class NeedOlder(Message):
        """Entries of `member_id` with index < `before_index` are wanted."""
        member_id: int
        before_index: int

    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)
    selected: reactive[int] = reactive(0, init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "WAL"
        self._member = 0                       # whose entries are held
        self._older: tuple[WalEntry, ...] = ()  # below the live tail, newest first
        self._live: tuple[WalEntry, ...] = ()   # the last live tail drawn, newest first
        self._first_index = 0                  # the member's first index, once a page said it
        self._asked = 0                        # before_index of the page being fetched (0: none)
        self._subtitle = ""

    @property
    def older(self) -> tuple[WalEntry, ...]:
        return self._older

    @property
    def exhausted(self) -> bool:
        """Every entry back to the member's first index is held."""
        held = self._older or self._live
        return bool(self._first_index) and bool(held) and held[-1].index <= self._first_index

    def compose(self) -> ComposeResult:
        lines = WalList(id="wal-list")
        lines.near_end = self._near_end
        yield lines

    def watch_state(self) -> None:
        self._redraw()

    def watch_selected(self) -> None:
        self._redraw()

    def _reset(self, member_id: int) -> None:
        self._member, self._older, self._live, self._first_index, self._asked = member_id, (), (), 0, 0

    def _near_end(self) -> None:
        held = self._older or self._live
        if not held or self._asked or self.exhausted or held[-1].index <= 1:
            return
        self._asked = held[-1].index
        # Called while the list renders (the screen's context): post from our
        # own queue, or the message would stop bubbling at the screen.
        self.call_later(self._ask_older, self._member, self._asked)

    def _ask_older(self, member_id: int, before_index: int) -> None:
        self.post_message(self.NeedOlder(member_id, before_index))

    def add_older(self, member_id: int, before_index: int, entries: tuple[WalEntry, ...] | None,
                  first_index: int = 0) -> None:
        """A page asked for by NeedOlder (entries ascending; None: it failed)."""
        if member_id != self._member or before_index != self._asked:
            return                              # another member's, or stale
        self._asked = 0
        if entries is None:
            return                              # scrolling to the end again asks again
        self._first_index = first_index or 1
        oldest = (self._older or self._live or (None,))[-1]
        below = oldest.index if oldest is not None else before_index
        self._older += tuple(e for e in reversed(entries) if e.index < below)
        if not entries:
            self._first_index = max(self._first_index, below)     # nothing older is left
        self._show()

    def _redraw(self) -> None:
        lines = self.query_one(WalList)
        state = self.state
        member = state.member(self.selected) or state.leader
        if state.inspect is False or (member is not None and member.inspect is False):
            lines.empty_text = NO_INSPECT
            self._reset(0)
            lines.set_items(())
            self._set_subtitle("")
            return
        if member is None or state.wal_member != member.id:
            lines.empty_text = "waiting for the member's log ..."
            self._reset(0)
            lines.set_items(())
            return
        if member.id != self._member:
            self._reset(member.id)
        lines.empty_text = "the log is empty"
        live = tuple(reversed(state.wal))
        if self._older and live:
            # Entries that slid out of the live tail join the held older ones;
            # a gap (the tail moved on by more than it holds) drops them.
            bottom = live[-1].index
            slid = tuple(e for e in self._live if e.index < bottom)
            older = slid + tuple(e for e in self._older if e.index < bottom and (not slid or e.index < slid[-1].index))
            newest_older = older[0].index if older else 0
            if older and newest_older + 1 != bottom:
                older = ()
                self._first_index = 0
            self._older = older
        added = len([e for e in live if e.index > self._live[0].index]) if self._live and live else 0
        self._live = live
        self._show(shift=added)

    def _show(self, shift: int = 0) -> None:
        lines = self.query_one(WalList)
        scrolled = lines.scroll_offset.y
        lines.set_items(self._live + self._older)
        if shift and scrolled:
            # Newest on top: keep the lines the user scrolled to in place.
            lines.scroll_to(y=scrolled + shift, animate=False, immediate=True)
        held = len(self._live) + len(self._older)
        member = self.state.member(self._member)
        label = member.label if member else ""
        subtitle = f"{label} · {held} entries"
        if self._older:
            subtitle += f" · back to {self._older[-1].index}" + (" (the first)" if self.exhausted else "")
        self._set_subtitle(subtitle)

    def _set_subtitle(self, subtitle: str) -> None:
        if subtitle != self._subtitle:
            self._subtitle = subtitle
            self.border_subtitle = safe_text(subtitle, limit=80)
