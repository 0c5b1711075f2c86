"""Keys & revisions panel: the key listing (prefix filter), and below it a
detail table: a key's history across revisions, or a read at a revision.

The listing holds keys only (etcd keys_only Range, paged); values are shown
in the detail table. Both are DataTables, which draw only visible rows.

Paging is decided here; the screen only reads what the panel asks for
(messages up) and hands the pages back (`took_*`, data down). The listing is
a window of consecutive keys: it starts with the first page; moving near its
end asks for the next page (NeedPage "after" the last key held); `end` asks
for the last page (one descending read), and from there moving near the top
asks for the page before; `home` goes back to the first page. The count is
etcd's exact count of every key under the prefix (Range's count), whatever
is held. Long keys and values are cut to the panel's width with an
ellipsis; `v` shows one whole.
"""
from __future__ import annotations

import dataclasses

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Resize
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from raftui.render import escape, safe_text
from raftui.source.codec import encode
from raftui.widgets.table import Table
from raftui.source.model import KeyPage, KeyValue


@dataclasses.dataclass(frozen=True)
class Listing:
    prefix: str = ""
    keys: tuple[KeyValue, ...] = ()
    more: bool = False           # keys after the last one held
    earlier: bool = False        # keys before the first one held (after `end`)
    count: int | None = None     # every key under the prefix (Range's count); None: not read yet
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Detail:
    title: str = "enter: a key's history · r: read at a revision · v: a key whole"
    rows: tuple[KeyValue, ...] = ()
    ok: bool = True


NUMBER_COLUMNS = 22      # create, mod, ver and the cells' padding: what the key column leaves them
MIN_KEY_WIDTH = 12


def cut_cell(value: str, width: int, style="") -> Text:
    """A key or value as one line, at most `width` cells: cut with an ellipsis
    and its whole size, "vvvv…(10240 bytes)" (`v` shows it whole)."""
    text = safe_text(value, style, limit=None)     # escaped first: an escape is never cut in two
    if text.cell_len <= width:
        return text
    suffix = f"…({len(encode(value))} bytes)"
    keep = max(1, width - len(suffix))
    text.truncate(keep)
    text.append(suffix, style or "")
    return text


# --------------------------------------------------------- the paging rules

def with_first(held: Listing, prefix: str, page: KeyPage) -> Listing:
    """The first page read again (the periodic refresh): pages scrolled in
    after it are kept, as they were read; a new prefix starts over."""
    if (held.prefix == prefix and not held.error and not held.earlier and page.more and page.keys
            and len(held.keys) > len(page.keys)):
        last = page.keys[-1].key
        tail = tuple(kv for kv in held.keys if kv.key > last)
        return Listing(prefix, page.keys + tail, held.more, False, page.count)
    return Listing(prefix, page.keys, page.more, False, page.count)


def with_last(held: Listing, prefix: str, page: KeyPage) -> Listing:
    """The last page (end, or the refresh of a window at the end): pages
    scrolled in before it are kept."""
    if held.prefix == prefix and not held.error and held.earlier and page.keys:
        first = page.keys[0].key
        head = tuple(kv for kv in held.keys if kv.key < first)
        if head:
            return Listing(prefix, head + page.keys, False, held.earlier, page.count)
    return Listing(prefix, page.keys, False, page.more, page.count)


def with_after(held: Listing, prefix: str, after: str, page: KeyPage) -> Listing | None:
    """The page after `after`, appended; None if the listing moved on meanwhile."""
    if held.prefix != prefix or not held.keys or held.keys[-1].key != after:
        return None
    return dataclasses.replace(held, keys=held.keys + page.keys, more=page.more, error="")


def with_before(held: Listing, prefix: str, before: str, page: KeyPage) -> Listing | None:
    """The page before `before`, prepended; None if the listing moved on meanwhile."""
    if held.prefix != prefix or not held.keys or held.keys[0].key != before:
        return None
    return dataclasses.replace(held, keys=page.keys + held.keys, earlier=page.more, error="")


class KeysTable(Table):
    # A list of keys: home/end go to the first/last key (DataTable's go to
    # the first/last column), as in the WAL and timeline lists -- the first
    # and last of every key under the prefix, not just of those held.
    BINDINGS = [
        Binding("home", "first_key", "First key", show=False),
        Binding("end", "last_key", "Last key", show=False),
    ]

    class Moved(Message):
        """The view moved (scrolled, or the cursor): maybe another page is wanted."""

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # end / pagedown scroll without moving the cursor: near an edge, ask for more too.
        self.post_message(self.Moved())

    def action_first_key(self) -> None:
        panel = self.parent
        if isinstance(panel, KeysPanel) and panel.listing.earlier:
            panel.go_to_start()
        else:
            self.action_scroll_top()

    def action_last_key(self) -> None:
        panel = self.parent
        if isinstance(panel, KeysPanel) and panel.listing.more:
            panel.go_to_end()
        else:
            self.action_scroll_bottom()


