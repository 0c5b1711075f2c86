"""Quitting in host mode: stop the members, leave them running, or stay."""
from __future__ import annotations

from typing import Literal

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

Answer = Literal["stop", "leave", "cancel"]


class QuitScreen(ModalScreen[Answer]):
    BINDINGS = [
        Binding("s,y", "answer('stop')", "Stop them"),
        Binding("l,n", "answer('leave')", "Leave them running"),
        Binding("escape,c,q", "answer('cancel')", "Cancel"),
    ]

    def __init__(self, members: int, reattach: str) -> None:
        super().__init__(classes="dialog-screen")
        self.members = members
        self.reattach = reattach

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm", id="quit-dialog"):
            yield Static(f"Quit raftui: stop the {self.members} members it hosts?", classes="dialog-title")
            yield Static(Text(f"Left running, they keep their data and ports; come back with\n  {self.reattach}"))
            yield Static("s / y: stop them · l / n: leave them running · escape: stay",
                         classes="dialog-hint")

    def action_answer(self, answer: Answer) -> None:
        self.dismiss(answer)
