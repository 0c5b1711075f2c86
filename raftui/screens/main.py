"""The dashboard: six panels, as tabs on a small terminal and a grid on a big one.

Data flows down: workers poll the ClusterSource and hand each panel the part
of the new ClusterState it shows (reactive attributes). Intent flows up:
panels post messages (a member or key selected); key bindings come from the
command table (raftui/commands.py). All network I/O runs in workers with
deadlines; the poll re-arms its own timer when it finishes, so polls never
overlap and a slow member only slows the poll, never the screen.
"""
from __future__ import annotations

import asyncio
import inspect
import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.css.query import NoMatches
from textual.events import Resize
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static, Tab, Tabs
from textual.worker import Worker, WorkerState, get_current_worker

import themes
from raftui.commands import (BY_ID, COMMANDS, LINE_COMMANDS, Command, Context, check_values, key_shown,
                             split_prefix)
from raftui.render import escape, safe_text, unescape
from raftui.scenario.library import names as scenario_names
from raftui.scenario.ui import scenario_question
from raftui.host import ClusterHost
from raftui.host.health import with_process_health
from raftui.source import ActionResult, ClusterSource, ClusterState, recovery
from raftui.source.txn import TxnOutcome
from raftui.widgets.cluster_panel import ClusterPanel
from raftui.widgets.keys_panel import Detail, KeysPanel, Listing
from raftui.widgets.rates_panel import RatesPanel
from raftui.widgets.summary_bar import SummaryBar
from raftui.widgets.timeline_panel import TimelinePanel
from raftui.widgets.wal_panel import WalPanel
from raftui.widgets.watchers_panel import WatchersPanel

from .command_line import CommandLineScreen, FilterLineScreen, completions, parse
from .confirm import ConfirmScreen
from .form import FormScreen
from .links import LinksScreen
from .recovery import RecoveryScreen
from .scrub import ScrubScreen
from .txn import TxnScreen
from .view import ViewScreen

POLL_INTERVAL = 0.4          # seconds between the end of one poll and the next
KEYS_INTERVAL = 1.0
KEY_PAGE = 1000              # keys per Range; more pages come in as the keys table is scrolled
COMMAND_DEADLINE = 90.0      # a last resort; each call has its own, shorter deadline
ASK_DEADLINE = 10.0          # reading what a question needs (a key count); each call has its own too
ERROR_REPEAT = 30.0          # seconds before the same worker failure is told again
FOLLOW_RETRY = 2.0           # seconds before following the status streams again after a failure
WIDE = (140, 40)             # from this size on, all panels at once
MEDIUM = (100, 30)           # from this size on: cluster on top; timeline, keys and one more below
THIRD = ("wal", "watchers", "rates")   # the medium layout's third column: the last of these made active

PANELS = (  # id, tab label, widget to focus
    ("cluster", "Cluster", "#cluster-table"),
    ("timeline", "Timeline", "#timeline-list"),
    ("wal", "WAL", "#wal-list"),
    ("keys", "Keys", "#keys-table"),
    ("watchers", "Watchers", "#watch-events"),
    ("rates", "Rates", ""),
)


def command_bindings() -> list[Binding]:
    # priority: the app runs a command's key itself, before it reads the next
    # key, so the dialog the command opens is there for the keys typed after
    # it (a non-priority binding runs from the focused widget's queue, behind
    # keys already routed to the dashboard). No widget of this screen takes letters.
    return [Binding(c.key, f"command('{c.id}')", c.title, show=c.footer, id=c.id, tooltip=c.help,
                    key_display=key_shown(c.key), priority=True)
            for c in COMMANDS]