class DetailTable(Table):
    COMPONENT_CLASSES = {"detail--value"}


class KeysPanel(Vertical):
    @dataclasses.dataclass
    class KeyHighlighted(Message):
        key: str

    @dataclasses.dataclass
    class KeyChosen(Message):
        key: str

    @dataclasses.dataclass
    class NeedPage(Message):
        """A page of keys under `prefix` is wanted: where = "first", "last",
        "after" (the page after key `key`) or "before" (the page before it)."""
        prefix: str
        where: str
        key: str = ""

    NEAR_EDGE = 50          # rows from either end of the listing that ask for the next page

    listing: reactive[Listing] = reactive(Listing, init=False, repaint=False)
    detail: reactive[Detail] = reactive(Detail, init=False, repaint=False)
    revision: reactive[tuple[int, int]] = reactive((0, 0), init=False, repaint=False)   # (current, compacted)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Keys & revisions"
        self._summary_text = ""
        self._asked: tuple[str, str] | None = None      # the page asked for and not answered yet
        self._cursor_to: str = ""                       # "first"/"last": where the cursor goes when it comes
        self._landing: str = ""                         # set while the page a jump asked for is taken
        self._key_width = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="keys-summary", classes="summary")
        keys = KeysTable(id="keys-table", cursor_type="row")
        keys.add_columns("key", "create", "mod", "ver")
        yield keys
        yield Static(Detail().title, id="keys-detail-title", classes="summary")
        detail = DetailTable(id="keys-detail", cursor_type="row")
        detail.add_columns("key", "value", "create", "mod", "ver", "lease")
        yield detail

    def on_mount(self) -> None:
        self._summary()

    def on_resize(self, event: Resize) -> None:
        width = max(MIN_KEY_WIDTH, event.size.width - NUMBER_COLUMNS)
        if width != self._key_width:
            self._key_width = width
            self._fill(self.listing.keys)
            self.watch_detail(self.detail)

    # ------------------------------------------------------- pages (data down)

    def refresh_wanted(self) -> str:
        """Which page the periodic refresh reads: the end one when the listing holds the end."""
        return "last" if self.listing.earlier else "first"

    def took(self, prefix: str, where: str, key: str, page: KeyPage | None, error: str = "",
             refresh: bool = False) -> None:
        """A page the screen read for this panel (None and `error` if it failed).

        `refresh`: the periodic re-read of the end the listing held when it
        was sent (refresh_wanted()). If the operator jumped to the other end
        (home/end) while it was out, it is stale and dropped: taken, a "last"
        page read before `home` landed would put the listing back at the end
        (and every later refresh would then keep it there)."""
        held = self.listing
        if refresh and where != self.refresh_wanted():
            return
        if (where, key) == (self._asked or ("", "")):
            self._asked = None
        if page is None:
            if held.prefix == prefix:
                self.listing = dataclasses.replace(held, error=error)
            return
        if where == "first":
            new = with_first(held, prefix, page)
        elif where == "last":
            new = with_last(held, prefix, page)
        elif where == "after":
            new = with_after(held, prefix, key, page)
        else:
            new = with_before(held, prefix, key, page)
        if new is not None:
            # Only the page a jump asked for places the cursor (first or last
            # row): a refresh of the other end landing meanwhile must not use it up.
            self._landing = self._cursor_to if where == self._cursor_to else ""
            try:
                self.listing = new
                if self._landing and new == held and new.keys:     # unchanged: no watcher ran
                    self.query_one(KeysTable).move_cursor(
                        row=0 if self._landing == "first" else len(new.keys) - 1, animate=False)
            finally:
                if self._landing:
                    self._cursor_to = ""
                self._landing = ""

    def go_to_end(self) -> None:
        self._cursor_to = "last"
        self._ask("last")

    def go_to_start(self) -> None:
        self._cursor_to = "first"
        self._ask("first")

    def _ask(self, where: str, key: str = "") -> None:
        if self._asked == (where, key):
            return
        self._asked = (where, key)
        self.post_message(self.NeedPage(self.listing.prefix, where, key))

    # ----------------------------------------------------------------- drawing

    def watch_revision(self) -> None:
        self._summary()

    def watch_listing(self, old: Listing, new: Listing) -> None:
        self._summary()
        table = self.query_one(KeysTable)
        before = self.highlighted_key()
        # Rows replaced or added: the cursor's moves meanwhile are not the operator's.
        with table.prevent(DataTable.RowHighlighted):
            if old.keys != new.keys:
                if new.keys[:len(old.keys)] == old.keys and table.row_count == len(old.keys):
                    # A page appended: add its rows only (the cursor stays where it is).
                    table.add_rows([self._key_row(kv) for kv in new.keys[len(old.keys):]])
                else:
                    self._fill(new.keys)
            if self._landing and new.keys:
                table.move_cursor(row=0 if self._landing == "first" else len(new.keys) - 1, animate=False)
        after = self.highlighted_key()
        if after is not None and after != before:
            self.post_message(self.KeyHighlighted(after))

    def _fill(self, keys: tuple[KeyValue, ...]) -> None:
        """Every row again; the cursor stays on the key it was on (a page put before it moves it down)."""
        table = self.query_one(KeysTable)
        current = self.highlighted_key()
        with table.prevent(DataTable.RowHighlighted):
            table.clear()
            table.add_rows([self._key_row(kv) for kv in keys])
            if current is not None:
                row = next((i for i, kv in enumerate(keys) if kv.key == current), None)
                if row is not None:
                    table.move_cursor(row=row, animate=False)

    def _key_row(self, kv: KeyValue) -> tuple[Text, ...]:
        return (cut_cell(kv.key, self._key_width or 64), Text(str(kv.create_revision)), Text(str(kv.mod_revision)),
                Text(str(kv.version)))

    def watch_detail(self, detail: Detail) -> None:
        title = self.query_one("#keys-detail-title", Static)
        title.update(safe_text(detail.title))
        title.set_class(not detail.ok, "-error")
        table = self.query_one(DetailTable)
        table.clear()
        value_style = table.get_component_rich_style("detail--value")
        # The key gets a third of the room, the value the rest.
        room = (self._key_width or 64) + NUMBER_COLUMNS - 30
        key_width = max(MIN_KEY_WIDTH, room // 3)
        value_width = max(MIN_KEY_WIDTH, room - key_width)
        table.add_rows([(cut_cell(kv.key, key_width), cut_cell(kv.value, value_width, value_style),
                         Text(str(kv.create_revision)), Text(str(kv.mod_revision)), Text(str(kv.version)),
                         Text(f"{kv.lease:x}" if kv.lease else ""))
                        for kv in detail.rows])

    def _summary(self) -> None:
        current, compacted = self.revision
        listing = self.listing
        where = f"prefix '{escape(listing.prefix)}'" if listing.prefix else "all keys"
        if listing.count is None:
            count = f"{len(listing.keys)}{'+' if listing.more else ''} keys"
        else:
            count = f"{listing.count:,} key{'s' if listing.count != 1 else ''}"
            if len(listing.keys) < listing.count:
                count += f" ({len(listing.keys):,} read)"
        text = f"revision {current} · compacted {compacted} · {where} · {count}"
        if listing.error:
            text += f" · {escape(listing.error)}"
        if text != self._summary_text:
            self._summary_text = text
            self.query_one("#keys-summary", Static).update(safe_text(text, backslash=False), layout=False)

    # ----------------------------------------------------------- intent (up)

    def highlighted_key(self) -> str | None:
        table = self.query_one(KeysTable)
        keys = self.listing.keys
        if not keys or table.cursor_row < 0 or table.cursor_row >= len(keys):
            return None
        return keys[table.cursor_row].key

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "keys-table":
            return
        event.stop()
        key = self.highlighted_key()
        if key is not None:
            self.post_message(self.KeyHighlighted(key))
        self._maybe_page()

    def on_keys_table_moved(self, event: KeysTable.Moved) -> None:
        event.stop()
        self._maybe_page()

    def _maybe_page(self) -> None:
        """Near the end of the keys held, the next page; near their top (after end), the one before."""
        listing = self.listing
        if not listing.keys or listing.error:
            return
        table = self.query_one(KeysTable)
        bottom = max(table.cursor_row, round(table.scroll_y) + table.scrollable_content_region.height)
        if listing.more and bottom >= len(listing.keys) - self.NEAR_EDGE:
            self._ask("after", listing.keys[-1].key)
        elif listing.earlier and table.cursor_row <= self.NEAR_EDGE:
            # By the cursor only: right after `end` the view is still at the top.
            self._ask("before", listing.keys[0].key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "keys-table":
            return
        event.stop()
        key = self.highlighted_key()
        if key is not None:
            self.post_message(self.KeyChosen(key))
