"""The header's auth mark (--user): on, off, not known yet, refused; user names are data."""
from __future__ import annotations

import types

from raftui.app import RaftuiApp

from .conftest import run, until
from .fake_state import FakeSource
from .ui import screen


class AuthSource(FakeSource):
    def __init__(self):
        super().__init__()
        self.auth = types.SimpleNamespace(user="[red]root", enabled=None, error=None)


def test_the_header_says_whether_auth_is_on_and_who_the_console_is():
    async def body():
        app = RaftuiApp(AuthSource, live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            main = screen(app)
            bar = main.query_one("#title-bar")

            def shown():
                main._title(main.state)
                return bar.render().plain

            assert "auth …" in shown()
            app.source.auth.enabled = True
            assert "auth on ([red]root)" in shown() and "selected n1" in shown()       # literal, not markup
            app.source.auth.enabled = False
            assert "auth off" in shown()
            app.source.auth.error = "etcdserver: authentication failed, invalid user ID or password"
            assert "auth: etcdserver: authentication failed" in shown() and bar.has_class("-auth-failed")
            app.source.auth = None
            await until(pilot, lambda: "auth" not in shown() and not bar.has_class("-auth-failed"))
    run(body())


def test_the_header_carries_the_live_check_verdict_while_one_exists():
    from raftui.lincheck import ui as lincheck_ui

    class Session:
        def __init__(self):
            self.valid = None

        def status(self):
            return types.SimpleNamespace(stats=types.SimpleNamespace(ops=12431),
                                         verdict=None if self.valid is None else types.SimpleNamespace(valid=self.valid))

    async def body():
        app = RaftuiApp(FakeSource, live=False)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            main = screen(app)
            bar = main.query_one("#title-bar")

            def shown():
                main._title(main.state)
                return bar.render().plain

            assert "lincheck" not in shown()
            session = lincheck_ui._SESSIONS[app] = Session()
            assert "lincheck … 12,431 ops" in shown()
            session.valid = True
            assert "lincheck ✓ 12,431 ops" in shown()
            session.valid = False
            assert "lincheck ✗ not linearizable" in shown()
    run(body())
