"""A key and its value shown whole (the keys panel cuts long ones to its
width): wrapped, scrollable, escaped like everywhere else (raftui/render.py)."""
from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from raftui.render import escape
from raftui.source.model import KeyValue

WHOLE_LIMIT = 1_000_000      # characters shown (a value may be up to 1.5 MiB; the rest is counted)


class ViewScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,v,enter", "close", "Close")]

    def __init__(self, title: str, kv: KeyValue | None) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text, self.kv = title, kv

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog view"):
            yield Static(Text(escape(self.title_text, limit=200)), classes="dialog-title")
            with VerticalScroll(id="view-body"):
                if self.kv is None:
                    yield Static(Text("(no such key)"), id="view-key")
                else:
                    kv = self.kv
                    yield Static(Text("key"), classes="view-label")
                    yield Static(Text(escape(kv.key, limit=WHOLE_LIMIT)), id="view-key")
                    yield Static(Text(f"value ({kv.version and 'version ' + str(kv.version)}, "
                                      f"mod revision {kv.mod_revision})"), classes="view-label")
                    yield Static(Text(escape(kv.value, limit=WHOLE_LIMIT)), id="view-value")
            yield Static(Text("escape: close"), classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
