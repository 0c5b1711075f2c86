"""Safe to drive fast: keys typed right after a command's key go to its
dialog, no command runs while one is opening, and every destructive or
disruptive command asks what it will do, with No the default."""
from __future__ import annotations

import dataclasses

from textual import events
from textual.widgets import Input

from raftui.app import RaftuiApp
from raftui.commands import BY_ID, COMMANDS, Context
from raftui.screens.confirm import ConfirmScreen
from raftui.screens.form import FormScreen

from .conftest import run, until
from .fake_state import STATE, FakeSource
from .ui import screen

_KEY_NAMES = {" ": "space", "-": "minus", ":": "colon", "/": "slash", "!": "exclamation_mark", "\n": "enter"}


def _burst(app, text: str) -> None:
    """Every key of `text` in the app's queue at once: typed faster than the app reads them
    (tmux send-keys, a paste, a slow link), well within 50 ms."""
    for ch in text:
        app.post_message(events.Key(_KEY_NAMES.get(ch, ch), ch))


class Recording(FakeSource):
    """A source that records the commands run."""

    def __init__(self, state=STATE) -> None:
        super().__init__(state)
        self.ran: list[tuple] = []

    def note(self, text, ok=True, kind="action") -> None:
        pass

    async def defrag(self, member_id):
        self.ran.append(("defrag", member_id))
        from raftui.source import ActionResult
        return ActionResult(True, "defragmented")


def test_s_tab_s_tab_typed_at_once_opens_one_dialog_and_types_into_it():
    async def body():
        app = RaftuiApp(Recording, live=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            _burst(app, "S-Tab S-Tab")
            form = await until(pilot, lambda: app.screen if isinstance(app.screen, FormScreen) else None,
                               what="the snapshot form")
            await until(pilot, lambda: form.query_one(Input).value.endswith("S-Tab"), what="the keys typed")
            stack = [type(s).__name__ for s in app.screen_stack]
            assert stack.count("FormScreen") == 1 and "ConfirmScreen" not in stack, stack
            assert app.theme == "raftui-dark"                       # T went into the field, not the theme
            assert form.query_one(Input).value == "-Tab S-Tab"      # (the default was selected, so replaced)
    run(body())


def test_confirmation_defaults_to_no_and_says_the_consequence():
    async def body():
        app = RaftuiApp(Recording, live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            _burst(app, "2g")                                        # defrag n2
            confirm = await until(pilot, lambda: app.screen if isinstance(app.screen, ConfirmScreen) else None,
                                  what="the defrag question")
            question = str(confirm.query_one("#confirm-question").render())
            assert question.startswith("Defragment n2?") and "answers nothing meanwhile" in question
            await pilot.press("enter")                               # the default: No
            await until(pilot, lambda: app.screen is screen(app), what="the question gone")
            assert app.source.ran == []
            await pilot.press("g", "y")
            await until(pilot, lambda: app.source.ran == [("defrag", 0x1002)], what="the defrag run on y")
    run(body())


def _ctx(**kw) -> Context:
    state = kw.pop("state", STATE)
    return Context(FakeSource(state), kw.pop("host", None), state, kw.pop("member", STATE.members[1]), "")


def test_questions_name_what_happens_including_the_quorum():
    ctx = _ctx()
    kill = BY_ID["kill"].confirm(ctx, {})
    assert kill.startswith("kill -9 n2?") and "Only 1 of 3 voters would be left up: no quorum" in kill
    two_up = dataclasses.replace(STATE, members=tuple(dataclasses.replace(m, health="up") for m in STATE.members))
    assert "2 of 3 voters stay up (quorum needs 2)" in BY_ID["pause"].confirm(_ctx(state=two_up), {})
    assert BY_ID["transfer"].confirm(ctx, {}).startswith("Move leadership from n1 to n2?")
    assert BY_ID["transfer"].confirm(_ctx(member=STATE.members[0]), {}) == ""      # already the leader
    assert "cannot commit" in BY_ID["partition_groups"].confirm(ctx, {"group": "n3"})
    assert BY_ID["drop_delay"].confirm(ctx, {"drop": "0", "delay": "0"}) == ""     # clearing: nothing to ask
    assert "needs 3 of them" in BY_ID["promote"].confirm(ctx, {})
    for cid in ("delete", "compact", "defrag", "transfer", "pause", "kill", "partition", "partition_groups",
                "drop_delay", "add_learner", "remove", "snapshot", "disarm"):
        assert BY_ID[cid].confirm is not None, cid


def test_readonly_offers_only_what_changes_nothing():
    async def body():
        app = RaftuiApp(Recording, live=False, readonly=True)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            footer = {b.binding.description for b in app.screen.active_bindings.values()
                      if b.binding.show and b.enabled}
            assert "Write" not in footer and "Defrag" not in footer and "Read@rev" in footer
            _burst(app, "wdgtcz!P")
            await pilot.pause()
            assert app.screen is screen(app) and app.source.ran == []          # nothing asked, nothing run
            # What help and the palette offer (they ask the same question; help: test_pilot).
            offered = {c.id for c in COMMANDS if not screen(app).unavailable(c)}
            assert offered == {"read", "history", "view", "filter", "watch", "snapshot", "alarms", "links", "revisions"}
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), what="the read form")
    run(body())


def test_tab_moves_between_the_write_form_fields():
    async def body():
        app = RaftuiApp(Recording, live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await pilot.press("w")
            await until(pilot, lambda: getattr(app.focused, "id", "") == "field-key", what="the key field")
            await pilot.press("tab")
            assert app.focused.id == "field-value"
            await pilot.press("tab", "shift+tab", "shift+tab")
            assert app.focused.id == "field-key" and isinstance(app.screen, FormScreen)
    run(body())


def test_alarm_list_names_members_and_says_what_the_alarm_means():
    from engine.proto import rpc_pb2
    from raftui.source import actions

    class Maintenance:
        async def Alarm(self, request, timeout):
            return rpc_pb2.AlarmResponse(alarms=[
                rpc_pb2.AlarmMember(memberID=678349111195851671, alarm=rpc_pb2.NOSPACE),
                rpc_pb2.AlarmMember(memberID=0x99, alarm=rpc_pb2.NOSPACE)])

    class Stubs:
        maintenance = Maintenance()

    result = run(actions.alarm_list(Stubs(), {678349111195851671: "n2"}))
    assert result.text.startswith("alarms: NOSPACE on n2: cluster is read-only")
    assert "NOSPACE on 99:" in result.text and "678349111195851671" not in result.text
