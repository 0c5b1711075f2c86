"""A modal form: a few labelled inputs; enter moves on and submits at the
last one, escape cancels. Dismisses with {field name: text} or None.

Nothing leaves the form unchecked: a required field left empty or a number
that is not a whole number in the field's range (a negative delay, a
revision beyond int64, `1e3`) is refused with an inline error under that
field, which keeps the focus; the form stays open."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from rich.text import Text
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
        self.problems: dict[str, str] = {}    # field name -> the inline error shown under it

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text), classes="dialog-title")
            for field, value in self.fields:
                yield Label(Text(field.label + ("" if not field.optional else " (optional)")))
                # type "text" for numbers too: an "integer" Input drops the
                # keys it does not like (1e3 would arrive as 13); the check
                # below says what is wrong instead.
                yield FormInput(value=value, placeholder=field.placeholder, id=f"field-{field.name}")
                yield Static("", id=f"error-{field.name}", classes="field-error")
            hint = "enter: next / submit · escape: cancel"
            if any(f.escapes for f, _ in self.fields):
                hint += " · escapes as shown: \\xff \\n \\t \\\\"
            yield Static(Text(hint), classes="dialog-hint")

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
        first_bad = None
        self.problems = {}
        for f, _ in self.fields:
            problem = f.check(values[f.name])
            if problem:
                self.problems[f.name] = problem
            error = self.query_one(f"#error-{f.name}", Static)
            error.update(Text(problem))
            error.set_class(bool(problem), "-shown")
            if problem and first_bad is None:
                first_bad = f
        if first_bad is not None:
            self.set_focus(self.query_one(f"#field-{first_bad.name}", Input))
            return
        self.dismiss(values)


    def action_cancel(self) -> None:
        self.dismiss(None)
