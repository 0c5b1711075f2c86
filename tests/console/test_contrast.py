"""Readable in every theme: every role, health and text colour against every
background it is drawn on, the selected row included, at a contrast of at
least 4.5:1 (WCAG AA), computed from the theme definitions (themes/)."""
from __future__ import annotations

import pytest
from textual.color import Color

import themes
from raftui.app import RaftuiApp
from raftui.widgets.cluster_panel import ClusterTable

from .conftest import run
from .fake_state import FakeSource

MINIMUM = 4.5
FOREGROUNDS = ("foreground", "leader", "follower", "learner", "candidate", "up", "down", "paused", "unknown",
               "muted", "committed", "uncommitted", "conf-change", "flash", "error", "accent", "text-muted",
               "block-cursor-foreground")
BACKGROUNDS = ("surface", "background", "panel", "block-cursor-background", "block-cursor-blurred-background",
               "zebra")


def _luminance(c: Color) -> float:
    def channel(v: int) -> float:
        v = v / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b)


def contrast(a: Color, b: Color) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _resolve(text: str, under: Color) -> Color:
    """A theme value as drawn over `under`: "auto 60%" is Textual's contrasting text at 60%."""
    if text.startswith("auto"):
        alpha = float(text.split()[1].rstrip("%")) / 100 if " " in text else 1.0
        return under + under.get_contrast_text(alpha)
    c = Color.parse(text)
    return under + c if c.a < 1 else c


def _variables(theme) -> dict[str, str]:
    """The CSS variables as the app builds them (textual.app.App.get_css_variables)."""
    v = {**themes.VARIABLE_DEFAULTS, **theme.to_color_system().generate(), **theme.variables}
    # DataTable's zebra rows: $surface-lighten-1 at 50% over the surface.
    v["zebra"] = (Color.parse(v["surface"]) + Color.parse(v["surface-lighten-1"]).with_alpha(0.5)).hex
    return v


@pytest.mark.parametrize("name", sorted(themes.THEMES))
def test_every_colour_reads_on_every_background(name):
    v = _variables(themes.THEMES[name])
    surface = Color.parse(v["surface"])
    low = []
    for bg_name in BACKGROUNDS:
        bg = _resolve(v[bg_name], surface)
        for fg_name in FOREGROUNDS:
            ratio = contrast(_resolve(v[fg_name], bg), bg)
            if ratio < MINIMUM:
                low.append(f"{fg_name} on {bg_name}: {ratio:.2f}")
    assert not low, low


def test_the_selected_row_is_drawn_with_the_theme_selection():
    """The stylesheets do use those variables: the cluster table's cursor, as rendered, in each theme."""
    async def body():
        app = RaftuiApp(FakeSource, live=False)
        async with app.run_test(size=(80, 24)) as pilot:
            for name, theme in sorted(themes.THEMES.items()):
                app.theme = theme.name
                await pilot.pause()
                table = app.screen.query_one(ClusterTable)
                cursor = table.get_component_styles("datatable--cursor")
                v = _variables(theme)
                assert cursor.background.hex.lower() == v["block-cursor-background"].lower(), name
                assert contrast(cursor.color, cursor.background) >= MINIMUM, name
    run(body())
