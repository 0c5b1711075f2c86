"""DataTable with column widths that follow their content.

Textual 8.2's DataTable measures new rows on idle, after it may already have
drawn (and cached) them at the old column widths, and its line cache does
not notice the widths change: a key column stays as wide as its header
("/ap" for "/app/k1"). Bumping the table's update counter after the idle
re-measure drops those lines.
"""
from __future__ import annotations

from textual import events
from textual.widgets import DataTable


class Table(DataTable):
    async def _on_idle(self, event: events.Idle) -> None:
        remeasure = self._require_update_dimensions or bool(self._updated_cells)
        await super()._on_idle(event)
        if remeasure:
            self._update_count += 1
            self.refresh()
