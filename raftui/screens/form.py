"""A modal form: a few labelled inputs; enter moves on and submits at the
last one, escape cancels. Dismisses with {field name: text} or None."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from raftui.commands import Field


class FormScreen(ModalScreen[dict | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[tuple[Field, str]]) -> None:
        """`fields`: each field with its initial text."""
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            for field, value in self.fields:
                yield Label(field.label + ("" if not field.optional else " (optional)"))
                yield Input(value=value, placeholder=field.placeholder, id=f"field-{field.name}",
                            type="integer" if field.integer else "text")
            yield Static("enter: next / submit · escape: cancel", classes="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        inputs = list(self.query(Input))
        index = inputs.index(event.input)
        if index + 1 < len(inputs):
            # Screen.set_focus at once, not Widget.focus() (deferred): keys
            # already queued behind this enter (typed fast, pasted, sent over
            # a slow link) must land in the next field, not this one.
            self.set_focus(inputs[index + 1])
            return
        values = {f.name: self.query_one(f"#field-{f.name}", Input).value for f, _ in self.fields}
        missing = [f.label for f, _ in self.fields if not f.optional and not values[f.name].strip()]
        if missing:
            self.notify(f"{missing[0]} is required", severity="warning")
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)
