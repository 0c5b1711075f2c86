"""The link matrix, over the dashboard: every directed link between members,
edited from the keyboard (arrows to move; space cuts or opens the link one
way; d sets its drop %, l its delay; H heals every fault; escape closes).

The screen only asks: each edit goes to the dashboard's `on_edit`, which
runs it as a command of the command table (its question, default No, its
worker and its deadline); the state comes back down from the dashboard's
polls, so the matrix shows what the members say, not what was asked.
"""
from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Static

from raftui.source.model import ClusterState
from raftui.widgets.link_matrix import LinkMatrix

# kind, source member id, destination member id
OnEdit = Callable[[str, int, int], None]

HINT = "arrows: a link · space: cut/open one way · d: drop % · l: delay ms · H: heal all · escape: back"


class LinksScreen(ModalScreen[None]):
    # priority: the dialog an edit opens is pushed before the next key is read
    # (a "y" typed right after space lands in the question, as on the dashboard).
    BINDINGS = [
        Binding("space", "edit('toggle')", "Cut/open", priority=True),
        Binding("d", "edit('drop')", "Drop %", priority=True),
        Binding("l", "edit('delay')", "Delay", priority=True),
        Binding("H", "edit('heal')", "Heal all", priority=True),
        Binding("escape,q", "close", "Back"),
    ]

    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)

    def __init__(self, state: ClusterState, on_edit: OnEdit) -> None:
        super().__init__(classes="dialog-screen")
        self._initial = state
        self.on_edit = on_edit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog links"):
            yield Static(Text("Links: row sends to column"), classes="dialog-title")
            yield LinkMatrix(id="link-matrix")
            yield Static(Text(HINT), classes="dialog-hint")

    def on_mount(self) -> None:
        self.state = self._initial
        self.query_one("#link-table").focus()

    def watch_state(self, state: ClusterState) -> None:
        self.query_one(LinkMatrix).state = state

    @property
    def matrix(self) -> LinkMatrix:
        return self.query_one(LinkMatrix)

    def action_edit(self, kind: str) -> None:
        if kind == "heal":
            self.on_edit(kind, 0, 0)
            return
        picked = self.matrix.highlighted()
        if picked is None:
            self.notify("pick a link off the diagonal first", severity="warning", timeout=3)
            return
        self.on_edit(kind, *picked)

    def action_close(self) -> None:
        self.dismiss(None)