# Priority too, like the commands: "2g" typed at once selects n2, then defrags it.
NAV_BINDINGS = [
    Binding("colon", "command_line", "Command", key_display=":", id="command_line", priority=True,
            tooltip="k9s-style command line: members, keys /prefix, watch k, defrag n2, compact 1200, theme, q"),
    Binding("escape", "back", "Back", show=False, id="back",
            tooltip="Back: clear the key filter, else back to the cluster panel"),
    Binding("tab", "panel(1)", "Next panel", show=False, id="next_panel", priority=True),
    Binding("shift+tab", "panel(-1)", "Previous panel", show=False, id="previous_panel", priority=True),
    *[Binding(str(i), f"select_member({i})", f"Member {i}", show=False, id=f"member_{i}", priority=True)
      for i in range(1, 10)],
]


class PanelTabs(Tabs, can_focus=False):
    """The tab strip of the small layout; switched with tab/shift+tab, never focused."""


class MainScreen(Screen):
    BINDINGS = [*NAV_BINDINGS, *command_bindings()]

    state: reactive[ClusterState] = reactive(ClusterState, init=False, repaint=False)
    selected: reactive[int] = reactive(0, init=False, repaint=False)
    active_panel: reactive[str] = reactive("cluster", init=False, repaint=False)

    def __init__(self, source: ClusterSource, host: ClusterHost | None = None, *,
                 mode_label: str = "", live: bool = True, readonly: bool = False) -> None:
        """`live=False` (snapshot tests): show `source.state` once, start no workers.
        `readonly`: only commands that change nothing are offered."""
        super().__init__()
        self.readonly = readonly
        self.source = source
        self.host = host
        self.mode_label = mode_label
        self.live = live
        self.prefix = ""
        self.selected_key = ""
        self._keys_generation = 0
        self._title_text = ""
        self._worker_errors: dict[str, float] = {}    # a worker's failure text -> when it was last told
        self._asking = False      # a command's dialogs are open (or opening): no other command runs
        self._link: tuple[int, int] | None = None     # the link matrix's highlighted link, for its edits

    # ---------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        yield Static("raftui", id="title-bar")
        yield SummaryBar(id="summary-bar")
        yield PanelTabs(*(Tab(label, id=f"tab-{pid}") for pid, label, _ in PANELS), id="panel-tabs")
        # Grid order for the medium and wide layouts (themes/app.tcss); the tab order is PANELS.
        with Container(id="panels"):
            yield ClusterPanel(id="cluster")
            yield TimelinePanel(id="timeline")
            yield KeysPanel(id="keys")
            yield WalPanel(id="wal")
            yield WatchersPanel(id="watchers")
            yield RatesPanel(id="rates")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(WalPanel).add_class("-third")
        self._layout_for(self.app.size.width, self.app.size.height)
        self.watch_active_panel("cluster")
        self._show(self.source.state)
        if self.live:
            if self.host is not None:
                verb = "resumed" if getattr(self.host, "resumed", False) else "started"
                self.source.note(f"{verb} {len(self.host.names)} members; data in {self.host.data_dir}",
                                 kind="host")
            self.poll()
            self.follow()
            self.refresh_keys()

    def on_resize(self, event: Resize) -> None:
        self._layout_for(event.size.width, event.size.height)

    def _layout_for(self, width: int, height: int) -> None:
        """Layout by the space there is: one panel under tabs (80x24), cluster over
        timeline, keys and the selected member's WAL (from 100x30: 120x36 is common),
        every panel (from 140x40)."""
        wide = width >= WIDE[0] and height >= WIDE[1]
        self.set_class(wide, "-wide")
        self.set_class(not wide and width >= MEDIUM[0] and height >= MEDIUM[1], "-medium")

    def watch_active_panel(self, panel: str) -> None:
        for pid, _, _ in PANELS:
            self.query_one(f"#{pid}").set_class(pid == panel, "-active")
        if panel in THIRD:
            for pid in THIRD:
                self.query_one(f"#{pid}").set_class(pid == panel, "-third")
        tabs = self.query_one(PanelTabs)
        if tabs.active != f"tab-{panel}":
            # Without `prevent`, the TabActivated this posts comes back later
            # and sets active_panel again: two quick tab presses then chase
            # each other forever (the panel flips back and forth at full CPU).
            with tabs.prevent(Tabs.TabActivated):
                tabs.active = f"tab-{panel}"
        focus = dict((pid, target) for pid, _, target in PANELS)[panel]
        if focus:
            self.query_one(focus).focus()

    @on(Tabs.TabActivated, "#panel-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab is not None and event.tab.id:
            self.active_panel = event.tab.id.removeprefix("tab-")

    def action_panel(self, step: int) -> None:
        ids = [pid for pid, _, _ in PANELS]
        self.active_panel = ids[(ids.index(self.active_panel) + step) % len(ids)]

    # ------------------------------------------------------------ state flow

    def _show(self, state: ClusterState) -> None:
        if self.host is not None:
            # What the members answer first; the host explains only the silent ones.
            state = with_process_health(state, self.host)
        self.state = state

    def watch_state(self, old: ClusterState, new: ClusterState) -> None:
        try:
            self._distribute(new)
        except NoMatches:
            pass  # the screen is being torn down while a worker delivers its last result
        if old.fault != new.fault:
            self.refresh_bindings()      # fault commands offered or not

    def _distribute(self, state: ClusterState) -> None:
        if not self.selected and state.members:
            self.selected = (state.leader or state.members[0]).id
        for screen in self.app.screen_stack:
            if isinstance(screen, LinksScreen):
                screen.state = state
        self.query_one(SummaryBar).state = state
        self.query_one(ClusterPanel).state = state
        self.query_one(TimelinePanel).events = state.timeline
        self.query_one(WalPanel).state = state
        self.query_one(WatchersPanel).state = state
        self.query_one(RatesPanel).rates = state.rates
        self.query_one(KeysPanel).revision = (state.revision, state.compact_revision)
        self._title(state)

    def watch_selected(self, member_id: int) -> None:
        self.query_one(ClusterPanel).selected = member_id
        self.query_one(WalPanel).selected = member_id
        self._title(self.state)

    def _title(self, state: ClusterState) -> None:
        """Where the console is and what is selected; the cluster's numbers are in the summary line."""
        member = state.member(self.selected)
        auth, auth_failed = self._auth_text()
        parts = [
            "raftui",
            self._mode_text(state),
            auth,
            self._lincheck_text(),
            f"selected {member.label}" if member else "",
            f"compacted {state.compact_revision}",
        ]
        parts = [p for p in parts if p]
        # Narrow terminals lose the least useful parts first, never the selected member nor auth.
        room = self.app.size.width - 2
        for drop in (f"compacted {state.compact_revision}", self._mode_text(state)):
            if len(" · ".join(parts)) > room and drop in parts:
                parts.remove(drop)
        text = " · ".join(parts)
        if text != self._title_text:
            self._title_text = text
            bar = self.query_one("#title-bar", Static)
            bar.update(safe_text(text, limit=None), layout=False)     # the user name is data
            bar.set_class(auth_failed, "-auth-failed")

    def _lincheck_text(self) -> str:
        """The live check's verdict while one exists (`:lincheck`): ✓ with its ops, ✗, or … (no verdict yet)."""
        from raftui.lincheck.ui import session_of

        session = session_of(self.app)
        if session is None:
            return ""
        st = session.status()
        ops = f"{st.stats.ops:,} ops" if st.stats is not None else ""
        if st.verdict is not None and st.verdict.valid is False:
            return "lincheck ✗ not linearizable"
        mark = "✓" if st.verdict is not None and st.verdict.valid else "…"
        return f"lincheck {mark} {ops}".rstrip()

    def _auth_text(self) -> tuple[str, bool]:
        """The auth mark (--user): "auth on (root)", "auth off", "auth …" (not known yet),
        or the members' refusal; "" when the console did not log in."""
        auth = getattr(self.source, "auth", None)
        if auth is None:
            return "", False
        if auth.error:
            return f"auth: {auth.error}", True
        if auth.enabled is True:
            return f"auth on ({auth.user})", False
        return ("auth off", False) if auth.enabled is False else ("auth …", False)

    def _mode_text(self, state: ClusterState) -> str:
        """Host mode counts the members the cluster has now (a learner added, a member removed)."""
        if self.host is None:
            return self.mode_label
        count = len(state.members) or len(self.host.names)
        return f"hosting {count} member{'s' if count != 1 else ''}"

    @on(ClusterPanel.MemberSelected)
    def _member_selected(self, event: ClusterPanel.MemberSelected) -> None:
        self.selected = event.member_id

    @on(KeysPanel.KeyHighlighted)
    def _key_highlighted(self, event: KeysPanel.KeyHighlighted) -> None:
        self.selected_key = event.key

    @on(KeysPanel.KeyChosen)
    def _key_chosen(self, event: KeysPanel.KeyChosen) -> None:
        self.selected_key = event.key
        if not self._asking:
            self.run_command(BY_ID["history"], {"key": escape(event.key)})   # as if typed in the form

    def action_select_member(self, number: int) -> None:
        members = self.state.members
        if 1 <= number <= len(members):
            self.selected = members[number - 1].id

    # --------------------------------------------------------------- workers

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll(self) -> None:
        try:
            state = await self.source.poll(wal_member=self.selected)
        except Exception as exc:  # noqa: BLE001 -- a bug in one poll must not end the console
            self.source.note(f"poll failed: {exc!r}", ok=False, kind="error")
            state = self.source.state
        finally:
            # Re-arm after finishing, success or not: polls never pile up.
            if not get_current_worker().is_cancelled:
                self.set_timer(POLL_INTERVAL, self.poll)
        self._show(state)

    @work(exclusive=True, group="follow", exit_on_error=False)
    async def follow(self) -> None:
        """Raft changes pushed by the members (Inspect.WatchStatus): elections
        and term changes show within ~0.1 s, between polls."""
        async for state in self.source.follow():
            self._show(state)

    @work(exclusive=True, group="keys", exit_on_error=False)
    async def refresh_keys(self, rearm: bool = True) -> None:
        """Every KEYS_INTERVAL: the page the keys panel wants refreshed (the
        first, or the last after `end`); the panel merges it with what it holds."""
        generation = self._keys_generation
        prefix = self.prefix
        try:
            where = self.query_one(KeysPanel).refresh_wanted()
            result = await self.source.list_keys(prefix, KEY_PAGE, last=where == "last")
        finally:
            if rearm and not get_current_worker().is_cancelled:
                self.set_timer(KEYS_INTERVAL, self.refresh_keys)
        self._hand_keys(generation, prefix, where, "", result, refresh=True)

    @on(KeysPanel.NeedPage)
    def _keys_need_page(self, event: KeysPanel.NeedPage) -> None:
        event.stop()
        if self.live:
            self.read_keys(event.prefix, event.where, event.key)

    @work(exclusive=True, group="keys-page", exit_on_error=False)
    async def read_keys(self, prefix: str, where: str, key: str = "") -> None:
        """The page the keys panel asked for (scrolling, end, home)."""
        generation = self._keys_generation
        result = await self.source.list_keys(prefix, KEY_PAGE, after=key if where == "after" else None,
                                             before=key if where == "before" else None, last=where == "last")
        self._hand_keys(generation, prefix, where, key, result)

    def _hand_keys(self, generation: int, prefix: str, where: str, key: str, result: ActionResult,
                   refresh: bool = False) -> None:
        if generation != self._keys_generation or not self.is_attached:
            return  # the prefix changed while we were reading (stale), or the console is closing
        try:
            panel = self.query_one(KeysPanel)
        except NoMatches:
            return  # the screen is being torn down (its children go before it is detached)
        panel.took(prefix, where, key, result.data if result.ok else None, result.text, refresh=refresh)

    @on(WalPanel.NeedOlder)
    def _wal_need_older(self, event: WalPanel.NeedOlder) -> None:
        event.stop()
        if self.live:
            self.load_older_wal(event.member_id, event.before_index)

    @work(exclusive=True, group="wal-page", exit_on_error=False)
    async def load_older_wal(self, member_id: int, before_index: int) -> None:
        """One page back through a member's log (Inspect.WalTail before_index)."""
        entries, first = None, 0
        try:
            result = await self.source.wal_page(member_id, before_index)
            if result.ok:
                entries, first = result.data
        finally:
            # Answer even on failure: the panel asks again when scrolled to the end.
            if self.is_attached and not get_current_worker().is_cancelled:
                try:
                    self.query_one(WalPanel).add_older(member_id, before_index, entries, first)
                except NoMatches:
                    pass  # the screen is being torn down

    @work(exclusive=True, group="watch", exit_on_error=False)
    async def open_watch(self, key: str, prefix: bool) -> None:
        self.source.close_watch()
        async for state in self.source.watch(key, prefix):
            self._show(state)

    def action_command(self, command_id: str) -> None:
        """A command's key. Its dialog is pushed here, before the next key is
        read, so keys typed right after it land in the dialog and never run
        as commands; until its last question is answered (a count may be
        read first), no other command runs from this screen."""
        if self._asking:
            return
        cmd = BY_ID[command_id]
        ctx = self._command_context()
        problem = self._cannot_run(cmd, ctx)
        if problem:
            self._report(ActionResult.fail(problem), record=True)
            return
        if cmd.id == "links":       # the matrix stays open; its edits come back through edit_link
            self.app.push_screen(LinksScreen(self.state, self.edit_link))
            return
        self._asking = True
        if cmd.id == "filter":      # live: every keystroke filters (raftui/screens/command_line.py)
            self.app.push_screen(FilterLineScreen(escape(self.prefix), self._filter_to),
                                 lambda _: setattr(self, "_asking", False))
            return
        if not cmd.fields:
            self._answered_form(cmd, ctx, {})
            return
        initial = [(f, f.default(ctx) if callable(f.default) else f.default) for f in cmd.fields]
        self.app.push_screen(FormScreen(cmd.help, initial),
                             lambda values: self._answered_form(cmd, ctx, values))

    def edit_link(self, kind: str, src: int, dst: int) -> None:
        """An edit asked for in the link matrix: a command of the table, asked and run like any other."""
        if kind == "heal":
            self.action_command("heal")
            return
        self._link = (src, dst)
        self.action_command(f"link_{kind}")

    def _answered_form(self, cmd: Command, ctx: Context, values: dict | None) -> None:
        if values is None:
            self._asking = False
            return
        problem = check_values(cmd, values)
        if problem:    # the form refuses these; values from elsewhere are checked too
            self._asking = False
            self._report(ActionResult.fail(f"{cmd.title.lower()}: {problem}"), record=True)
            return
        question = cmd.confirm(ctx, values) if cmd.confirm is not None else ""
        if inspect.isawaitable(question):
            self._ask_after(cmd, ctx, values, question)
        else:
            self._ask(cmd, ctx, values, question)

    def _ask(self, cmd: Command, ctx: Context, values: dict, question: str) -> None:
        """The confirmation ("" when the command needs none), then the command."""
        if not question:
            self._asking = False
            self.run_command(cmd, values, ctx)
            return

        def answered(yes: bool | None) -> None:
            self._asking = False
            if yes:
                self.run_command(cmd, values, ctx)

        self.app.push_screen(ConfirmScreen(question), answered)

    @work(group="ask", exit_on_error=False)
    async def _ask_after(self, cmd: Command, ctx: Context, values: dict, question) -> None:
        """A question that needs the cluster first (how many keys a delete takes)."""
        try:
            text = await asyncio.wait_for(question, ASK_DEADLINE)
        except Exception as exc:  # noqa: BLE001 -- no question, no command
            self._asking = False
            self._report(ActionResult.fail(f"{cmd.title.lower()}: cannot ask: {exc!r}"), record=True)
            return
        if self.is_attached:
            self._ask(cmd, ctx, values, text)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """While a command is asking, nothing else runs from here; commands
        this mode cannot do are not offered (not in the footer, the key does nothing)."""
        if self._asking:
            return False
        if action == "command" and parameters:
            cmd = BY_ID.get(parameters[0])
            return cmd is None or not self.unavailable(cmd)
        return True

    def unavailable(self, cmd: Command) -> str:
        """Why this mode cannot run `cmd` at all ("" if it can)."""
        if self.readonly and not cmd.reads:
            return "read-only console (--readonly): nothing that writes, faults or stops"
        if cmd.needs == "host" and self.host is None:
            return "host mode only (raftui without --endpoints)"
        if cmd.group == "faults" and self.state.fault is False:
            return "needs raftnode's Fault service (--enable-fault-injection)"
        return ""

    # ----------------------------------------------------------- `:` and esc

    def action_back(self) -> None:
        """esc: one step back -- the key filter cleared, else the cluster panel."""
        if self.prefix:
            self._run_ui_command(BY_ID["filter"], {"prefix": ""})
        else:
            self.active_panel = "cluster"

    def action_command_line(self) -> None:
        if self._asking:
            return
        self._asking = True
        offered = {c.id for c in COMMANDS + LINE_COMMANDS if not self.unavailable(c)}
        members = [m.label for m in self.state.members]
        scenarios = [f"run {name}" for name in scenario_names()] if "run" in offered else []
        self.app.push_screen(CommandLineScreen(completions(offered, members) + scenarios),
                             lambda text: self._command_line(text, offered))

    def _command_line(self, text: str | None, offered: set[str]) -> None:
        self._asking = False
        if text is None:
            return
        line = parse(text, offered)
        if line.kind == "unknown":
            self._report(ActionResult.fail(f":{text.strip()}: {line.problem}"), record=False)
        elif line.kind == "quit":
            self.app.call_later(self.app.action_quit)
        elif line.kind == "theme":
            self.app.theme = themes.THEMES[line.name].name
        elif line.kind == "panel":
            self.active_panel = line.name
            if line.name == "keys" and line.arg:
                self._run_ui_command(BY_ID["filter"], {"prefix": line.arg})
        elif line.kind == "watch":
            self._run_ui_command(BY_ID["watch"], {"key": line.arg})
        else:
            self._command_from_line(BY_ID[line.name], line.arg)

    def _command_from_line(self, cmd: Command, arg: str) -> None:
        """`:defrag n2`: the member selected first; `:compact 1200`: the form's value given.
        Either way the command still asks its question."""
        if cmd.id == "run":
            self._open_scenario(arg)
            return
        if cmd.id == "lincheck":
            self._open_lincheck(arg)
            return
        if arg and cmd.needs in ("member", "host"):
            member = next((m for m in self.state.members if m.label == arg), None)
            if member is None:
                self._report(ActionResult.fail(f"{cmd.id}: no member named {arg}"))
                return
            self.selected = member.id
        if cmd.id == "compact" and arg:
            self._asking = True
            self._answered_form(cmd, self._command_context(), {"revision": arg})
            return
        self.action_command(cmd.id)

    def _open_scenario(self, arg: str) -> None:
        """`:run NAME|FILE`: the scenario's own screen (raftui/scenario/ui.py) runs it at once."""
        from raftui.scenario.ui import ScenarioScreen

        if not arg:
            self._report(ActionResult.fail(f"run: which scenario? ({', '.join(scenario_names())} or a file)"))
            return
        screen = ScenarioScreen.open(arg, self.source, self.host, readonly=self.readonly)
        if isinstance(screen, str):       # the file cannot run: one line naming its line or step
            self._report(ActionResult.fail(screen), record=True)
            return
        # A scenario cuts links, kills members and writes keys: it asks first,
        # as every disruptive command does (only y runs it).
        self.app.push_screen(ConfirmScreen(scenario_question(screen.script)),
                             lambda yes: yes and self.app.push_screen(screen))

    def _open_lincheck(self, arg: str) -> None:
        """`:lincheck [N] [RATE]`: the live check's screen (raftui/lincheck/ui.py); a run already
        going is shown, not started again."""
        from raftui.lincheck.ui import LincheckScreen
        from raftui.lincheck.workload import Config

        words = arg.split()
        if len(words) > 2 or not all(w.isdigit() for w in words):
            self._report(ActionResult.fail("lincheck: :lincheck [CLIENTS] [OPS PER SECOND], whole numbers"))
            return
        config = Config(**dict(zip(("clients", "rate"), (int(words[0]), float(words[1]))[:len(words)]
                                   if len(words) == 2 else [int(w) for w in words])))
        screen = LincheckScreen.open(self.app, self.source, config, readonly=self.readonly,
                                     tls=getattr(self.source, "tls", None))
        if isinstance(screen, str):       # refused: read-only, or a bad number
            self._report(ActionResult.fail(screen))
        else:
            self.app.push_screen(screen)

    def _command_context(self) -> Context:
        return Context(self.source, self.host, self.state, self.state.member(self.selected),
                       self.selected_key, self._link)

    @work(group="command", exit_on_error=False)
    async def run_command(self, cmd: Command, values: dict, ctx: Context | None = None) -> None:
        """Every operator command runs here, once asked and answered:
        whatever goes wrong in it (a bug, a value the server sent that we did
        not expect) is an error on the timeline and a notification, never the
        console's end."""
        try:
            await self._run_command(cmd, values, ctx or self._command_context())
        except Exception as exc:  # noqa: BLE001 -- the one guard around every command
            if not self.is_attached:
                return
            self._report(ActionResult.fail(f"{cmd.title.lower()} failed: {exc!r}"), record=True)

    async def _run_command(self, cmd: Command, values: dict, ctx: Context) -> None:
        problem = self._cannot_run(cmd, ctx) or check_values(cmd, values)
        if problem:
            self._report(ActionResult.fail(problem), record=True)
            return
        if cmd.run is None:
            self._run_ui_command(cmd, values)
            return
        try:
            result = await asyncio.wait_for(cmd.run(ctx, values), COMMAND_DEADLINE)
        except asyncio.TimeoutError:
            result = ActionResult.fail(f"{cmd.title}: no answer after {COMMAND_DEADLINE:.0f}s")
            self.source.note(result.text, ok=False, kind="error")
        if not self.is_attached:
            return   # the console is closing; the result is in the source's timeline
        self._report(result)
        if cmd.result_view == "detail":
            self.query_one(KeysPanel).detail = Detail(result.text, tuple(result.data or ()), result.ok)
        elif cmd.result_view == "whole" and result.ok:
            self.app.push_screen(ViewScreen(result.text, result.data))
        elif cmd.result_view == "txn" and isinstance(result.data, TxnOutcome):
            self.app.push_screen(TxnScreen(result.data))
        self._show(self.source.state)
        if result.ok:
            self._keys_generation += 1
            self.refresh_keys(rearm=True)

    def _cannot_run(self, cmd: Command, ctx: Context) -> str:
        unavailable = self.unavailable(cmd)
        if unavailable:
            return f"{cmd.title.lower()}: {unavailable}"
        if cmd.needs in ("member", "host") and ctx.member is None:
            return f"{cmd.title.lower()}: select a member first (1-9)"
        if cmd.needs == "key" and not ctx.key:
            return f"{cmd.title.lower()}: highlight a key in the keys panel first"
        if cmd.needs == "link" and (ctx.link is None or any(ctx.state.member(i) is None for i in ctx.link)):
            return f"{cmd.title.lower()}: pick a link in the link matrix (L) first"
        return ""

    def _filter_to(self, typed: str) -> None:
        """Show only keys starting with `typed` (as the panels show keys: escapes read back)."""
        prefix = unescape(typed)
        if prefix == self.prefix:
            return
        self.prefix = prefix
        self._keys_generation += 1
        self.query_one(KeysPanel).listing = Listing(self.prefix)
        if self.live:
            self.refresh_keys()

    def _run_ui_command(self, cmd: Command, values: dict) -> None:
        if cmd.id == "filter":
            self._filter_to(values.get("prefix", ""))
        elif cmd.id == "revisions":
            key, prefix = split_prefix(values.get("key", ""))
            if not key:
                prefix = True          # nothing typed: every key
            revision = int(str(values.get("revision", "0")).strip() or 0) or self.state.revision
            self.app.push_screen(ScrubScreen(
                key, prefix, revision, lambda rev: self.source.revision_view(key, prefix, rev),
                lambda: (self.state.revision, self.state.compact_revision),
                lambda rev, forward: self.source.scrub_change(key, prefix, rev, forward)))
        elif cmd.id in ("recover", "rolling_defrag"):
            self._guided(cmd.id)
        elif cmd.id == "watch":
            key, prefix = split_prefix(values["key"])
            self.open_watch(key, prefix)
            self.active_panel = "watchers" if not self.has_class("-wide") else self.active_panel

    def _guided(self, which: str) -> None:
        """NOSPACE recovery or the rolling defrag, on the cluster as it is now, in its own screen."""
        state = self.state
        if which == "recover":
            first = recovery.Runner(self.source, "NOSPACE recovery", recovery.plan_nospace(state)).progress
            start = lambda: recovery.nospace_recovery(self.source, state)       # noqa: E731
        else:
            first = recovery.Runner(self.source, "rolling defrag", recovery.plan_rolling(state)).progress
            start = lambda: recovery.rolling_defrag(self.source, state)         # noqa: E731

        def finished(progress: recovery.Progress) -> None:
            self.source.note(progress.summary, progress.ok is True, "defrag" if progress.ok else "error")
            self._show(self.source.state)

        self.app.push_screen(RecoveryScreen(first, start, finished))

    def _report(self, result: ActionResult, record: bool = False) -> None:
        if record:
            self.source.note(result.text, result.ok, "action" if result.ok else "error")
            self._show(self.source.state)
        # The text holds keys, names and errors from the server: never markup.
        self.notify(escape(result.text, limit=500), severity="information" if result.ok else "error",
                    timeout=4 if result.ok else 8, markup=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised (exit_on_error=False on every one): an error
        on the timeline and a notification; the console goes on."""
        if event.state != WorkerState.ERROR or not self.is_attached:
            return
        worker = event.worker
        text = f"{worker.group or worker.name} failed: {worker.error!r}"
        now = time.monotonic()
        if self._worker_errors.get(text, -ERROR_REPEAT) + ERROR_REPEAT <= now:
            # The same failure again (a poll failing every 0.4 s) is told once per ERROR_REPEAT.
            # Texts told longer ago are forgotten: a repr that varies must not grow this for good.
            self._worker_errors = {t: at for t, at in self._worker_errors.items() if at + ERROR_REPEAT > now}
            self._worker_errors[text] = now
            self._report(ActionResult.fail(text), record=True)
        if worker.group == "follow" and self.live:
            self.set_timer(FOLLOW_RETRY, self.follow)      # the status streams are worth having back

    def focus_panel(self, panel: str) -> None:
        """Show a panel (tests and the palette)."""
        try:
            self.active_panel = panel
        except NoMatches:
            pass
