"""`?`: every key binding in one table, from the same table that makes them."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from raftui.widgets.table import Table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, rows: list[tuple[str, str, str, str]]) -> None:
        """rows: (key, command, what it does, id)."""
        super().__init__(classes="dialog-screen")
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help"):
            yield Static("Keys  (ids can be remapped; ctrl+p searches the same commands)",
                         classes="dialog-title")
            table = Table(id="help-table", cursor_type="row", zebra_stripes=True)
            table.add_columns("key", "command", "what it does", "id")
            table.add_rows(self.rows)
            yield table
            yield Static("escape: close", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
