"""Yes/no before anything destructive or disruptive. The question says what
will happen; only y does it: enter, n and escape all answer no (No is the
default, so a stray enter typed for something else does nothing)."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,enter,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, yes: str = "yes, do it", no: str = "no") -> None:
        super().__init__(classes="dialog-screen")
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog confirm"):
            yield Static(Text(self.question), classes="dialog-title", id="confirm-question")   # may quote a key
            yield Static(Text(f"y: {self.yes} · n / enter / escape: {self.no} (default)"), classes="dialog-hint")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
