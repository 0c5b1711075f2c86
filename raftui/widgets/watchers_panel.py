"""Watchers panel: the members' watchers (Inspect), each with how many
revisions it is behind its member's head and how many events wait for its
stream (the most behind first; the console's own watch marked), and the
console's own live watch with its events streaming in, newest on top, and
how far behind the head it is (from its stream's progress answers, so on
etcd too)."""
from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static

from raftui.render import count, escape, safe_text
from raftui.source.model import ClusterState, WatchEvent

from .line_list import LineList
from .table import Table

NO_INSPECT = "watchers need raftnode's Inspect service (etcd has none; with auth on, root only)"


KEY_SHOWN = 512
VALUE_SHOWN = 1000


class WatchEventList(LineList[WatchEvent]):
    COMPONENT_CLASSES = {"watch--put", "watch--delete", "watch--meta", "watch--time"}

    def render_item(self, e: WatchEvent) -> Text:
        stamp = time.strftime("%H:%M:%S", time.localtime(e.at))
        style = {"PUT": "watch--put", "DELETE": "watch--delete"}.get(e.type, "watch--meta")
        rev = f" @{e.mod_revision}" if e.mod_revision else ""
        key, value = escape(e.key, limit=KEY_SHOWN), escape(e.value, limit=VALUE_SHOWN)
        body = f"{e.type:<7} {key}{rev}" + (f" = {value}" if e.type == "PUT" else
                                             (f"  {value}" if e.type != "DELETE" else ""))
        return Text.assemble((stamp, self.get_component_rich_style("watch--time")), " ",
                             (body, self.get_component_rich_style(style)))


class WatchersTable(Table):
    COMPONENT_CLASSES = {"watchers--late", "watchers--console"}


class WatchersPanel(Vertical):
    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="panel")
        self.border_title = "Watchers"
        self._shown_watchers: tuple = ()
        self._note_text = ""
        self._watch_title = ""

    def _note(self, text: str) -> None:
        if text != self._note_text:
            self._note_text = text
            self.query_one("#watchers-note", Static).update(safe_text(text), layout=False)

    def compose(self) -> ComposeResult:
        yield Static("", id="watchers-note", classes="summary")
        table = WatchersTable(id="watchers-table", cursor_type="row")
        table.add_columns("member", "id", "key", "behind", "pending", "synced", "sent", "start", "range end")
        yield table
        yield Static("no live watch · W: watch a key (end it with * for a prefix)",
                     id="watch-title", classes="summary")
        events = WatchEventList(id="watch-events")
        yield events

    def watch_state(self, state: ClusterState) -> None:
        table = self.query_one("#watchers-table", Table)
        if state.inspect is False:
            self._note(NO_INSPECT)
            table.display = False
        else:
            table.display = True
            lagging = sum(1 for w in state.watchers if w.behind or w.pending)
            self._note(f"{count(len(state.watchers), 'watcher')} on the members"
                       + (f" · {lagging} behind or with events waiting" if lagging else ""))
            if state.watchers != self._shown_watchers:
                self._shown_watchers = state.watchers
                table.clear()
                late = table.get_component_rich_style("watchers--late")
                mine = table.get_component_rich_style("watchers--console")
                # The most behind first: they are what the operator looks for.
                ordered = sorted(state.watchers, key=lambda w: (-w.behind, -w.pending, w.member, w.watch_id))
                table.add_rows([(safe_text(w.member + (" · console" if w.console else ""), mine if w.console else "",
                                           limit=64),
                                 Text(str(w.watch_id)), safe_text(w.key, limit=KEY_SHOWN),
                                 Text(str(w.behind), style=late if w.behind else ""),
                                 Text(str(w.pending), style=late if w.pending else ""),
                                 Text("yes" if w.synced else "catching up", style="" if w.synced else late),
                                 Text(str(w.events_sent)), Text(str(w.start_revision)),
                                 safe_text(w.range_end, limit=KEY_SHOWN))
                                for w in ordered])
        live = state.watch
        title = self.query_one("#watch-title", Static)
        events = self.query_one(WatchEventList)
        if live is None:
            events.set_items(())
            return
        what = f"{escape(live.key, limit=KEY_SHOWN)}{'*' if live.prefix else ''}"
        behind = live.behind(state.revision)
        text = (f"live watch on '{what}': {escape(live.status)} · {count(len(live.events), 'event')}"
                + (f" · {behind} behind (at {live.revision} of {state.revision})" if behind is not None else ""))
        if text != self._watch_title:
            self._watch_title = text
            title.update(Text(text), layout=False)
        events.set_items(tuple(reversed(live.events)))
