"""`:` command mode (k9s): one line at the bottom, completed as typed (right
arrow or end takes the suggestion), enter runs it, escape goes back.

    :members  :timeline  :wal  :keys /prefix  :watchers  :rates
    :watch key   :watch prefix*   :defrag n2   :transfer n3   :compact 1200
    :theme light   :q   and any command by its id (:write, :snapshot, ...)

Parsing lives here (`parse`, no UI); the dashboard runs what it returns.
"""
from __future__ import annotations

import dataclasses

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

PANELS = ("members", "cluster", "timeline", "wal", "keys", "watchers", "rates")
WITH_MEMBER = ("defrag", "transfer", "kill", "restart", "pause", "resume", "partition", "promote", "remove",
               "drop_delay")
THEMES = ("dark", "light", "mono")


@dataclasses.dataclass(frozen=True)
class Line:
    """What a command line asks for: kind = panel / watch / command / theme / quit / unknown."""
    kind: str
    name: str = ""             # panel id, command id, theme name
    arg: str = ""              # key or prefix, member name, revision
    problem: str = ""


def parse(text: str, command_ids: set[str]) -> Line:
    words = text.strip().removeprefix(":").split(None, 1)
    if not words:
        return Line("unknown", problem="type a command (members, keys /prefix, watch k, defrag n2, q, ...)")
    verb, arg = words[0].lower(), (words[1].strip() if len(words) > 1 else "")
    if verb in ("q", "quit", "q!"):
        return Line("quit")
    if verb in PANELS:
        return Line("panel", "cluster" if verb == "members" else verb, arg)
    if verb == "theme":
        if arg not in THEMES:
            return Line("unknown", problem=f"theme: one of {', '.join(THEMES)}")
        return Line("theme", arg)
    if verb == "watch":
        return Line("watch", arg=arg) if arg else Line("unknown", problem="watch: which key (key* for a prefix)?")
    if verb == "compact" and arg:
        return Line("command", "compact", arg)
    if verb in WITH_MEMBER and arg:
        return Line("command", verb, arg)
    if verb in command_ids:
        return Line("command", verb, arg)
    return Line("unknown", problem=f"no command {verb!r} (? lists them)")


def completions(command_ids: set[str], members: list[str]) -> list[str]:
    """Everything the line can say, for completion as typed."""
    out = ["members", "timeline", "wal", "keys ", "watchers", "rates", "watch ", "q", "quit"]
    out += [f"theme {t}" for t in THEMES]
    out += [f"{verb} {m}" for verb in WITH_MEMBER if verb in command_ids for m in members]
    out += sorted(command_ids - set(out))
    return out


class CommandLineScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, candidates: list[str]) -> None:
        super().__init__(classes="command-line-screen")
        self.candidates = candidates

    def compose(self) -> ComposeResult:
        with Vertical(id="command-line"):
            yield Static(Text("enter: run · right/end: take the suggestion · escape: back"), classes="dialog-hint")
            yield Input(placeholder="members · keys /prefix · watch key · defrag n2 · compact 1200 · theme light · q",
                        suggester=SuggestFromList(self.candidates, case_sensitive=False), id="command-input")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class FilterLineScreen(ModalScreen[str | None]):
    """`/`: a live filter on the keys panel -- every change filters at once;
    enter keeps it, escape clears it and goes back."""

    BINDINGS = [Binding("escape", "clear", "Clear")]

    def __init__(self, initial: str, on_change) -> None:
        super().__init__(classes="command-line-screen")
        self.initial, self.on_change = initial, on_change

    def compose(self) -> ComposeResult:
        with Vertical(id="command-line"):
            yield Static(Text("keys with this prefix, as typed (escapes as shown: \\xff \\n) · enter: keep · "
                              "escape: clear"), classes="dialog-hint")
            yield Input(value=self.initial, placeholder="prefix, e.g. /app/", id="filter-input")

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.on_change(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_clear(self) -> None:
        self.on_change("")
        self.dismiss(None)
