"""Guided maintenance with progress (raftui/source/recovery.py): NOSPACE
recovery and the rolling defrag. Each step as it goes (· waiting, ▶ running,
✓ done, ✗ failed, – skipped) with what it did; the verdict at the bottom.

The steps run in this screen's worker; escape while they run stops after the
call in flight (a defragment already sent finishes on its member), escape
after the end goes back. Server text is drawn through raftui/render.py.
"""
from __future__ import annotations

import dataclasses
from typing import AsyncIterator, Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from raftui.render import escape, safe_text
from raftui.source.recovery import Progress

GLYPH = {"pending": "·", "running": "▶", "done": "✓", "failed": "✗", "skipped": "–"}
Start = Callable[[], AsyncIterator[Progress]]


class StepList(Static):
    COMPONENT_CLASSES = {"recovery--pending", "recovery--running", "recovery--done", "recovery--failed",
                         "recovery--skipped", "recovery--detail"}


class RecoveryScreen(ModalScreen[Progress | None]):
    BINDINGS = [Binding("escape,q", "close", "Stop / back")]

    def __init__(self, first: Progress, start: Start,
                 on_finish: Callable[[Progress], None] | None = None) -> None:
        super().__init__(classes="dialog-screen")
        self.progress = first
        self._start = start
        self._on_finish = on_finish

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog recovery"):
            yield Static(Text(self.progress.name), classes="dialog-title")
            with VerticalScroll(id="recovery-scroll"):
                yield StepList("", id="recovery-steps")
            yield Static("", id="recovery-summary")
            yield Static(Text("escape: stop (while running) / back"), classes="dialog-hint")

    def on_mount(self) -> None:
        self._show(self.progress)
        self.steps()

    @work(exclusive=True, group="recovery", exit_on_error=False)
    async def steps(self) -> None:
        async for progress in self._start():
            if not self.is_attached:
                return
            self.progress = progress
            self._show(progress)
        if self._on_finish is not None:
            self._on_finish(self.progress)

    def _show(self, progress: Progress) -> None:
        widget = self.query_one(StepList)
        lines = Text()
        current = 0                     # the line of the step running (or that failed): kept in view
        for i, step in enumerate(progress.steps, 1):
            if step.state in ("running", "failed"):
                current = len(lines.plain.splitlines())
            style = widget.get_component_rich_style(f"recovery--{step.state}")
            lines.append(f"{GLYPH[step.state]} {i}. {escape(step.title, limit=200)}", style=style)
            if step.detail:
                lines.append(f"\n     {escape(step.detail, limit=300)}",
                             style=widget.get_component_rich_style("recovery--detail"))
            lines.append("\n")
        widget.update(lines)
        self.query_one("#recovery-scroll").scroll_to(y=max(0, current - 2), animate=False)
        summary = self.query_one("#recovery-summary", Static)
        summary.set_class(progress.ok is False, "-failed")
        summary.set_class(progress.ok is True, "-ok")
        summary.update(safe_text(progress.summary, limit=400) if progress.finished else
                       Text("running…"))

    def action_close(self) -> None:
        if not self.progress.finished:
            self.workers.cancel_group(self, "recovery")
            running = self.progress.running
            at = self.progress.steps.index(running) + 1 if running is not None else 0
            self.progress = dataclasses.replace(
                self.progress, finished=True, ok=False,
                summary=f"{self.progress.name} stopped by the operator" + (f" at step {at}" if at else ""))
            if self._on_finish is not None:
                self._on_finish(self.progress)
        self.dismiss(self.progress)

    def shown_steps(self) -> list[tuple[str, str]]:
        """(state, title) of each step (tests)."""
        return [(s.state, s.title) for s in self.progress.steps]

