"""The Textual application: themes, the few app-wide keys, the command palette.

Everything about the cluster lives in MainScreen; the app only wires the
source (made inside the running loop, where gRPC channels must be born) and
the host, and decides what quitting means in host mode.
"""
from __future__ import annotations

import asyncio
import functools
from typing import Callable, Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

import themes
from raftui.commands import COMMANDS, LINE_COMMANDS, key_shown
from raftui.host import ClusterHost
from raftui.host.health import still_listening
from raftui.screens.quit import QuitScreen
from raftui.screens.help import HelpScreen
from raftui.screens.main import NAV_BINDINGS, MainScreen
from raftui.source import ClusterSource


def binding_ids() -> set[str]:
    """Every binding id a keymap may move."""
    return ({b.id for b in RaftuiApp.BINDINGS if b.id}
            | {b.id for b in MainScreen.BINDINGS if isinstance(b, Binding) and b.id})


class RaftuiApp(App[None]):
    TITLE = "raftui"
    CSS_PATH = themes.STYLESHEETS
    BINDINGS = [
        Binding("question_mark", "help", "Keys", id="help", key_display="?"),
        Binding("T", "cycle_theme", "Theme", id="cycle_theme"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(self, make_source: Callable[[], ClusterSource], *, host: ClusterHost | None = None,
                 theme: str = themes.DEFAULT_THEME, mode_label: str = "", live: bool = True,
                 readonly: bool = False, keymap: dict[str, str] | None = None) -> None:
        super().__init__()
        self.readonly = readonly
        self.keymap = dict(keymap or {})         # binding id -> keys (raftui/keymap.py)
        self.make_source = make_source
        self.host = host
        self.mode_label = mode_label
        self.live = live
        self.source: ClusterSource | None = None
        for t in themes.THEMES.values():
            self.register_theme(t)
        self.theme = themes.THEMES[theme].name

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(themes.VARIABLE_DEFAULTS)

    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        self.source = self.make_source()
        self.push_screen(MainScreen(self.source, self.host, mode_label=self.mode_label, live=self.live,
                                    readonly=self.readonly))

    async def on_unmount(self) -> None:
        if self.source is not None and self.live:
            await self.source.close()

    # ------------------------------------------------------------- app keys

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """The app's own keys (theme, help, quit) belong to the dashboard: in a
        dialog, or while one is opening, a T or q typed for the dialog must
        not switch the theme or start quitting."""
        if action in ("cycle_theme", "help", "quit"):
            screen = self.screen
            return isinstance(screen, MainScreen) and not screen._asking
        return True

    def action_cycle_theme(self) -> None:
        names = [t.name for t in themes.THEMES.values()]
        current = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(current + 1) % len(names)]
        self.notify(f"theme {self.theme}", timeout=2)

    def action_help(self) -> None:
        """Every key as typed; commands this mode cannot run are left out (said at the end)."""
        main = self.screen if isinstance(self.screen, MainScreen) else None
        def keys(binding_id: str, default: str) -> str:
            return key_shown(self.keymap.get(binding_id, default))

        rows = [(keys(b.id or "", b.key), b.description, b.tooltip or b.description, b.id or "")
                for b in self.BINDINGS]
        rows += [(keys("command_line", ":"), "Command", "Command line: members, keys /prefix, watch k, defrag n2, "
                  "transfer n3, compact 1200, theme light, q (completed as typed)", "command_line"),
                 (keys("back", "escape"), "Back", "Clear the key filter, else back to the cluster panel", "back"),
                 ("tab / shift+tab", "Panels", "Next / previous panel", "next_panel, previous_panel"),
                 ("1-9, up/down", "Select member", "Select a member (also arrows in the cluster table)",
                  "member_1 .. member_9")]
        offered = [c for c in COMMANDS + LINE_COMMANDS if main is None or not main.unavailable(c)]
        rows += [(keys(c.id, c.key), c.title, c.help, c.id) for c in offered]
        left_out = sorted({main.unavailable(c) for c in COMMANDS if c not in offered}) if main else []
        rows += [("", "(not here)", reason, "") for reason in left_out]
        rows += [("ctrl+p", "Palette", "Search every command by name", "")]
        self.push_screen(HelpScreen(rows))

    async def action_quit(self) -> None:
        if self.host is None:
            self.exit()
            return
        self.run_worker(self._quit_hosted(), exclusive=True, group="quit")

    def reattach_command(self) -> str:
        data_dir = getattr(self.host, "data_dir", None)
        # A cluster run with auth needs the user again to be read (the
        # password is never kept: it is asked for).
        auth = getattr(getattr(self, "source", None), "auth", None)
        user = getattr(auth, "user", None) if auth is not None else None
        who = (" --auth" if user == "root" else f" --user {user}") if user else ""
        if data_dir:
            return f"raftui --data-dir {data_dir}{who}"
        return "raftui --endpoints " + ",".join(self.host.endpoints) + who

    async def _quit_hosted(self) -> None:
        answer = await self.push_screen_wait(QuitScreen(len(self.host.names), self.reattach_command()))
        if answer == "cancel":
            return
        if answer == "leave":
            self.exit(message=f"raftui: {len(self.host.names)} members left running "
                              f"(endpoints {','.join(self.host.endpoints)}); reattach with "
                              f"{self.reattach_command()}")
            return
        self.notify(f"stopping {len(self.host.names)} members ...", timeout=30)
        # SIGTERM and reaping take a moment per member: off the UI loop. A
        # member started by hand on a member's data dir is stopped too (strays).
        left = await asyncio.to_thread(functools.partial(self.host.stop_all, strays=True))
        # "Stopped" is what the members' ports say, not what was signalled.
        running = await asyncio.to_thread(still_listening, self.host)
        running += [(name, "(its process did not exit)") for name in left or ()
                    if name not in {n for n, _ in running}]
        if running:
            text = ("not every member stopped: " + ", ".join(f"{n} still answers on {ep}" for n, ep in running)
                    + " (started outside this console?); stop it by its PID, then quit again")
            if self.source is not None:
                self.source.note(text, ok=False, kind="error")
            self.notify(text, severity="error", timeout=15, markup=False)
            return
        self.exit(message=f"raftui: members stopped; their data stays in {self.host.data_dir} "
                          f"(start again with {self.reattach_command()})")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        main = next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)
        if main is None:
            return
        for c in COMMANDS:
            if not main.unavailable(c):
                yield SystemCommand(f"{c.title} ({key_shown(self.keymap.get(c.id, c.key))})", c.help,
                                    lambda cid=c.id: main.action_command(cid))
        yield SystemCommand("Cycle theme (T)", "dark → light → mono", self.action_cycle_theme)
        yield SystemCommand("Keys (?)", "Show every key binding", self.action_help)
        for b in NAV_BINDINGS[:2]:
            yield SystemCommand(f"{b.description} ({b.key})", b.description,
                                lambda step=(1 if b.key == 'tab' else -1): main.action_panel(step))
