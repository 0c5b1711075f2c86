"""A modal form: a few labelled inputs; enter moves on and submits at the
last one, escape cancels. Dismisses with {field name: text} or None."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from raftui.commands import Field


class FormInput(Input):
    """enter moves to the next field (or submits at the last) as a priority
    binding: the app runs it itself, before it hands the next key to the
    focused field, so keys that arrive in one burst (a paste, tmux
    send-keys, a slow link) land in the field they were typed for. Through
    Input.Submitted, they would already be queued to the old field."""

    BINDINGS = [Binding("enter", "next_field", "Next", show=False, priority=True)]

    class Finished(Message):
        """enter in the last field; it travels through this field's own queue,
        behind the keys typed into it, so the values are complete when read."""

    def action_next_field(self) -> None:
        screen = self.screen
        if isinstance(screen, FormScreen):
            screen.advance(self)


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
                yield FormInput(value=value, placeholder=field.placeholder, id=f"field-{field.name}",
                                type="integer" if field.integer else "text")
            yield Static("enter: next / submit · escape: cancel", classes="dialog-hint")

    def advance(self, current: Input) -> None:
        inputs = list(self.query(FormInput))
        index = inputs.index(current)
        if index + 1 < len(inputs):
            self.set_focus(inputs[index + 1])
        else:
            current.post_message(FormInput.Finished())

    def on_form_input_finished(self, event: FormInput.Finished) -> None:
        event.stop()
        values = {f.name: self.query_one(f"#field-{f.name}", Input).value for f, _ in self.fields}
        missing = [f.label for f, _ in self.fields if not f.optional and not values[f.name].strip()]
        if missing:
            self.notify(f"{missing[0]} is required", severity="warning")
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)
