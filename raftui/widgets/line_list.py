"""A virtual list: one line per item, drawn through Textual's Line API.

Only the visible lines are rendered, so 100,000 WAL entries or timeline
events cost nothing until they scroll into view -- never a widget per row.
Subclasses say how one item looks (`render_item`) and which component
classes (styled from themes/*.tcss) they use.
"""
from __future__ import annotations

from typing import Generic, Sequence, TypeVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

T = TypeVar("T")
ELLIPSIS = "…"


class LineList(ScrollView, Generic[T], can_focus=True):
    BINDINGS = [
        Binding("up", "scroll_up", "Up", show=False),
        Binding("down", "scroll_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Top", show=False),
        Binding("end", "scroll_end", "Bottom", show=False),
    ]

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._items: Sequence[T] = ()
        self._width = 0
        self.empty_text = ""

    @property
    def items(self) -> Sequence[T]:
        return self._items

    def set_items(self, items: Sequence[T], width_hint: int = 0) -> None:
        """Replace the items (the list keeps the reference; pass an immutable sequence)."""
        if items is self._items or items == self._items:
            return   # the same lines: nothing to redraw (the WAL is re-read every poll)
        self._items = items
        self._width = max(self._width, width_hint)
        self.virtual_size = Size(self._width, len(items))
        self.refresh()

    # home/end jump at once: an animated scroll across 100,000 lines helps nobody.
    def action_scroll_home(self) -> None:
        self.scroll_home(animate=False)

    def action_scroll_end(self) -> None:
        self.scroll_end(animate=False)

    def render_item(self, item: T) -> Text:
        return Text(str(item))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if not self._items:
            if y == 0 and self.empty_text:
                return self._strip(Text(self.empty_text, style=self.get_component_rich_style("line-list--empty")),
                                   scroll_x, width, base)
            return Strip.blank(width, base)
        if index >= len(self._items):
            return Strip.blank(width, base)
        return self._strip(self.render_item(self._items[index]), scroll_x, width, base)

    def _strip(self, text: Text, scroll_x: int, width: int, base: Style) -> Strip:
        text.no_wrap = True
        text.end = ""
        segments = list(text.render(self.app.console))
        strip = Strip(Segment.apply_style(segments, base), text.cell_len)
        if text.cell_len > self._width:
            # Grow the scrollable width lazily, as long lines come into view.
            self._width = text.cell_len
            self.virtual_size = Size(self._width, len(self._items))
        if text.cell_len > scroll_x + width > 1:
            # Cut at the panel's edge: an ellipsis says there is more (scroll
            # right to read it), as in the keys panel, in the cut text's style.
            shown = strip.crop_extend(scroll_x, scroll_x + width - 1, base)
            style = list(shown)[-1].style if shown.cell_length else base
            return Strip.join([shown, Strip([Segment(ELLIPSIS, style)], 1)])
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    COMPONENT_CLASSES = {"line-list--empty"}
