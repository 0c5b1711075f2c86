"""The revision scrubber: one key or prefix, revision by revision.

`[` and `]` step back and forward one revision, `{` and `}` go to the
previous and next revision that changed the key or prefix, `g` jumps to one,
`home` goes to the oldest revision left (the compacted one), `end` to the head.
Each revision shows the keyspace as it was then (key, value, create, mod,
version) and what that revision changed in it (added / changed / deleted,
with the value before). A revision below the compacted one is shown as
compacted: its history is gone, and the view says so instead of failing.

Reads go through `load` (the dashboard's ClusterSource, each call with its
deadlines) in one exclusive worker: pressing `]` five times quickly reads
only what is still wanted, and a late answer for a revision left behind is
dropped. Keys and values are data: drawn through raftui/render.py.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from raftui.commands import Field
from raftui.render import safe_text
from raftui.source.scrub import SCRUB_LIMIT, RevisionView
from raftui.widgets.keys_panel import cut_cell
from raftui.widgets.table import Table

from .form import FormScreen

Load = Callable[[int], Awaitable[RevisionView]]
Find = Callable[[int, bool], Awaitable["int | str"]]
HINT = ("[ ]: previous / next revision · { }: previous / next change · g: go to revision · "
        "home / end: oldest / head · escape: back")
KEY_SHARE = 3                # the key column gets 1/KEY_SHARE of the room, the value the rest


class ScrubTable(Table):
    COMPONENT_CLASSES = {"scrub--added", "scrub--changed", "scrub--deleted"}


class ScrubScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("left_square_bracket", "step(-1)", "Previous revision", priority=True),
        Binding("right_square_bracket", "step(1)", "Next revision", priority=True),
        Binding("left_curly_bracket", "change(False)", "Previous change", priority=True),
        Binding("right_curly_bracket", "change(True)", "Next change", priority=True),
        Binding("g", "jump", "Go to revision", priority=True),
        Binding("home", "oldest", "Oldest", priority=True),
        Binding("end", "head", "Head", priority=True),
        Binding("escape,q", "close", "Back"),
    ]

    def __init__(self, key: str, prefix: bool, revision: int, load: Load,
                 known: Callable[[], tuple[int, int]], find: Find | None = None) -> None:
        """`known()`: the (head, compacted) revisions the dashboard knows now;
        `find(revision, forward)`: the next / previous revision that changed what is shown."""
        super().__init__(classes="dialog-screen")
        self.key, self.prefix = key, prefix
        self.wanted = revision
        self.view: RevisionView | None = None
        self.note = ""                       # why { or } did not move (shown under the title)
        self._load = load
        self._known = known
        self._find = find
        self._finding: tuple[bool, int] | None = None     # a { / } search running: (forward, presses left)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog scrub"):
            yield Static("", id="scrub-title", classes="dialog-title")
            yield Static("", id="scrub-note")
            yield Static("", id="scrub-status")
            keys = ScrubTable(id="scrub-keys", cursor_type="row")
            keys.add_columns("key", "value", "create", "mod", "ver")
            yield keys
            yield Static("", id="scrub-changes-title")
            changes = ScrubTable(id="scrub-changes", cursor_type="none")
            changes.add_columns("", "key", "value", "before")
            yield changes
            yield Static(Text(HINT), classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#scrub-keys").focus()
        self._title()
        self.read(self.wanted)

    # ------------------------------------------------------------- moving

    def _head(self) -> int:
        head, _ = self._known()
        return max(head, self.view.head if self.view is not None else 0)

    def _go(self, revision: int) -> None:
        revision = max(1, revision)
        head = self._head()
        if head:
            revision = min(revision, head)
        if revision != self.wanted or self.view is None or self.view.revision != revision:
            self.wanted = revision
            self._title()
            self.read(revision)

    def action_step(self, step: int) -> None:
        self._go(self.wanted + step)

    def action_oldest(self) -> None:
        _, compacted = self._known()
        self._go(max(compacted, 1))

    def action_head(self) -> None:
        self._go(self._head() or self.wanted)

    def action_jump(self) -> None:
        field = Field("revision", "Revision", "", f"1 .. {self._head() or '?'}", integer=True, minimum=1)
        self.app.push_screen(FormScreen(f"Go to a revision of {self._what()}", [(field, str(self.wanted))]),
                             lambda values: values and self._go(int(values["revision"].strip())))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_change(self, forward: bool) -> None:
        """{ / }: pressed again while a search runs, the next search starts where it ends (two
        presses, two changes); the other way cancels it and starts over from where the view is."""
        if self._find is None:
            return
        if self._finding is not None and self._finding[0] == forward:
            self._finding = (forward, self._finding[1] + 1)
            return
        self._finding = (forward, 1)
        self.find_change(self.wanted, forward)

    @work(exclusive=True, group="scrub-find", exit_on_error=False)
    async def find_change(self, start: int, forward: bool) -> None:
        """To the previous / next revision that changed the key or prefix (a watch from history)."""
        self._say(f"looking for the {'next' if forward else 'previous'} change…")
        at = start
        try:
            while True:
                found = await self._find(at, forward)
                if not self.is_attached or start != self.wanted:
                    return          # the operator moved on meanwhile
                if isinstance(found, str):
                    self._say(found)
                    if at != start:
                        self._go(at)        # as far as the presses got
                    return
                at = found
                left = self._finding[1] - 1 if self._finding is not None else 0
                if left <= 0:
                    self._say("")
                    self._go(at)
                    return
                self._finding = (forward, left)
        finally:
            if self._finding is not None and self._finding[0] == forward:
                self._finding = None

    def _say(self, text: str) -> None:
        self.note = text
        self.query_one("#scrub-note", Static).update(safe_text(text, limit=200))

    @work(exclusive=True, group="scrub", exit_on_error=False)
    async def read(self, revision: int) -> None:
        view = await self._load(revision)
        if revision != self.wanted or not self.is_attached:
            return          # the operator moved on meanwhile
        self.view = view
        self._show(view)

    # ------------------------------------------------------------- drawing

    def _what(self) -> str:
        return f"{self.key}{'*' if self.prefix else ''}" if self.key or not self.prefix else "every key"

    def _title(self) -> None:
        head, compacted = self._known()
        loading = self.view is None or self.view.revision != self.wanted
        text = (f"{self._what()} at revision {self.wanted}"
                + (f" of {max(head, self.view.head if self.view else 0)}" if head else "")
                + f" · compacted {compacted}" + (" · reading…" if loading else ""))
        self.query_one("#scrub-title", Static).update(safe_text(text, limit=200))

    def _show(self, view: RevisionView) -> None:
        self._title()
        status = self.query_one("#scrub-status", Static)
        status.set_class(view.compacted or bool(view.error), "-compacted")
        keys = self.query_one("#scrub-keys", ScrubTable)
        changes = self.query_one("#scrub-changes", ScrubTable)
        keys.clear()
        changes.clear()
        _, compacted = self._known()
        if view.compacted:
            status.update(Text(f"revision {view.revision}: compacted, its history is gone "
                               f"(kept from revision {compacted} on; home goes there)"))
            self.query_one("#scrub-changes-title", Static).update("")
            return
        if view.error:
            status.update(safe_text(f"revision {view.revision}: {view.error}", limit=300))
            self.query_one("#scrub-changes-title", Static).update("")
            return
        shown = f"{len(view.kvs)} of {view.count:,}" if view.count > len(view.kvs) else f"{view.count:,}"
        status.update(Text(f"{shown} key{'s' if view.count != 1 else ''} at revision {view.revision}"
                           + (f" (the first {SCRUB_LIMIT} read)" if view.count > SCRUB_LIMIT else "")))
        room = max(24, self.size.width - 30)
        key_width = max(8, room // KEY_SHARE)
        keys.add_rows([(cut_cell(kv.key, key_width), cut_cell(kv.value, room - key_width), Text(str(kv.create_revision)),
                        Text(str(kv.mod_revision)), Text(str(kv.version))) for kv in view.kvs])
        title = self.query_one("#scrub-changes-title", Static)
        if view.diff_compacted:
            title.update(Text(f"changes at {view.revision}: revision {view.revision - 1} is compacted, "
                              "nothing to compare with"))
            return
        n = len(view.changes)
        title.update(Text(f"changes at {view.revision} (from {view.revision - 1}): "
                          + (f"{n} key{'s' if n != 1 else ''}" if n else f"none under {self._what()}")))
        styles = {kind: changes.get_component_rich_style(f"scrub--{kind}")
                  for kind in ("added", "changed", "deleted")}
        value_width = max(6, (room - key_width) // 2)
        changes.add_rows([(Text(c.kind, style=styles[c.kind]), cut_cell(c.key, key_width),
                           cut_cell(c.value, value_width), cut_cell(c.before, value_width))
                          for c in view.changes])

    def changes_shown(self) -> list[tuple[str, str, str, str]]:
        """(kind, key, value, before) as drawn (tests)."""
        table = self.query_one("#scrub-changes", DataTable)
        return [tuple(table.get_row_at(r)[c].plain for c in range(4)) for r in range(table.row_count)]
