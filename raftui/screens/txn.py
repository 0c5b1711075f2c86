"""Why a txn went the way it went: each compare, the value it met (read at
the revision the compares were evaluated at) and whether it held; then what
the branch that ran answered. Keys and values are data (raftui/render.py)."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from raftui.render import escape, safe_lines, safe_text
from raftui.source.txn import TxnOutcome
from raftui.widgets.table import Table

CELL = 40                    # a compare or its actual value, cut to this in the table


class TxnTable(Table):
    COMPONENT_CLASSES = {"txn--held", "txn--failed"}


class TxnScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, outcome: TxnOutcome) -> None:
        super().__init__(classes="dialog-screen")
        self.outcome = outcome

    def compose(self) -> ComposeResult:
        o = self.outcome
        with Vertical(classes="dialog txn"):
            yield Static(safe_text(o.summary(), limit=400), id="txn-summary",
                         classes="dialog-title" + ("" if o.succeeded else " -failed"))
            if o.checks:
                yield Static(Text(f"compares, as the keys were at revision {o.compared_at}:"), classes="txn-label")
                yield TxnTable(id="txn-compares", cursor_type="row")
            else:
                yield Static(Text("no compares: the then-branch always runs"), classes="txn-label")
            yield Static(Text(f"{'then' if o.succeeded else 'else'}-branch answered:"), classes="txn-label")
            yield Static(safe_lines(list(o.ran) or ["(no ops)"]), id="txn-ran")
            if o.note:
                yield Static(safe_text(o.note, limit=300), classes="txn-label")
            yield Static(Text("escape / enter: close"), classes="dialog-hint")

    def on_mount(self) -> None:
        if not self.outcome.checks:
            return
        table = self.query_one(TxnTable)
        table.add_columns("#", "", "compare", "actual")
        held, failed = (table.get_component_rich_style(f"txn--{n}") for n in ("held", "failed"))
        for i, c in enumerate(self.outcome.checks, 1):
            table.add_row(Text(str(i)), Text("✓ held" if c.holds else "✗ FAILED", style=held if c.holds else failed),
                          Text(escape(c.compare.text(), limit=CELL)), Text(escape(c.actual_text(), limit=CELL)))
        table.focus()

    def rows(self) -> list[tuple[str, ...]]:
        """What the compares table shows (tests)."""
        table = self.query_one(TxnTable)
        return [tuple(cell.plain for cell in table.get_row_at(r)) for r in range(table.row_count)]

    def action_close(self) -> None:
        self.dismiss(None)
