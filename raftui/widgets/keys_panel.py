"""Keys & revisions panel: the key listing (prefix filter), and below it a
detail table: a key's history across revisions, or a read at a revision.

The listing holds keys only (etcd keys_only Range, paged); values are shown
in the detail table. Both are DataTables, which draw only visible rows.
The listing starts with one page; moving the cursor near its end asks for
the next page (NeedMore: a Range from just after the last key held), so a
large key space is paged in as the operator scrolls, never read whole.
"""
from __future__ import annotations

import dataclasses

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable, Static

from raftui.render import escape, safe_text
from raftui.widgets.table import Table
from raftui.source.model import KeyValue


@dataclasses.dataclass(frozen=True)
class Listing:
    prefix: str = ""
    keys: tuple[KeyValue, ...] = ()
    more: bool = False
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Detail:
    title: str = "enter: a key's history · r: read at a revision"
    rows: tuple[KeyValue, ...] = ()
    ok: bool = True


KEY_SHOWN = 512          # characters of a key shown in a cell (the rest: "...(N bytes)")
VALUE_SHOWN = 2000


def _key_row(kv: KeyValue) -> tuple[Text, ...]:
    return (safe_text(kv.key, limit=KEY_SHOWN), Text(str(kv.create_revision)), Text(str(kv.mod_revision)),
            Text(str(kv.version)))


class KeysTable(Table):
    # A list of keys: home/end go to the first/last key (DataTable's go to
    # the first/last column), as in the WAL and timeline lists.
    BINDINGS = [
        Binding("home", "scroll_top", "First key", show=False),
        Binding("end", "scroll_bottom", "Last key", show=False),
    ]

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # end / pagedown scroll without moving the cursor: near the bottom, ask for more too.
        panel = self.parent
        if isinstance(panel, KeysPanel):
            self.call_later(panel._maybe_more)


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
    class NeedMore(Message):
        """The next page of keys under `prefix`, after key `after`, is wanted."""
        prefix: str
        after: str

    MORE_WITHIN = 50        # rows from the end of the listing that ask for the next page

    listing: reactive[Listing] = reactive(Listing, init=False, repaint=False)
    detail: reactive[Detail] = reactive(Detail, init=False, repaint=False)
    revision: reactive[tuple[int, int]] = reactive((0, 0), init=False, repaint=False)   # (current, compacted)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Keys & revisions"
        self._summary_text = ""
        self._asked_after: str | None = None

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

    def watch_revision(self) -> None:
        self._summary()

    def watch_listing(self, old: Listing, new: Listing) -> None:
        self._summary()
        self._asked_after = None
        if old.keys == new.keys:
            return
        table = self.query_one(KeysTable)
        if new.keys[:len(old.keys)] == old.keys and table.row_count == len(old.keys):
            # A page appended: add its rows only (the cursor stays where it is).
            table.add_rows([_key_row(kv) for kv in new.keys[len(old.keys):]])
            return
        current = self.highlighted_key()
        table.clear()
        table.add_rows([_key_row(kv) for kv in new.keys])
        if current is not None:
            row = next((i for i, kv in enumerate(new.keys) if kv.key == current), None)
            if row is not None:
                table.move_cursor(row=row, animate=False)

    def watch_detail(self, detail: Detail) -> None:
        title = self.query_one("#keys-detail-title", Static)
        title.update(safe_text(detail.title))
        title.set_class(not detail.ok, "-error")
        table = self.query_one(DetailTable)
        table.clear()
        value_style = table.get_component_rich_style("detail--value")
        table.add_rows([(safe_text(kv.key, limit=KEY_SHOWN), safe_text(kv.value, value_style, limit=VALUE_SHOWN),
                         Text(str(kv.create_revision)), Text(str(kv.mod_revision)), Text(str(kv.version)),
                         Text(f"{kv.lease:x}" if kv.lease else ""))
                        for kv in detail.rows])

    def _summary(self) -> None:
        current, compacted = self.revision
        listing = self.listing
        where = f"prefix '{escape(listing.prefix)}'" if listing.prefix else "all keys"
        count = f"{len(listing.keys)}{'+' if listing.more else ''} keys"
        text = f"revision {current} · compacted {compacted} · {where} · {count}"
        if listing.error:
            text += f" · {escape(listing.error)}"
        if text != self._summary_text:
            self._summary_text = text
            self.query_one("#keys-summary", Static).update(safe_text(text, backslash=False), layout=False)

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
        self._maybe_more()

    def _maybe_more(self) -> None:
        listing = self.listing
        table = self.query_one(KeysTable)
        bottom = max(table.cursor_row, round(table.scroll_y) + table.scrollable_content_region.height)
        if (listing.more and listing.keys and not listing.error
                and bottom >= len(listing.keys) - self.MORE_WITHIN
                and self._asked_after != listing.keys[-1].key):
            self._asked_after = listing.keys[-1].key
            self.post_message(self.NeedMore(listing.prefix, self._asked_after))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id != "keys-table":
            return
        event.stop()
        key = self.highlighted_key()
        if key is not None:
            self.post_message(self.KeyChosen(key))
